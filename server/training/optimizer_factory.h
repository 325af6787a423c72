#ifndef MANTISSA_SERVER_TRAINING_OPTIMIZER_FACTORY_H_
#define MANTISSA_SERVER_TRAINING_OPTIMIZER_FACTORY_H_

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "mantissa/v1/training.pb.h"

namespace mantissa {

class OptimizerFactory {
 public:
  static std::vector<std::string> Names();  // sgd, adam, adamw

  // From a resolved spec (optimizer, lr, weight_decay, momentum set). Adam
  // and AdamW on CUDA parameters are FusedAdam/FusedAdamW where LibTorch has
  // the fused kernels (FusedOptimizer::Supported).
  static absl::StatusOr<std::unique_ptr<torch::optim::Optimizer>> Create(
      const v1::JobSpec& spec, std::vector<torch::Tensor> parameters);
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_TRAINING_OPTIMIZER_FACTORY_H_
