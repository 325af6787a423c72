#include "server/precision/double_precision.h"

#include "server/precision/precision_guards.h"

namespace mantissa {

void DoublePrecision::ConvertModule(Model& model) { model.ToDtype(torch::kFloat64); }

std::unique_ptr<PrecisionGuard> DoublePrecision::ModuleInitGuard() {
  return std::make_unique<DefaultDtypePrecisionGuard>(torch::kFloat64);
}

torch::Tensor DoublePrecision::ConvertInput(const torch::Tensor& input) {
  return ConvertFloatingTensor(input, torch::kFloat64);
}

torch::Tensor DoublePrecision::ConvertOutput(const torch::Tensor& output) {
  return ConvertFloatingTensor(output, torch::kFloat32);
}

}  // namespace mantissa
