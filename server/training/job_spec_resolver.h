#ifndef MANTISSA_SERVER_TRAINING_JOB_SPEC_RESOLVER_H_
#define MANTISSA_SERVER_TRAINING_JOB_SPEC_RESOLVER_H_

#include "absl/status/statusor.h"
#include "mantissa/v1/training.pb.h"
#include "server/jobs/job_runner.h"

namespace mantissa {

// Defaults, documented in training.proto.
inline constexpr int64_t kDefaultBatchSize = 64;
inline constexpr double kDefaultLr = 1e-3;
inline constexpr double kDefaultAdamWWeightDecay = 0.01;  // torch.optim.AdamW's
inline constexpr int64_t kDefaultProgressEveryNSteps = 10;

// Checks every field of a submitted spec and fills in defaults. Errors name
// the field and, for enumerations, the valid values: INVALID_ARGUMENT for bad
// values, NOT_FOUND for unknown models and datasets, FAILED_PRECONDITION for
// what this build or device cannot run. Has no side effects.
absl::StatusOr<JobRunner::PreparedSpec> ResolveJobSpec(const v1::JobSpec& spec);

}  // namespace mantissa

#endif  // MANTISSA_SERVER_TRAINING_JOB_SPEC_RESOLVER_H_
