#include "server/training/optimizer_factory.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/training/fused_adam.h"

namespace mantissa {

std::vector<std::string> OptimizerFactory::Names() { return {"sgd", "adam", "adamw"}; }

absl::StatusOr<std::unique_ptr<torch::optim::Optimizer>> OptimizerFactory::Create(
    const v1::JobSpec& spec, std::vector<torch::Tensor> parameters) {
  const std::string& name = spec.optimizer();
  if (name == "sgd") {
    return std::make_unique<torch::optim::SGD>(std::move(parameters),
                                               torch::optim::SGDOptions(spec.lr())
                                                   .momentum(spec.momentum())
                                                   .nesterov(spec.nesterov())
                                                   .weight_decay(spec.weight_decay()));
  }
  // CUDA parameters get the fused kernels where LibTorch has them; the
  // state (and so the checkpoint) is the same as the portable optimizer's.
  const bool fused = FusedOptimizer::Supported(parameters);
  if (name == "adam") {
    auto options =
        torch::optim::AdamOptions(spec.lr()).weight_decay(spec.weight_decay()).eps(spec.eps());
    if (fused) return std::make_unique<FusedAdam>(std::move(parameters), options);
    return std::make_unique<torch::optim::Adam>(std::move(parameters), options);
  }
  if (name == "adamw") {
    auto options =
        torch::optim::AdamWOptions(spec.lr()).weight_decay(spec.weight_decay()).eps(spec.eps());
    if (fused) return std::make_unique<FusedAdamW>(std::move(parameters), options);
    return std::make_unique<torch::optim::AdamW>(std::move(parameters), options);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("optimizer: unknown optimizer '", name,
                   "'; valid optimizers: ", absl::StrJoin(Names(), ", ")));
}

}  // namespace mantissa
