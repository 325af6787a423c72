#include "server/training/optimizer_factory.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

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
  if (name == "adam") {
    return std::make_unique<torch::optim::Adam>(
        std::move(parameters),
        torch::optim::AdamOptions(spec.lr()).weight_decay(spec.weight_decay()).eps(spec.eps()));
  }
  if (name == "adamw") {
    return std::make_unique<torch::optim::AdamW>(
        std::move(parameters),
        torch::optim::AdamWOptions(spec.lr()).weight_decay(spec.weight_decay()).eps(spec.eps()));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("optimizer: unknown optimizer '", name,
                   "'; valid optimizers: ", absl::StrJoin(Names(), ", ")));
}

}  // namespace mantissa
