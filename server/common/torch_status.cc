#include "server/common/torch_status.h"

#include <c10/util/Exception.h>

#include <exception>
#include <new>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace mantissa {
namespace {

// c10 messages carry a C++ backtrace in debug builds; users need the first
// line, which states what went wrong.
std::string FirstLine(absl::string_view message) {
  const size_t end = message.find('\n');
  return std::string(end == absl::string_view::npos ? message : message.substr(0, end));
}

}  // namespace

absl::Status GuardTorch(absl::string_view context, absl::FunctionRef<absl::Status()> fn) {
  try {
    return fn();
  } catch (const c10::Error& e) {
    // OutOfMemoryError derives from c10::Error; say so, it changes what the
    // user should do next. LibTorch 1.13's CPU allocator throws a plain
    // c10::Error ("DefaultCPUAllocator: can't allocate memory: ...").
    const std::string message = e.what_without_backtrace();
    const bool oom = dynamic_cast<const c10::OutOfMemoryError*>(&e) != nullptr ||
                     absl::StrContains(message, "can't allocate memory") ||
                     absl::StrContains(message, "not enough memory") ||
                     absl::StrContains(message, "CUDA error: out of memory") ||
                     absl::StrContains(message, "CUBLAS_STATUS_ALLOC_FAILED");
    const std::string text = absl::StrCat(context, ": ", FirstLine(message));
    return oom ? absl::ResourceExhaustedError(text) : absl::InternalError(text);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(context, ": out of host memory"));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(context, ": ", FirstLine(e.what())));
  }
}

std::string RequestedAllocation(absl::string_view message) {
  const std::string lower = absl::AsciiStrToLower(message);
  const std::string kMarker = "tried to allocate ";
  const size_t at = lower.find(kMarker);
  if (at == std::string::npos) return "";
  absl::string_view rest = message.substr(at + kMarker.size());
  size_t digits = 0;
  while (digits < rest.size() && (absl::ascii_isdigit(rest[digits]) || rest[digits] == '.')) {
    ++digits;
  }
  if (digits == 0) return "";
  const absl::string_view number = rest.substr(0, digits);
  absl::string_view unit = absl::StripLeadingAsciiWhitespace(rest.substr(digits));
  size_t unit_len = 0;
  while (unit_len < unit.size() && absl::ascii_isalpha(unit[unit_len])) ++unit_len;
  unit = unit.substr(0, unit_len);
  double bytes = 0;
  if (unit != "bytes" || !absl::SimpleAtod(number, &bytes)) {
    return unit.empty() ? std::string(number) : absl::StrCat(number, " ", unit);
  }
  const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int u = 0;
  while (bytes >= 1024 && u < 5) {
    bytes /= 1024;
    ++u;
  }
  return u == 0 ? absl::StrCat(number, " bytes") : absl::StrFormat("%.2f %s", bytes, units[u]);
}

}  // namespace mantissa
