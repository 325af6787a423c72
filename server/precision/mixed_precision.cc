#include "server/precision/mixed_precision.h"

#include "server/precision/precision_guards.h"

namespace mantissa {

std::unique_ptr<PrecisionGuard> MixedPrecision::ForwardGuard() {
  return std::make_unique<AutocastPrecisionGuard>(device_type_, dtype_);
}

torch::Tensor MixedPrecision::ConvertInput(const torch::Tensor& input) {
  return ConvertFloatingTensor(input, dtype_);
}

torch::Tensor MixedPrecision::ConvertOutput(const torch::Tensor& output) {
  return ConvertFloatingTensor(output, torch::kFloat32);
}

}  // namespace mantissa
