#ifndef MANTISSA_SERVER_TRAINING_FUSED_ADAM_H_
#define MANTISSA_SERVER_TRAINING_FUSED_ADAM_H_

#include <torch/torch.h>

#include <unordered_map>
#include <vector>

#include "server/precision/grad_scaler.h"

namespace mantissa {

// Adam/AdamW stepped by LibTorch's fused CUDA kernels (compat::FusedAdamStep):
// one launch per parameter group and dtype instead of several per parameter,
// and with the grad scaler the kernel unscales the gradients and skips the
// step on found-inf by itself, so no step waits on the host. OptimizerRegistry
// picks it for CUDA jobs where Supported().
//
// The lr the kernel reads is a float32 device tensor per parameter group,
// refreshed from the group's options by step() and by SyncLr(), which a CUDA
// graph replay (no host code) calls first.
class FusedOptimizer : public DeviceScaledOptimizer {
 public:
  // LibTorch has the kernels and every parameter is a floating-point tensor
  // on a CUDA device.
  static bool Supported(const std::vector<torch::Tensor>& parameters);

  // Copies each group's lr into the device tensor the kernel reads (a
  // kernel launch, no host sync), where it changed.
  virtual void SyncLr() = 0;
};

// Checkpoints stay those of torch::optim::Adam/AdamW (Base): the moments are
// the base class's per-parameter state tensors, updated in place by the
// kernel. Only the step counts live elsewhere while training: the kernel
// reads them as float32 device tensors, and a skipped step must not advance
// them without a host read. save() copies them into the state's int64 step
// (one read per parameter, at checkpoint time); after load() they are
// rebuilt from it. Used from the job's thread.
template <typename Base, typename BaseOptions, typename ParamState>
class FusedAdamImpl final : public Base, public FusedOptimizer {
 public:
  FusedAdamImpl(std::vector<torch::Tensor> parameters, BaseOptions options)
      : Base(std::move(parameters), std::move(options)) {}

  torch::Tensor step(torch::optim::Optimizer::LossClosure closure = nullptr) override;
  void StepScaled(const torch::Tensor& grad_scale, const torch::Tensor& found_inf) override;
  void SyncLr() override;
  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;

 private:
  void FusedStep(const torch::Tensor& grad_scale, const torch::Tensor& found_inf);
  // The base class's state for `param`, created as Base::step would.
  ParamState& StateFor(const torch::Tensor& param, bool amsgrad);

  // float32 [] on the parameter's device, by the base state it belongs to.
  std::unordered_map<ParamState*, torch::Tensor> steps_;
  std::vector<torch::Tensor> lrs_;  // float32 [], one per group
  std::vector<double> lr_values_;   // what lrs_ hold
};

using FusedAdam =
    FusedAdamImpl<torch::optim::Adam, torch::optim::AdamOptions, torch::optim::AdamParamState>;
using FusedAdamW =
    FusedAdamImpl<torch::optim::AdamW, torch::optim::AdamWOptions, torch::optim::AdamWParamState>;

}  // namespace mantissa

#endif  // MANTISSA_SERVER_TRAINING_FUSED_ADAM_H_
