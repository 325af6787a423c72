#ifndef MANTISSA_TESTS_TESTING_TEMP_DIR_H_
#define MANTISSA_TESTS_TESTING_TEMP_DIR_H_

#include <string>

namespace mantissa::testing {

// A fresh directory under $TMPDIR (or /tmp), removed with its contents on
// destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace mantissa::testing

#endif  // MANTISSA_TESTS_TESTING_TEMP_DIR_H_
