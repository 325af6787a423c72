#ifndef MANTISSA_SERVER_PRECISION_DOUBLE_PRECISION_H_
#define MANTISSA_SERVER_PRECISION_DOUBLE_PRECISION_H_

#include "server/precision/precision_plugin.h"

namespace mantissa {

// `64-true`: weights, inputs and compute in float64; outputs back to float32
// (the default dtype), as Fabric's DoublePrecision.
class DoublePrecision final : public PrecisionPlugin {
 public:
  std::string name() const override { return "64-true"; }
  torch::Dtype parameter_dtype() const override { return torch::kFloat64; }

  void ConvertModule(Model& model) override;
  std::unique_ptr<PrecisionGuard> ModuleInitGuard() override;
  torch::Tensor ConvertInput(const torch::Tensor& input) override;
  torch::Tensor ConvertOutput(const torch::Tensor& output) override;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_PRECISION_DOUBLE_PRECISION_H_
