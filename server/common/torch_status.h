#ifndef MANTISSA_SERVER_COMMON_TORCH_STATUS_H_
#define MANTISSA_SERVER_COMMON_TORCH_STATUS_H_

#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace mantissa {

// The one boundary where LibTorch exceptions become Status. Runs `fn`; a
// c10::Error (or any std::exception) comes back as an error whose message
// starts with `context`, e.g. "training job 3f2a: ...". The header stays free
// of torch so that callers outside the torch libraries can use it too.
// Out-of-memory errors (c10::OutOfMemoryError, CPU allocator failures,
// std::bad_alloc) come back as RESOURCE_EXHAUSTED, anything else as INTERNAL.
absl::Status GuardTorch(absl::string_view context, absl::FunctionRef<absl::Status()> fn);

// The size an allocator said it failed to allocate, for people: "20.00 GiB"
// from CUDA's "Tried to allocate 20.00 GiB", "3.64 TiB" from the CPU
// allocator's "you tried to allocate 4000000000000 bytes"; "" when the
// message names none.
std::string RequestedAllocation(absl::string_view message);

}  // namespace mantissa

#endif  // MANTISSA_SERVER_COMMON_TORCH_STATUS_H_
