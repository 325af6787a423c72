#ifndef MANTISSA_SERVER_PRECISION_HALF_PRECISION_H_
#define MANTISSA_SERVER_PRECISION_HALF_PRECISION_H_

#include "server/precision/precision_plugin.h"

namespace mantissa {

// `16-true` and `bf16-true`: the weights themselves in float16/bfloat16 (no
// float32 master copy), inputs converted, outputs back to float32, as
// Fabric's HalfPrecision.
class HalfPrecision final : public PrecisionPlugin {
 public:
  explicit HalfPrecision(torch::Dtype dtype) : dtype_(dtype) {}

  std::string name() const override { return dtype_ == torch::kBFloat16 ? "bf16-true" : "16-true"; }
  torch::Dtype parameter_dtype() const override { return dtype_; }

  void ConvertModule(Model& model) override;
  std::unique_ptr<PrecisionGuard> ModuleInitGuard() override;
  torch::Tensor ConvertInput(const torch::Tensor& input) override;
  torch::Tensor ConvertOutput(const torch::Tensor& output) override;

 private:
  const torch::Dtype dtype_;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_PRECISION_HALF_PRECISION_H_
