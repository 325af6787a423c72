#ifndef MANTISSA_SERVER_TRAINING_MEMORY_ESTIMATE_H_
#define MANTISSA_SERVER_TRAINING_MEMORY_ESTIMATE_H_

#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/models/model_config.h"
#include "server/training/spec_limits.h"

namespace mantissa {

// Bytes a training run needs at least: parameters, gradients and optimizer
// state (float32, half in the true-half modes, float64 in 64-true), plus the
// activations of one batch in the compute dtype (`precision`: a canonical
// mode). A rough lower bound, so that it refuses only what cannot fit.
// `compensation`: bf16_update=kahan keeps one more weight-sized buffer.
int64_t EstimateTrainingBytes(const ModelSizeEstimate& size, int64_t batch_size,
                              const std::string& precision, const std::string& optimizer,
                              bool compensation = false);

// Memory free for a job on `device`: the host's MemAvailable
// (/proc/meminfo) on the CPU, the driver's free bytes on CUDA.
absl::StatusOr<int64_t> FreeMemoryBytes(const torch::Device& device);

// MemAvailable of a /proc/meminfo text, in bytes. Errors name the file.
absl::StatusOr<int64_t> ParseMeminfoAvailableBytes(absl::string_view meminfo);

// Whether `status` is CheckModelSize's refusal (which the runner passes on
// as it is, not as an out-of-memory failure).
bool IsAdmissionRefusal(const absl::Status& status);

// Before anything is built: RESOURCE_EXHAUSTED when the model has more than
// --max_model_parameters parameters, or when the estimate exceeds
// `free_bytes` (< 0: unknown, not checked), naming both figures.
absl::Status CheckModelSize(const ModelSizeEstimate& size, int64_t batch_size,
                            const std::string& precision, const std::string& optimizer,
                            int64_t free_bytes, const std::string& device, const SpecLimits& limits,
                            bool compensation = false);

}  // namespace mantissa

#endif  // MANTISSA_SERVER_TRAINING_MEMORY_ESTIMATE_H_
