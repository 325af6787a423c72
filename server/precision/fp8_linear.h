#ifndef MANTISSA_SERVER_PRECISION_FP8_LINEAR_H_
#define MANTISSA_SERVER_PRECISION_FP8_LINEAR_H_

#include <torch/torch.h>

#include <memory>
#include <ostream>

#include "server/precision/fp8_scaling_group.h"
#include "server/precision/fp8_tensor.h"

namespace mantissa {

// The delayed-scaling state of one FP8 Linear: its input, weight and output
// gradient, each a row of the model's Fp8ScalingGroup (TransformerEngine's
// fp8_meta of a te.Linear). Reference-counted so that a backward pending in
// the autograd graph keeps it alive.
struct Fp8LinearState : torch::CustomClassHolder {
  // Adds the three rows to `group`.
  Fp8LinearState(const std::shared_ptr<Fp8ScalingGroup>& group, Fp8Backend backend);

  Fp8Backend backend;
  Fp8TensorScaling input;
  Fp8TensorScaling weight;
  Fp8TensorScaling grad_output;
};

// A torch::nn::Linear whose three GEMMs run in FP8 (TransformerEngine's
// te.Linear under fp8_autocast): the forward quantizes the input and the
// weight to E4M3 with their delayed scales and multiplies them in float32
// accumulation, adding the bias, out in the weight's dtype; the backward
// quantizes the output gradient (E5M2 under HYBRID, E4M3 under E4M3) and
// computes the input and weight gradients the same way; the bias gradient is
// a plain sum. In training mode every forward and backward records the
// amaxes of its operands in the group, whose owner calls Update() after the
// backward (see Fp8ScalingGroup); in eval mode nothing is recorded, so that
// evaluating does not change training.
//
// It takes over the Linear's own parameter tensors under the same names
// ("weight", "bias"), so optimizers, checkpoints and exported weights do not
// notice the swap.
class Fp8LinearImpl : public torch::nn::Module {
 public:
  // Adds the layer's rows to `group`, whose recipe it follows. The forward
  // moves the group to the weight's device if the module moved.
  Fp8LinearImpl(const torch::nn::LinearImpl& linear, std::shared_ptr<Fp8ScalingGroup> group,
                Fp8Backend backend);

  // input [..., in_features] -> [..., out_features] in the weight's dtype.
  torch::Tensor forward(const torch::Tensor& input);

  int64_t in_features() const { return weight.size(1); }
  int64_t out_features() const { return weight.size(0); }
  Fp8LinearState& fp8_state() { return *state_; }
  const Fp8LinearState& fp8_state() const { return *state_; }

  void pretty_print(std::ostream& stream) const override;

  torch::Tensor weight;  // [out_features, in_features]
  torch::Tensor bias;    // [out_features], or undefined

 private:
  c10::intrusive_ptr<Fp8LinearState> state_;
};
TORCH_MODULE(Fp8Linear);

}  // namespace mantissa

#endif  // MANTISSA_SERVER_PRECISION_FP8_LINEAR_H_
