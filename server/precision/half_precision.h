#ifndef MANTISSA_SERVER_PRECISION_HALF_PRECISION_H_
#define MANTISSA_SERVER_PRECISION_HALF_PRECISION_H_

#include <string>

#include "server/precision/half_update.h"
#include "server/precision/precision_plugin.h"

namespace mantissa {

// `16-true` and `bf16-true`: the weights themselves in float16/bfloat16 (no
// float32 master copy), inputs converted, outputs back to float32, as
// Fabric's HalfPrecision. The optimizer's update is written into the weights
// with the job's rounding (JobSpec.bf16_update, HalfUpdate).
class HalfPrecision final : public PrecisionPlugin {
 public:
  explicit HalfPrecision(torch::Dtype dtype, HalfUpdate::Options update = {})
      : dtype_(dtype), update_(update) {}

  std::string name() const override { return dtype_ == torch::kBFloat16 ? "bf16-true" : "16-true"; }
  torch::Dtype parameter_dtype() const override { return dtype_; }

  void ConvertModule(Model& model) override;
  std::unique_ptr<PrecisionGuard> ModuleInitGuard() override;
  torch::Tensor ConvertInput(const torch::Tensor& input) override;
  torch::Tensor ConvertOutput(const torch::Tensor& output) override;
  // The base class's step (through the grad scaler when it is on), with the
  // update rounded as the job asks.
  OptimizerStepResult OptimizerStep(torch::optim::Optimizer& optimizer) override;

  int64_t StateBytes() const override { return update_.StateBytes(); }
  std::string update_rounding() const override {
    return UpdateRoundingName(update_.options().rounding);
  }
  const HalfUpdate& update() const { return update_; }

  // The base class's state plus the compensation buffers ("half_update").
  void SaveState(torch::serialize::OutputArchive& archive) const override;
  void LoadState(torch::serialize::InputArchive& archive) override;

 private:
  const torch::Dtype dtype_;
  HalfUpdate update_;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_PRECISION_HALF_PRECISION_H_
