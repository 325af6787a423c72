#include "server/precision/precision_factory.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/status_macros.h"
#include "server/common/torch_compat.h"
#include "server/precision/double_precision.h"
#include "server/precision/fp32_precision.h"
#include "server/precision/half_precision.h"
#include "server/precision/mixed_precision.h"
#include "server/precision/transformer_engine_precision.h"

namespace mantissa {
namespace {

struct ModeEntry {
  const char* name;
  std::vector<std::string> aliases;
  // Aliases Fabric still accepts but warns about.
  std::vector<std::string> deprecated_aliases;
};

// Fabric's `precision=` values, in Fabric's order.
const std::vector<ModeEntry>& Table() {
  static const auto* const table = new std::vector<ModeEntry>{
      {"32-true", {"32"}, {}},
      {"64-true", {"64"}, {}},
      {"16-mixed", {"16"}, {"16"}},
      {"bf16-mixed", {"bf16"}, {"bf16"}},
      {"16-true", {}, {}},
      {"bf16-true", {}, {}},
      {"transformer-engine", {}, {}},
      {"transformer-engine-float16", {}, {}},
  };
  return *table;
}

// How a canonical mode runs on this device: `runs_as` empty means it does
// not, and `note` says why; otherwise `note` is a warning for the job.
struct Support {
  std::string runs_as;
  std::string note;
};

std::string Missing(const DeviceCapabilities& caps, const std::string& what,
                    const std::string& probe) {
  return absl::StrCat(what, " is not available on ", caps.device.str(), " with LibTorch ",
                      compat::LibTorchVersion(), " (", caps.Failure(probe), ")");
}

Support SupportOf(const std::string& mode, const DeviceCapabilities& caps) {
  if (mode == "32-true") return {mode, ""};
  if (mode == "64-true") {
    return caps.float64 ? Support{mode, ""}
                        : Support{"", Missing(caps, "float64 compute", "float64")};
  }
  if (mode == "bf16-true") {
    return caps.bfloat16 ? Support{mode, ""}
                         : Support{"", Missing(caps, "bfloat16 compute", "bfloat16")};
  }
  if (mode == "16-true") {
    return caps.float16 ? Support{mode, ""}
                        : Support{"", Missing(caps, "float16 compute", "float16")};
  }
  if (mode == "bf16-mixed") {
    return caps.autocast_bfloat16
               ? Support{mode, ""}
               : Support{"", Missing(caps, "bfloat16 autocast", "autocast_bfloat16")};
  }
  if (mode == "16-mixed") {
    if (caps.is_cuda() && caps.autocast_float16) return {mode, ""};
    // Fabric's CPU behaviour, in its words.
    if (!caps.is_cuda() && caps.autocast_bfloat16) {
      return {"bf16-mixed",
              "You passed precision='16-mixed' but AMP with fp16 is not supported on CPU. Using "
              "precision='bf16-mixed' instead."};
    }
    return {"", Missing(caps, "float16 autocast", "autocast_float16")};
  }
  // transformer-engine, transformer-engine-float16.
  if (!caps.is_cuda()) {
    return {"", absl::StrCat("FP8 training needs a CUDA device of compute capability >= 8.9; "
                             "this daemon runs on ",
                             caps.device.str())};
  }
  if (caps.compute_capability < 89) {
    return {"",
            absl::StrCat("FP8 training needs compute capability >= 8.9; ", caps.device_name,
                         " has ", caps.compute_capability / 10, ".", caps.compute_capability % 10)};
  }
  if (!MANTISSA_TORCH_AT_LEAST(2, 4)) {
    return {"", absl::StrCat("FP8 training needs LibTorch >= 2.4 (at::_scaled_mm); this is ",
                             compat::LibTorchVersion())};
  }
  return {mode, ""};
}

}  // namespace

std::vector<PrecisionModeInfo> PrecisionFactory::Modes(const DeviceCapabilities& caps) {
  std::vector<PrecisionModeInfo> modes;
  for (const ModeEntry& e : Table()) {
    const Support support = SupportOf(e.name, caps);
    PrecisionModeInfo info;
    info.name = e.name;
    info.aliases = e.aliases;
    info.supported = !support.runs_as.empty();
    info.runs_as = support.runs_as;
    info.reason = support.note;
    modes.push_back(std::move(info));
  }
  return modes;
}

absl::StatusOr<ResolvedPrecision> PrecisionFactory::Resolve(const std::string& precision,
                                                            const DeviceCapabilities& caps) {
  ResolvedPrecision resolved;
  resolved.requested = precision;
  const std::string value = precision.empty() ? "32-true" : precision;
  for (const ModeEntry& e : Table()) {
    bool alias = false;
    for (const std::string& a : e.aliases) alias = alias || value == a;
    if (value != e.name && !alias) continue;
    resolved.canonical = e.name;
    for (const std::string& a : e.deprecated_aliases) {
      if (value == a) {
        // Fabric's wording, so users recognise it.
        resolved.warnings.push_back(absl::StrCat("precision '", value,
                                                 "' is supported for historical reasons but its "
                                                 "usage is discouraged. Please set your precision "
                                                 "to '",
                                                 e.name, "' instead!"));
      }
    }
    const Support support = SupportOf(resolved.canonical, caps);
    if (support.runs_as.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("precision: '", value, "' cannot run on this daemon: ", support.note));
    }
    if (!support.note.empty()) resolved.warnings.push_back(support.note);
    resolved.effective = support.runs_as;
    return resolved;
  }
  std::vector<std::string> valid;
  for (const ModeEntry& e : Table()) {
    valid.push_back(e.name);
    for (const std::string& a : e.aliases) valid.push_back(a);
  }
  return absl::InvalidArgumentError(absl::StrCat("precision: unknown value '", value,
                                                 "'; valid values: ", absl::StrJoin(valid, ", ")));
}

