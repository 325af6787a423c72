#include "server/metrics/device_memory.h"

#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "server/common/status_macros.h"

namespace mantissa {
namespace {

absl::StatusOr<std::string> ReadFile(const char* path) {
  std::ifstream in(path);
  if (!in) return absl::UnavailableError(absl::StrCat(path, ": cannot open"));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

absl::StatusOr<int64_t> ParseStatmResidentBytes(absl::string_view statm, int64_t page_size) {
  // "size resident shared text lib data dt", in pages.
  std::vector<absl::string_view> fields =
      absl::StrSplit(absl::StripAsciiWhitespace(statm), ' ', absl::SkipEmpty());
  int64_t pages = 0;
  if (fields.size() < 2 || !absl::SimpleAtoi(fields[1], &pages) || pages < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("/proc/self/statm: expected page counts, got \"", statm, "\""));
  }
  return pages * page_size;
}

absl::StatusOr<int64_t> ParseMeminfoTotalBytes(absl::string_view meminfo) {
  for (absl::string_view line : absl::StrSplit(meminfo, '\n')) {
    if (!absl::ConsumePrefix(&line, "MemTotal:")) continue;
    line = absl::StripAsciiWhitespace(line);
    int64_t kib = 0;
    if (!absl::ConsumeSuffix(&line, "kB") ||
        !absl::SimpleAtoi(absl::StripAsciiWhitespace(line), &kib) || kib <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("/proc/meminfo: MemTotal is not a size in kB: \"", line, "\""));
    }
    return kib * 1024;
  }
  return absl::InvalidArgumentError("/proc/meminfo: no MemTotal line");
}

absl::StatusOr<DeviceMemory> ReadProcessMemory() {
  ASSIGN_OR_RETURN(std::string statm, ReadFile("/proc/self/statm"));
  ASSIGN_OR_RETURN(std::string meminfo, ReadFile("/proc/meminfo"));
  DeviceMemory memory;
  ASSIGN_OR_RETURN(memory.used_bytes, ParseStatmResidentBytes(statm, sysconf(_SC_PAGESIZE)));
  ASSIGN_OR_RETURN(memory.total_bytes, ParseMeminfoTotalBytes(meminfo));
  return memory;
}

}  // namespace mantissa
