#ifndef MANTISSA_SERVER_PRECISION_PRECISION_REGISTRY_H_
#define MANTISSA_SERVER_PRECISION_PRECISION_REGISTRY_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "mantissa/v1/training.pb.h"
#include "server/precision/delayed_scaling.h"
#include "server/precision/half_update.h"
#include "server/precision/precision_plugin.h"
#include "server/runtime/device_capabilities.h"

namespace mantissa {

// What the rest of the daemon may know about a precision mode without
// comparing its name.
struct PrecisionTraits {
  // The weights after ConvertModule, and the compute (autocast's dtype in
  // the mixed modes): what a plugin's parameter_dtype()/compute_dtype() say.
  torch::Dtype parameter_dtype = torch::kFloat32;
  torch::Dtype compute_dtype = torch::kFloat32;
  // The forward runs under autocast (the mixed and FP8 modes).
  bool autocast = false;
  // 16-true and bf16-true: the model itself in half precision, with no
  // float32 master weights and no autocast. The modes serving casts to are
  // these and 32-true.
  bool true_half = false;
  // The grad scaler is on unless the job turns it off (16-mixed).
  bool scaler_by_default = false;
  // Runs FP8 GEMMs and takes the job's FP8 recipe (the transformer-engine
  // modes); other modes refuse a recipe.
  bool fp8 = false;
  // A precision a model can be served in (32-true, 16-true, bf16-true).
  bool servable = false;
};

// How a mode runs on a device.
struct PrecisionSupport {
  bool supported = true;
  // Another mode this one runs as (16-mixed on CPU: bf16-mixed); empty: itself.
  std::string runs_as;
  // Why it cannot run, or a warning for the job when it runs otherwise.
  std::string note;
};

// One Fabric `precision=` value. The table is in precision_registry.cc.
struct PrecisionEntry {
  const char* name;
  std::vector<std::string> aliases;
  // Aliases Fabric still accepts but warns about.
  std::vector<std::string> deprecated_aliases;
  const char* help;
  PrecisionTraits traits;
  PrecisionSupport (*support)(const DeviceCapabilities& caps);
  // A fresh plugin; `recipe` is used by the FP8 modes only, `update` by the
  // true-half modes only.
  absl::StatusOr<std::unique_ptr<PrecisionPlugin>> (*create)(torch::Device device,
                                                             const DelayedScaling& recipe,
                                                             const HalfUpdate::Options& update);
};

// What a precision string resolves to on this daemon's device.
struct ResolvedPrecision {
  std::string requested;              // as submitted, e.g. "16"
  std::string canonical;              // Fabric value it names, e.g. "16-mixed"
  std::string effective;              // what runs, e.g. "bf16-mixed" on CPU
  PrecisionTraits traits;             // the effective mode's
  std::vector<std::string> warnings;  // deprecations and fallbacks
};

// One entry per Fabric precision value, with its support on a device.
struct PrecisionModeInfo {
  std::string name;
  std::vector<std::string> aliases;
  bool supported = false;
  std::string runs_as;  // effective mode here when supported
  std::string reason;   // why not, or how it runs (e.g. a fallback)
};

// The one place that maps precision strings to plugins and their traits.
// Adding a mode means one plugin file and one row in the table.
class PrecisionRegistry {
 public:
  // Fabric's values, in Fabric's order.
  static const std::vector<PrecisionEntry>& Entries();

  // The entry of a canonical value (not an alias); null for anything else.
  static const PrecisionEntry* Find(absl::string_view canonical);

  // The modes a model can be served in (traits.servable), half first:
  // bf16-true, 16-true, 32-true.
  static std::vector<const PrecisionEntry*> ServableModes();

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

  // A fresh plugin for an effective precision returned by Resolve. `recipe`:
  // the job's parsed FP8 recipe, for the FP8 modes; FAILED_PRECONDITION for
  // those modes where at::_scaled_mm cannot run, and for unknown names.
  // `update`: how the true-half modes round the optimizer's update
  // (JobSpec.bf16_update); the other modes take only kNearest
  // (INVALID_ARGUMENT otherwise).
  static absl::StatusOr<std::unique_ptr<PrecisionPlugin>> Create(
      const std::string& effective, torch::Device device,
      const DelayedScaling& recipe = DelayedScaling(),
      const HalfUpdate::Options& update = HalfUpdate::Options());

  // JobSpec.bf16_update against a canonical precision: anything but
  // kNearest needs half weights (traits.true_half). INVALID_ARGUMENT
  // "bf16_update: 'kahan' applies to bf16-true and 16-true only, not
  // 'bf16-mixed'".
  static absl::Status CheckUpdateRounding(absl::string_view canonical, UpdateRounding rounding);
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_PRECISION_PRECISION_REGISTRY_H_
