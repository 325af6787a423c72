#ifndef MANTISSA_SERVER_TRAINING_OPTIMIZER_REGISTRY_H_
#define MANTISSA_SERVER_TRAINING_OPTIMIZER_REGISTRY_H_

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "mantissa/v1/training.pb.h"

namespace mantissa {

// A job's optimizer settings, as the resolved spec gives them.
struct OptimizerConfig {
  std::string name = "adamw";
  double lr = 1e-3;
  double weight_decay = 0;
  double momentum = 0;    // sgd
  bool nesterov = false;  // sgd
  double eps = 1e-8;      // adam, adamw

  // From a resolved spec (optimizer, lr, weight_decay, momentum, nesterov,
  // eps set where they apply).
  static OptimizerConfig FromSpec(const v1::JobSpec& spec);
};

// One optimizer. The table is in optimizer_registry.cc.
struct OptimizerEntry {
  const char* name;
  const char* help;
  bool takes_momentum;          // momentum and nesterov apply (sgd)
  bool takes_eps;               // eps applies (adam, adamw)
  double default_weight_decay;  // torch.optim's default
  int state_per_parameter;      // state tensors per parameter (memory estimate)
  absl::StatusOr<std::unique_ptr<torch::optim::Optimizer>> (*create)(
      const OptimizerConfig& config, std::vector<torch::Tensor> parameters);
};

// JobSpec.optimizer -> a torch optimizer. Adam and AdamW on CUDA parameters
// are FusedAdam/FusedAdamW where LibTorch has the fused kernels
// (FusedOptimizer::Supported).
class OptimizerRegistry {
 public:
  static const std::vector<OptimizerEntry>& Entries();
  static std::vector<std::string> Names();  // sgd, adam, adamw
  // Null for an unknown name.
  static const OptimizerEntry* Find(absl::string_view name);

  // INVALID_ARGUMENT for an unknown name, listing the valid ones.
  static absl::StatusOr<std::unique_ptr<torch::optim::Optimizer>> Create(
      const OptimizerConfig& config, std::vector<torch::Tensor> parameters);
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_TRAINING_OPTIMIZER_REGISTRY_H_
