#ifndef MANTISSA_TESTS_FUZZ_FUZZ_SUPPORT_H_
#define MANTISSA_TESTS_FUZZ_FUZZ_SUPPORT_H_

// What the libFuzzer targets share: an invariant check that aborts (so the
// fuzzer records the input), and a scratch file for parsers that read paths.

#include <stdlib.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>

// A property every accepted input must have; a violation is a crash.
#define FUZZ_CHECK(condition)                                                                 \
  do {                                                                                        \
    if (!(condition)) {                                                                       \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, __LINE__, #condition); \
      std::abort();                                                                           \
    }                                                                                         \
  } while (0)

namespace mantissa::fuzz {

// One file in a fresh directory under $TMPDIR, rewritten with each input.
// Lives for the whole run (libFuzzer leaves through exit()), so it is made
// once, and removed at exit.
class ScratchFile {
 public:
  explicit ScratchFile(const std::string& name) {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern =
        std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/mantissa-fuzz-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) std::abort();
    dir_ = pattern;
    path_ = dir_ + "/" + name;
  }
  ~ScratchFile() {
    ::unlink(path_.c_str());
    ::rmdir(dir_.c_str());
  }

  const std::string& dir() const { return dir_; }
  const std::string& path() const { return path_; }

  void Write(const uint8_t* data, size_t size) const {
    std::ofstream out(path_, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    if (!out) std::abort();
  }

 private:
  std::string dir_;
  std::string path_;
};

}  // namespace mantissa::fuzz

#endif  // MANTISSA_TESTS_FUZZ_FUZZ_SUPPORT_H_
