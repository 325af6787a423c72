#ifndef MANTISSA_SERVER_TRAINING_JOB_SPEC_RESOLVER_H_
#define MANTISSA_SERVER_TRAINING_JOB_SPEC_RESOLVER_H_

#include "absl/status/statusor.h"
#include "mantissa/v1/training.pb.h"
#include "server/jobs/job_runner.h"
#include "server/precision/device_capabilities.h"
#include "server/precision/grad_scaler.h"
#include "server/training/lr_schedule.h"

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
};

// The scaler options of a resolved spec.
GradScaler::Options GradScalerOptions(const v1::GradScalerSettings& settings);

// The LR schedule of a resolved spec, for a run of `total_steps`.
LrSchedule::Options LrScheduleOptions(const v1::JobSpec& spec, int64_t total_steps);

// Checks every field of a submitted spec and fills in defaults. Errors name
// the field and, for enumerations, the valid values: INVALID_ARGUMENT for bad
// values, NOT_FOUND for unknown models and datasets, FAILED_PRECONDITION for
// what this build or device cannot run. Has no side effects.
absl::StatusOr<JobRunner::PreparedSpec> ResolveJobSpec(const v1::JobSpec& spec,
                                                       const ResolveContext& context);

}  // namespace mantissa

#endif  // MANTISSA_SERVER_TRAINING_JOB_SPEC_RESOLVER_H_
