#include "server/common/torch_status.h"

#include <c10/util/Exception.h>

#include <exception>
#include <new>
#include <string>

#include "absl/strings/str_cat.h"

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
    // user should do next.
    const bool oom = dynamic_cast<const c10::OutOfMemoryError*>(&e) != nullptr;
    return (oom ? absl::ResourceExhaustedError : absl::InternalError)(
        absl::StrCat(context, ": ", FirstLine(e.what_without_backtrace())));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(context, ": out of host memory"));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(context, ": ", FirstLine(e.what())));
  }
}

}  // namespace mantissa
