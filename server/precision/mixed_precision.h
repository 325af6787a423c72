#ifndef MANTISSA_SERVER_PRECISION_MIXED_PRECISION_H_
#define MANTISSA_SERVER_PRECISION_MIXED_PRECISION_H_

#include "server/precision/precision_plugin.h"

namespace mantissa {

// `16-mixed` and `bf16-mixed`: weights stay float32; the forward runs under
// autocast on the job's device in float16/bfloat16; inputs are converted to
// that dtype and outputs back to float32, as Fabric's MixedPrecision. The
// grad scaler (on by default for 16-mixed) is the base class's.
class MixedPrecision final : public PrecisionPlugin {
 public:
  MixedPrecision(torch::Dtype dtype, c10::DeviceType device_type)
      : dtype_(dtype), device_type_(device_type) {}

  std::string name() const override {
    return dtype_ == torch::kBFloat16 ? "bf16-mixed" : "16-mixed";
  }
  torch::Dtype compute_dtype() const override { return dtype_; }

  std::unique_ptr<PrecisionGuard> ForwardGuard() override;
  torch::Tensor ConvertInput(const torch::Tensor& input) override;
  torch::Tensor ConvertOutput(const torch::Tensor& output) override;

 private:
  const torch::Dtype dtype_;
  const c10::DeviceType device_type_;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_PRECISION_MIXED_PRECISION_H_
