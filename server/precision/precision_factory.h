#ifndef MANTISSA_SERVER_PRECISION_PRECISION_FACTORY_H_
#define MANTISSA_SERVER_PRECISION_PRECISION_FACTORY_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "mantissa/v1/training.pb.h"
#include "server/precision/delayed_scaling.h"
#include "server/precision/device_capabilities.h"
#include "server/precision/precision_plugin.h"

namespace mantissa {

// What a precision string resolves to on this daemon's device.
struct ResolvedPrecision {
  std::string requested;              // as submitted, e.g. "16"
  std::string canonical;              // Fabric value it names, e.g. "16-mixed"
  std::string effective;              // what runs, e.g. "bf16-mixed" on CPU
  std::vector<std::string> warnings;  // deprecations and fallbacks
};

// One entry per Fabric precision value.
struct PrecisionModeInfo {
  std::string name;
  std::vector<std::string> aliases;
  bool supported = false;
  std::string runs_as;  // effective mode here when supported
  std::string reason;   // why not, or how it runs (e.g. a fallback)
};

// The one place that maps precision strings to plugins. Adding a mode means
// one plugin file and one entry here.
class PrecisionFactory {
 public:
  // Every Fabric value, with its support on this device.
  static std::vector<PrecisionModeInfo> Modes(const DeviceCapabilities& caps);

  // Accepts Fabric's values and legacy aliases (32, "32", 64, "64", 16,
  // "16", "bf16"); "" means "32-true". INVALID_ARGUMENT listing every valid
  // value for anything else; FAILED_PRECONDITION with the reason for a value
  // this device cannot run. On CPU, 16-mixed runs as bf16-mixed with a
  // warning, as in Fabric.
  static absl::StatusOr<ResolvedPrecision> Resolve(const std::string& precision,
                                                   const DeviceCapabilities& caps);

  // TransformerEngine's recipe from a job's `fp8` settings; unset fields take
  // its defaults. INVALID_ARGUMENT naming the field (e.g. "fp8.margin").
  static absl::StatusOr<DelayedScaling> ParseFp8Recipe(const v1::Fp8Recipe& fp8);

  // A fresh plugin for an effective precision returned by Resolve. `fp8`:
  // the job's recipe for the transformer-engine modes (unset fields take
  // TransformerEngine's defaults); FAILED_PRECONDITION for those modes where
  // at::_scaled_mm cannot run.
  static absl::StatusOr<std::unique_ptr<PrecisionPlugin>> Create(
      const std::string& effective, torch::Device device,
      const v1::Fp8Recipe& fp8 = v1::Fp8Recipe());
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_PRECISION_PRECISION_FACTORY_H_
