#include "server/training/optimizer_registry.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/named_entries.h"
#include "server/training/fused_adam.h"

namespace mantissa {
namespace {

using OptimizerOr = absl::StatusOr<std::unique_ptr<torch::optim::Optimizer>>;

// CUDA parameters get the fused kernels where LibTorch has them; the state
// (and so the checkpoint) is the same as the portable optimizer's.
template <typename Fused, typename Portable, typename Options>
OptimizerOr CreateAdam(std::vector<torch::Tensor> parameters, const Options& options) {
  if (FusedOptimizer::Supported(parameters)) {
    return std::make_unique<Fused>(std::move(parameters), options);
  }
  return std::make_unique<Portable>(std::move(parameters), options);
}

}  // namespace

OptimizerConfig OptimizerConfig::FromSpec(const v1::JobSpec& spec) {
  OptimizerConfig config;
  config.name = spec.optimizer();
  config.lr = spec.lr();
  config.weight_decay = spec.weight_decay();
  config.momentum = spec.momentum();
  config.nesterov = spec.nesterov();
  config.eps = spec.eps();
  return config;
}

const std::vector<OptimizerEntry>& OptimizerRegistry::Entries() {
  static const auto* const entries = new std::vector<OptimizerEntry>{
      {"sgd", "stochastic gradient descent, with optional (Nesterov) momentum", true, false, 0.0, 1,
       [](const OptimizerConfig& c, std::vector<torch::Tensor> parameters) -> OptimizerOr {
         return std::make_unique<torch::optim::SGD>(std::move(parameters),
                                                    torch::optim::SGDOptions(c.lr)
                                                        .momentum(c.momentum)
                                                        .nesterov(c.nesterov)
                                                        .weight_decay(c.weight_decay));
       }},
      {"adam", "Adam", false, true, 0.0, 2,
       [](const OptimizerConfig& c, std::vector<torch::Tensor> parameters) {
         return CreateAdam<FusedAdam, torch::optim::Adam>(
             std::move(parameters),
             torch::optim::AdamOptions(c.lr).weight_decay(c.weight_decay).eps(c.eps));
       }},
      {"adamw", "Adam with decoupled weight decay", false, true, 0.01, 2,
       [](const OptimizerConfig& c, std::vector<torch::Tensor> parameters) {
         return CreateAdam<FusedAdamW, torch::optim::AdamW>(
             std::move(parameters),
             torch::optim::AdamWOptions(c.lr).weight_decay(c.weight_decay).eps(c.eps));
       }},
  };
  return *entries;
}

std::vector<std::string> OptimizerRegistry::Names() { return EntryNames(Entries()); }

const OptimizerEntry* OptimizerRegistry::Find(absl::string_view name) {
  return FindEntry(Entries(), name);
}

absl::StatusOr<std::unique_ptr<torch::optim::Optimizer>> OptimizerRegistry::Create(
    const OptimizerConfig& config, std::vector<torch::Tensor> parameters) {
  const OptimizerEntry* entry = Find(config.name);
  if (entry == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("optimizer: unknown optimizer '", config.name,
                     "'; valid optimizers: ", absl::StrJoin(Names(), ", ")));
  }
  return entry->create(config, std::move(parameters));
}

}  // namespace mantissa
