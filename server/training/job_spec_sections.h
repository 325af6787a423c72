#ifndef MANTISSA_SERVER_TRAINING_JOB_SPEC_SECTIONS_H_
#define MANTISSA_SERVER_TRAINING_JOB_SPEC_SECTIONS_H_

#include "absl/status/status.h"
#include "server/training/job_spec_resolver.h"
#include "server/training/resolved_job.h"

namespace mantissa {

// The sections of a job spec, each checked and defaulted in place in
// `job.spec`, each filling in its typed part of `job`. ResolveJobSpec runs
// them in this order: the cheapest checks first, so that a bad number is
// reported before files are probed.

// Bounded string fields; steps or epochs; batch_size.
absl::Status ResolveWork(const ResolveContext& context, ResolvedJob& job);

// The optimizer and its hyperparameters, gradient clipping, the LR schedule.
absl::Status ResolveOptimization(const ResolveContext& context, ResolvedJob& job);

// Memory baseline, progress, accumulation, checkpoints, CUDA graph,
// evaluation, the work against the limits, max_duration.
absl::Status ResolveRunSettings(const ResolveContext& context, ResolvedJob& job);

// Memory figures of jobs that share the device are approximate.
void WarnOfSharedDevice(const ResolveContext& context, ResolvedJob& job);

// The model and the dataset: paths confined under the context's roots, then
// their options parsed into job.model and job.dataset.
absl::Status ResolveModelAndData(const ResolveContext& context, ResolvedJob& job);

// The precision on this device, its FP8 recipe and grad scaler, and the
// warnings of what the mode does to the job's settings.
absl::Status ResolvePrecision(const ResolveContext& context, ResolvedJob& job);

}  // namespace mantissa

#endif  // MANTISSA_SERVER_TRAINING_JOB_SPEC_SECTIONS_H_