absl::StatusOr<DelayedScaling> PrecisionFactory::ParseFp8Recipe(const v1::Fp8Recipe& fp8) {
  auto optional = [](bool has, int64_t value) {
    return has ? std::optional<int64_t>(value) : std::nullopt;
  };
  return DelayedScaling::Parse(fp8.fp8_format(),
                               optional(fp8.has_amax_history_len(), fp8.amax_history_len()),
                               fp8.amax_compute_algo(), optional(fp8.has_margin(), fp8.margin()));
}

absl::StatusOr<std::unique_ptr<PrecisionPlugin>> PrecisionFactory::Create(
    const std::string& effective, torch::Device device, const v1::Fp8Recipe& fp8) {
  if (effective == "32-true") return std::make_unique<Fp32Precision>();
  if (effective == "64-true") return std::make_unique<DoublePrecision>();
  if (effective == "bf16-true") return std::make_unique<HalfPrecision>(torch::kBFloat16);
  if (effective == "16-true") return std::make_unique<HalfPrecision>(torch::kFloat16);
  if (effective == "bf16-mixed") {
    return std::make_unique<MixedPrecision>(torch::kBFloat16, device.type());
  }
  if (effective == "16-mixed") {
    return std::make_unique<MixedPrecision>(torch::kFloat16, device.type());
  }
  if (effective == "transformer-engine" || effective == "transformer-engine-float16") {
    TransformerEnginePrecision::Options options;
    options.weights_dtype = effective == "transformer-engine" ? torch::kBFloat16 : torch::kFloat16;
    ASSIGN_OR_RETURN(options.recipe, ParseFp8Recipe(fp8));
    options.backend = Fp8Backend::kScaledMm;
    options.device = device;
    ASSIGN_OR_RETURN(std::unique_ptr<TransformerEnginePrecision> plugin,
                     TransformerEnginePrecision::Create(std::move(options)));
    return plugin;
  }
  return absl::FailedPreconditionError(
      absl::StrCat("precision: no plugin for '", effective, "' in this build"));
}

}  // namespace mantissa
