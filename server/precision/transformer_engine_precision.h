#ifndef MANTISSA_SERVER_PRECISION_TRANSFORMER_ENGINE_PRECISION_H_
#define MANTISSA_SERVER_PRECISION_TRANSFORMER_ENGINE_PRECISION_H_

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "server/precision/delayed_scaling.h"
#include "server/precision/fp8_linear.h"
#include "server/precision/fp8_scaling_group.h"
#include "server/precision/fp8_tensor.h"
#include "server/precision/precision_plugin.h"

namespace mantissa {

// `transformer-engine` (bf16 weights) and `transformer-engine-float16` (fp16
// weights), as Fabric's TransformerEnginePrecision, without the
// TransformerEngine library: the weights are cast to the weights dtype and
// every Linear whose in_features and out_features are multiples of 16 is
// swapped for an Fp8Linear (FP8 GEMMs under the job's delayed-scaling
// recipe); other Linears stay in the weights dtype with a warning naming
// them, LayerNorms stay in the weights dtype. Parameters are created in the
// weights dtype, inputs converted to it, outputs back to float32, and the
// forward runs under autocast to the weights dtype for the ops FP8 does not
// cover (Fabric's fallback autocast).
class TransformerEnginePrecision final : public PrecisionPlugin {
 public:
  struct Options {
    torch::Dtype weights_dtype = torch::kBFloat16;  // or kFloat16
    DelayedScaling recipe;
    // kScaledMm in jobs; kEmulated runs the same arithmetic anywhere.
    Fp8Backend backend = Fp8Backend::kScaledMm;
    // The job's device, where the FP8 scaling state is kept.
    torch::Device device = torch::kCPU;
  };

  // INVALID_ARGUMENT for a bad recipe or weights dtype; FAILED_PRECONDITION
  // for kScaledMm where at::_scaled_mm cannot run (LibTorch < 2.4, not CUDA).
  static absl::StatusOr<std::unique_ptr<TransformerEnginePrecision>> Create(Options options);

  std::string name() const override {
    return options_.weights_dtype == torch::kFloat16 ? "transformer-engine-float16"
                                                     : "transformer-engine";
  }
  torch::Dtype parameter_dtype() const override { return options_.weights_dtype; }

  void ConvertModule(Model& model) override;
  std::unique_ptr<PrecisionGuard> ModuleInitGuard() override;
  std::unique_ptr<PrecisionGuard> ForwardGuard() override;
  torch::Tensor ConvertInput(const torch::Tensor& input) override;
  torch::Tensor ConvertOutput(const torch::Tensor& output) override;

  // Then updates every FP8 scale from the amaxes the forward and backward
  // recorded (TransformerEngine updates at the end of fp8_autocast and of
  // the backward; one update after both does the same work in one pass).
  // Under data parallel (a reducer set), the update runs once per step
  // instead, in OptimizerStep, on amaxes reduced over the ranks: a rank may
  // have no batch to run backward on.
  void Backward(const torch::Tensor& loss) override;
  OptimizerStepResult OptimizerStep(torch::optim::Optimizer& optimizer) override;
  void SetAmaxReducer(std::function<void(const torch::Tensor&)> reducer) override;

  // The grad scaler's state, and every FP8 layer's amax histories and scales
  // by layer name. Loading throws c10::Error when the saved layers are not
  // this model's.
  void SaveState(torch::serialize::OutputArchive& archive) const override;
  void LoadState(torch::serialize::InputArchive& archive) override;

  // The swapped layers by dotted module name (e.g. "blocks.0.qkv"), in module
  // order, after ConvertModule.
  const std::vector<std::pair<std::string, Fp8Linear>>& fp8_layers() const { return layers_; }

 private:
  explicit TransformerEnginePrecision(Options options)
      : options_(std::move(options)),
        scaling_(std::make_shared<Fp8ScalingGroup>(options_.recipe, options_.device)) {}

  // Swaps the Linears below `parent` (named `prefix`), depth first.
  void SwapLinears(torch::nn::Module& parent, const std::string& prefix);

  const Options options_;
  // The scaling state of every FP8 layer's tensors.
  const std::shared_ptr<Fp8ScalingGroup> scaling_;
  std::vector<std::pair<std::string, Fp8Linear>> layers_;
  bool reduce_amaxes_ = false;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_PRECISION_TRANSFORMER_ENGINE_PRECISION_H_
