#ifndef MANTISSA_SERVER_PRECISION_PRECISION_GUARDS_H_
#define MANTISSA_SERVER_PRECISION_PRECISION_GUARDS_H_

#include <torch/torch.h>

#include <memory>

#include "server/common/torch_compat.h"
#include "server/precision/precision_plugin.h"

namespace mantissa {

// The PrecisionGuards the plugins hand out, and the tensor conversion they
// share: Fabric's _convert_fp_tensor (floating tensors only; integer targets
// and token ids pass through).

class AutocastPrecisionGuard final : public PrecisionGuard {
 public:
  AutocastPrecisionGuard(c10::DeviceType device_type, torch::Dtype dtype)
      : guard_(device_type, dtype) {}

 private:
  compat::AutocastGuard guard_;
};

class DefaultDtypePrecisionGuard final : public PrecisionGuard {
 public:
  explicit DefaultDtypePrecisionGuard(torch::Dtype dtype) : guard_(dtype) {}

 private:
  compat::DefaultDtypeGuard guard_;
};

inline torch::Tensor ConvertFloatingTensor(const torch::Tensor& t, torch::Dtype dtype) {
  return t.is_floating_point() ? t.to(dtype) : t;
}

}  // namespace mantissa

#endif  // MANTISSA_SERVER_PRECISION_PRECISION_GUARDS_H_
