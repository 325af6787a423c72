#ifndef MANTISSA_SERVER_COMMON_TORCH_STATUS_H_
#define MANTISSA_SERVER_COMMON_TORCH_STATUS_H_

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace mantissa {

// The one boundary where LibTorch exceptions become Status. Runs `fn`; a
// c10::Error (or any std::exception) comes back as an error whose message
// starts with `context`, e.g. "training job 3f2a: ...". The header stays free
// of torch so that callers outside the torch libraries can use it too.
absl::Status GuardTorch(absl::string_view context, absl::FunctionRef<absl::Status()> fn);

}  // namespace mantissa

#endif  // MANTISSA_SERVER_COMMON_TORCH_STATUS_H_
