#ifndef MANTISSA_SERVER_TRAINING_RESOLVED_JOB_H_
#define MANTISSA_SERVER_TRAINING_RESOLVED_JOB_H_

#include <memory>
#include <string>
#include <vector>

#include "mantissa/v1/training.pb.h"
#include "server/data/dataset_config.h"
#include "server/jobs/job_runner.h"
#include "server/models/model_config.h"
#include "server/precision/delayed_scaling.h"
#include "server/precision/grad_scaler.h"
#include "server/precision/half_update.h"
#include "server/precision/precision_registry.h"
#include "server/training/lr_schedule.h"
#include "server/training/optimizer_registry.h"

namespace mantissa {

// A job spec checked and parsed once (ResolveJobSpec): the spec with its
// defaults filled in, for storage and echo, and everything the trainer
// builds from, typed, so that nothing is parsed again. Edit the proto and
// resolve again rather than editing `spec` here: the typed fields would not
// follow.
struct ResolvedJob {
  v1::JobSpec spec;
  // The canonical mode that runs, after device fallbacks, and its traits.
  std::string effective_precision;
  PrecisionTraits precision;
  // For the job: deprecated aliases, fallbacks, known traps.
  std::vector<std::string> warnings;

  std::shared_ptr<const ModelConfig> model;
  std::shared_ptr<const DatasetConfig> dataset;
  // The FP8 recipe, with TransformerEngine's defaults where the spec left
  // fields unset; used by the modes with PrecisionTraits::fp8 only.
  DelayedScaling fp8;
  GradScaler::Options grad_scaler;
  // JobSpec.bf16_update, parsed (kNearest for modes without half weights),
  // seeded with the job's seed.
  HalfUpdate::Options half_update;
  OptimizerConfig optimizer;
  // total_steps is the trainer's: known once the dataset's size is.
  LrSchedule::Options lr_schedule;

  // The torch-free part the job manager stores.
  JobRunner::PreparedSpec Prepared() const { return {spec, effective_precision, warnings}; }
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_TRAINING_RESOLVED_JOB_H_
