#ifndef MANTISSA_SERVER_PRECISION_FP32_PRECISION_H_
#define MANTISSA_SERVER_PRECISION_FP32_PRECISION_H_

#include "server/precision/precision_plugin.h"

namespace mantissa {

// `32-true`: weights and compute in float32. The base class's defaults are
// exactly this mode, as in Fabric.
class Fp32Precision final : public PrecisionPlugin {
 public:
  std::string name() const override { return "32-true"; }
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_PRECISION_FP32_PRECISION_H_
