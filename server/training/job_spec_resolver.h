#ifndef MANTISSA_SERVER_TRAINING_JOB_SPEC_RESOLVER_H_
#define MANTISSA_SERVER_TRAINING_JOB_SPEC_RESOLVER_H_

#include <optional>

#include "absl/status/statusor.h"
#include "mantissa/v1/training.pb.h"
#include "server/common/file_roots.h"
#include "server/runtime/device_capabilities.h"
#include "server/training/resolved_job.h"
#include "server/training/spec_limits.h"

namespace mantissa {

// Defaults, documented in training.proto.
inline constexpr int64_t kDefaultBatchSize = 64;
inline constexpr double kDefaultLr = 1e-3;
inline constexpr double kDefaultAdamWWeightDecay = 0.01;  // torch.optim.AdamW's
inline constexpr int64_t kDefaultProgressEveryNSteps = 10;
inline constexpr int64_t kDefaultMemoryBaselineSteps = 2;
inline constexpr double kDefaultAdamEps = 1e-8;  // torch.optim.Adam's

// What resolution depends on besides the spec itself.
struct ResolveContext {
  DeviceCapabilities caps;
  int max_concurrent_jobs = 1;
  // JobSpec.devices accepted: the visible GPUs on CUDA; on the CPU the
  // hardware threads, at least 2.
  int max_devices = 1;
  SpecLimits limits;
  // Where dataset options may name files (--data_root); none = no file
  // datasets.
  FileRoots data_roots;
  // Where TorchScript modules may be trained from (--torchscript_root);
  // none = model torchscript is turned off.
  FileRoots torchscript_roots;
};

// a * b, or nullopt when it overflows int64 (both must be >= 0).
std::optional<int64_t> CheckedMul(int64_t a, int64_t b);

// Checks every field of a submitted spec, fills in defaults and parses what
// the trainer builds from (ResolvedJob), section by section
// (job_spec_sections.h). Errors name the field and, for enumerations, the
// valid values: INVALID_ARGUMENT for bad values, NOT_FOUND for unknown
// models and datasets, FAILED_PRECONDITION for what this build or device
// cannot run, PERMISSION_DENIED for a path outside the context's roots
// (returned canonical, symlinks resolved). Limits in `context.limits` bound
// sizes, steps, string lengths and max_duration (INVALID_ARGUMENT naming the
// field and the limit). Has no side effects. Resolving a resolved spec gives
// it back unchanged.
absl::StatusOr<ResolvedJob> ResolveJobSpec(const v1::JobSpec& spec, const ResolveContext& context);

}  // namespace mantissa

#endif  // MANTISSA_SERVER_TRAINING_JOB_SPEC_RESOLVER_H_
