#ifndef MANTISSA_SERVER_TRAINING_GRADIENT_MONITOR_H_
#define MANTISSA_SERVER_TRAINING_GRADIENT_MONITOR_H_

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace mantissa {
namespace v1 {
class NonFiniteStep;
}  // namespace v1

// Watches every step's gradients on the device, without a host sync: the
// global L2 norm of the unscaled gradients (latest and largest finite one
// per progress interval) and, for the first step of the interval whose
// gradients or loss were not finite, which parameters' gradients were.
// The per-parameter norms are computed once (one fused reduction on
// LibTorch 2.x); a norm that is not finite flags its parameter, and clipping
// reuses their total. Read() brings the interval back to the host at
// progress time. Safe inside a CUDA graph capture: its state is updated in
// place. Used from the job's thread.
class GradientMonitor {
 public:
  struct Options {
    // Module paths of the parameters, in the order Observe gets them.
    std::vector<std::string> parameter_names;
    torch::Device device = torch::kCPU;
  };

  // The interval since the previous Read.
  struct Interval {
    int64_t steps = 0;  // steps observed
    // Over the steps whose norm was finite; unset if none was.
    std::optional<double> grad_norm;      // the latest
    std::optional<double> max_grad_norm;  // the largest
    // Steps whose gradients or loss were not finite.
    int64_t non_finite_steps = 0;
    // The first of them: its 0-based index among the interval's steps,
    // whether its loss was finite, and the indices (into parameter_names)
    // of the parameters whose gradient norm was not finite, in the order
    // backward reaches them (the reverse of parameter order).
    int64_t first_non_finite_index = -1;
    bool loss_non_finite = false;
    std::vector<int> non_finite_parameters;
  };

  explicit GradientMonitor(Options options);

  // One step, once its gradients are final (summed over data-parallel
  // ranks) and before clipping. `unscale`: the factor that unscales them
  // (the grad scaler's 1/scale, a device tensor), undefined when they are
  // unscaled already. `loss`: the step's loss (summed over its batches),
  // undefined if it had none. Returns the unscaled global L2 norm, a 0-dim
  // float32 tensor on the device (float64 for float64 gradients, and while
  // they are scaled, whose squares would overflow float32), which gradient
  // clipping uses. Parameters without a gradient count as 0.
  torch::Tensor Observe(const std::vector<torch::Tensor>& parameters, const torch::Tensor& unscale,
                        const torch::Tensor& loss);

  // The interval so far, read with one host copy; starts the next one.
  // `reduce_max` (data parallel; null otherwise) replaces a float64 tensor
  // with its elementwise max over the ranks before it is read, so every
  // rank reports the same interval.
  Interval Read(const std::function<void(const torch::Tensor&)>& reduce_max = nullptr);

  // For a failure found on the host (a non-finite loss): the indices of
  // the parameters whose gradient is not finite now, backward order. Syncs.
  std::vector<int> NonFiniteNow(const std::vector<torch::Tensor>& parameters) const;

  const std::vector<std::string>& parameter_names() const { return options_.parameter_names; }

 private:
  Options options_;
  // Device state of the interval (allocated by the constructor): see the
  // .cc for the layout. flags_ is a view of its tail.
  torch::Tensor state_;
  torch::Tensor flags_;
  torch::Tensor one_;  // 1.0, to count a step in the same op as the others
};

// The module path of each of `model_parameters`, from `named` (a model's
// State(), whose parameters are the same tensors); "parameter N" where a
// tensor is not there.
std::vector<std::string> ParameterNames(
    const std::vector<torch::Tensor>& model_parameters,
    const std::vector<std::pair<std::string, torch::Tensor>>& named);

// One line for events and errors, e.g. "step 14 (epoch 1, batch 13 of 938
// in the seeded order, items 832-895): loss finite; non-finite gradients in
// 2 of 6 parameters: 2.weight, 2.bias; skipped by the grad scaler".
std::string DescribeNonFiniteStep(const v1::NonFiniteStep& step, int64_t batches_per_epoch,
                                  int parameter_count);

}  // namespace mantissa

#endif  // MANTISSA_SERVER_TRAINING_GRADIENT_MONITOR_H_
