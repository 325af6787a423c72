#ifndef MANTISSA_SERVER_TRAINING_SPEC_LIMITS_H_
#define MANTISSA_SERVER_TRAINING_SPEC_LIMITS_H_

#include <cstdint>

#include "absl/time/time.h"

namespace mantissa {

// Admission limits on one job spec, set by the daemon's flags. Every product
// of sizes in a spec is overflow-checked besides; these bound the work and
// the bytes one submission may ask for. Free of torch.
struct SpecLimits {
  // Optimizer steps of one job; epochs count as the steps they come to.
  int64_t max_job_steps = 100'000'000;
  // Bytes of JobSpec.name, and of each id-like field (resume_from).
  int64_t max_name_bytes = 256;
  // Bytes of each model/dataset option key and value, and options per map.
  int64_t max_option_bytes = 4096;
  int64_t max_options = 64;
  // Parameters of one model, checked before the model is built.
  int64_t max_model_parameters = 2'000'000'000;
  // Refuse a job whose estimated training memory exceeds the device's free
  // memory (host: MemAvailable; CUDA: the device's free bytes).
  bool check_free_memory = true;
  // The default and the cap of JobSpec.max_duration.
  absl::Duration max_job_duration = absl::Hours(24);
  // The cap of JobSpec.keep_checkpoints (which defaults to 1).
  int64_t max_keep_checkpoints = 5;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_TRAINING_SPEC_LIMITS_H_
