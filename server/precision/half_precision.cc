#include "server/precision/half_precision.h"

#include "server/precision/precision_guards.h"

namespace mantissa {

void HalfPrecision::ConvertModule(Model& model) { model.ToDtype(dtype_); }

std::unique_ptr<PrecisionGuard> HalfPrecision::ModuleInitGuard() {
  return std::make_unique<DefaultDtypePrecisionGuard>(dtype_);
}

torch::Tensor HalfPrecision::ConvertInput(const torch::Tensor& input) {
  return ConvertFloatingTensor(input, dtype_);
}

torch::Tensor HalfPrecision::ConvertOutput(const torch::Tensor& output) {
  return ConvertFloatingTensor(output, torch::kFloat32);
}

}  // namespace mantissa
