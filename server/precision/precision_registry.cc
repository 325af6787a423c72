#include "server/precision/precision_registry.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/named_entries.h"
#include "server/common/status_macros.h"
#include "server/common/torch_compat.h"
#include "server/precision/double_precision.h"
#include "server/precision/fp32_precision.h"
#include "server/precision/half_precision.h"
#include "server/precision/mixed_precision.h"
#include "server/precision/transformer_engine_precision.h"

namespace mantissa {
namespace {

using PluginOr = absl::StatusOr<std::unique_ptr<PrecisionPlugin>>;

PrecisionSupport Always(const DeviceCapabilities&) { return {}; }

// Supported where the capability probe `probe` succeeded.
PrecisionSupport Requires(const DeviceCapabilities& caps, bool available, const std::string& what,
                          const std::string& probe) {
  if (available) return {};
  return {false, "",
          absl::StrCat(what, " is not available on ", caps.device.str(), " with LibTorch ",
                       compat::LibTorchVersion(), " (", caps.Failure(probe), ")")};
}

PrecisionSupport SixteenMixed(const DeviceCapabilities& caps) {
  if (caps.is_cuda() && caps.autocast_float16) return {};
  // Fabric's CPU behaviour, in its words.
  if (!caps.is_cuda() && caps.autocast_bfloat16) {
    return {true, "bf16-mixed",
            "You passed precision='16-mixed' but AMP with fp16 is not supported on CPU. Using "
            "precision='bf16-mixed' instead."};
  }
  return Requires(caps, false, "float16 autocast", "autocast_float16");
}

PrecisionSupport Fp8(const DeviceCapabilities& caps) {
  if (!caps.is_cuda()) {
    return {false, "",
            absl::StrCat("FP8 training needs a CUDA device of compute capability >= 8.9; "
                         "this daemon runs on ",
                         caps.device.str())};
  }
  if (caps.compute_capability < 89) {
    return {false, "",
            absl::StrCat("FP8 training needs compute capability >= 8.9; ", caps.device_name,
                         " has ", caps.compute_capability / 10, ".", caps.compute_capability % 10)};
  }
  if (!MANTISSA_TORCH_AT_LEAST(2, 4)) {
    return {false, "",
            absl::StrCat("FP8 training needs LibTorch >= 2.4 (at::_scaled_mm); this is ",
                         compat::LibTorchVersion())};
  }
  return {};
}

PluginOr TransformerEngine(torch::Dtype weights, torch::Device device,
                           const DelayedScaling& recipe) {
  TransformerEnginePrecision::Options options;
  options.weights_dtype = weights;
  options.recipe = recipe;
  options.backend = Fp8Backend::kScaledMm;
  options.device = device;
  ASSIGN_OR_RETURN(std::unique_ptr<TransformerEnginePrecision> plugin,
                   TransformerEnginePrecision::Create(std::move(options)));
  return plugin;
}

constexpr torch::Dtype kF32 = torch::kFloat32;
constexpr torch::Dtype kF64 = torch::kFloat64;
constexpr torch::Dtype kBf16 = torch::kBFloat16;
constexpr torch::Dtype kF16 = torch::kFloat16;

}  // namespace

const std::vector<PrecisionEntry>& PrecisionRegistry::Entries() {
  // Fabric's `precision=` values, in Fabric's order.
  static const auto* const entries = new std::vector<PrecisionEntry>{
      {"32-true",
       {"32"},
       {},
       "float32 weights and compute",
       {.parameter_dtype = kF32, .compute_dtype = kF32, .servable = true},
       &Always,
       [](torch::Device, const DelayedScaling&, const HalfUpdate::Options&) -> PluginOr {
         return std::make_unique<Fp32Precision>();
       }},
      {"64-true",
       {"64"},
       {},
       "float64 weights and compute",
       {.parameter_dtype = kF64, .compute_dtype = kF64},
       [](const DeviceCapabilities& caps) {
         return Requires(caps, caps.float64, "float64 compute", "float64");
       },
       [](torch::Device, const DelayedScaling&, const HalfUpdate::Options&) -> PluginOr {
         return std::make_unique<DoublePrecision>();
       }},
      {"16-mixed",
       {"16"},
       {"16"},
       "float32 weights, float16 autocast, grad scaler on",
       {.parameter_dtype = kF32,
        .compute_dtype = kF16,
        .autocast = true,
        .scaler_by_default = true},
       &SixteenMixed,
       [](torch::Device device, const DelayedScaling&, const HalfUpdate::Options&) -> PluginOr {
         return std::make_unique<MixedPrecision>(torch::kFloat16, device.type());
       }},
      {"bf16-mixed",
       {"bf16"},
       {"bf16"},
       "float32 weights, bfloat16 autocast",
       {.parameter_dtype = kF32, .compute_dtype = kBf16, .autocast = true},
       [](const DeviceCapabilities& caps) {
         return Requires(caps, caps.autocast_bfloat16, "bfloat16 autocast", "autocast_bfloat16");
       },
       [](torch::Device device, const DelayedScaling&, const HalfUpdate::Options&) -> PluginOr {
         return std::make_unique<MixedPrecision>(torch::kBFloat16, device.type());
       }},
      {"16-true",
       {},
       {},
       "float16 weights and compute",
       {.parameter_dtype = kF16, .compute_dtype = kF16, .true_half = true, .servable = true},
       [](const DeviceCapabilities& caps) {
         return Requires(caps, caps.float16, "float16 compute", "float16");
       },
       [](torch::Device, const DelayedScaling&, const HalfUpdate::Options& update) -> PluginOr {
         return std::make_unique<HalfPrecision>(torch::kFloat16, update);
       }},
      {"bf16-true",
       {},
       {},
       "bfloat16 weights and compute",
       {.parameter_dtype = kBf16, .compute_dtype = kBf16, .true_half = true, .servable = true},
       [](const DeviceCapabilities& caps) {
         return Requires(caps, caps.bfloat16, "bfloat16 compute", "bfloat16");
       },
       [](torch::Device, const DelayedScaling&, const HalfUpdate::Options& update) -> PluginOr {
         return std::make_unique<HalfPrecision>(torch::kBFloat16, update);
       }},
      {"transformer-engine",
       {},
       {},
       "FP8 GEMMs, bfloat16 weights (CUDA, sm_89+)",
       {.parameter_dtype = kBf16, .compute_dtype = kBf16, .autocast = true, .fp8 = true},
       &Fp8,
       [](torch::Device device, const DelayedScaling& recipe, const HalfUpdate::Options&) {
         return TransformerEngine(torch::kBFloat16, device, recipe);
       }},
      {"transformer-engine-float16",
       {},
       {},
       "FP8 GEMMs, float16 weights (CUDA, sm_89+)",
       {.parameter_dtype = kF16, .compute_dtype = kF16, .autocast = true, .fp8 = true},
       &Fp8,
       [](torch::Device device, const DelayedScaling& recipe, const HalfUpdate::Options&) {
         return TransformerEngine(torch::kFloat16, device, recipe);
       }},
  };
  return *entries;
}

const PrecisionEntry* PrecisionRegistry::Find(absl::string_view canonical) {
  return FindEntry(Entries(), canonical);
}

std::vector<const PrecisionEntry*> PrecisionRegistry::ServableModes() {
  // The table lists 32-true first; serving lists the compact casts first.
  std::vector<const PrecisionEntry*> modes;
  for (auto it = Entries().rbegin(); it != Entries().rend(); ++it) {
    if (it->traits.servable) modes.push_back(&*it);
  }
  return modes;
}

std::vector<PrecisionModeInfo> PrecisionRegistry::Modes(const DeviceCapabilities& caps) {
  std::vector<PrecisionModeInfo> modes;
  for (const PrecisionEntry& e : Entries()) {
    const PrecisionSupport support = e.support(caps);
    PrecisionModeInfo info;
    info.name = e.name;
    info.aliases = e.aliases;
    info.supported = support.supported;
    if (support.supported) info.runs_as = support.runs_as.empty() ? e.name : support.runs_as;
    info.reason = support.note;
    modes.push_back(std::move(info));
  }
  return modes;
}

absl::StatusOr<ResolvedPrecision> PrecisionRegistry::Resolve(const std::string& precision,
                                                             const DeviceCapabilities& caps) {
  ResolvedPrecision resolved;
  resolved.requested = precision;
  const std::string value = precision.empty() ? "32-true" : precision;
  for (const PrecisionEntry& e : Entries()) {
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
    const PrecisionSupport support = e.support(caps);
    if (!support.supported) {
      return absl::FailedPreconditionError(
          absl::StrCat("precision: '", value, "' cannot run on this daemon: ", support.note));
    }
    if (!support.note.empty()) resolved.warnings.push_back(support.note);
    resolved.effective = support.runs_as.empty() ? e.name : support.runs_as;
    resolved.traits = Find(resolved.effective)->traits;
    return resolved;
  }
  std::vector<std::string> valid;
  for (const PrecisionEntry& e : Entries()) {
    valid.push_back(e.name);
    for (const std::string& a : e.aliases) valid.push_back(a);
  }
  return absl::InvalidArgumentError(absl::StrCat("precision: unknown value '", value,
                                                 "'; valid values: ", absl::StrJoin(valid, ", ")));
}

absl::StatusOr<DelayedScaling> PrecisionRegistry::ParseFp8Recipe(const v1::Fp8Recipe& fp8) {
  auto optional = [](bool has, int64_t value) {
    return has ? std::optional<int64_t>(value) : std::nullopt;
  };
  return DelayedScaling::Parse(fp8.fp8_format(),
                               optional(fp8.has_amax_history_len(), fp8.amax_history_len()),
                               fp8.amax_compute_algo(), optional(fp8.has_margin(), fp8.margin()));
}

absl::StatusOr<std::unique_ptr<PrecisionPlugin>> PrecisionRegistry::Create(
    const std::string& effective, torch::Device device, const DelayedScaling& recipe,
    const HalfUpdate::Options& update) {
  const PrecisionEntry* entry = Find(effective);
  if (entry == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("precision: no plugin for '", effective, "' in this build"));
  }
  RETURN_IF_ERROR(CheckUpdateRounding(effective, update.rounding));
  return entry->create(device, recipe, update);
}

absl::Status PrecisionRegistry::CheckUpdateRounding(absl::string_view canonical,
                                                    UpdateRounding rounding) {
  const PrecisionEntry* entry = Find(canonical);
  if (rounding == UpdateRounding::kNearest || (entry != nullptr && entry->traits.true_half)) {
    return absl::OkStatus();
  }
  // Half first, as ServableModes lists them.
  std::vector<std::string> true_half;
  for (auto it = Entries().rbegin(); it != Entries().rend(); ++it) {
    if (it->traits.true_half) true_half.push_back(it->name);
  }
  return absl::InvalidArgumentError(absl::StrCat("bf16_update: '", UpdateRoundingName(rounding),
                                                 "' applies to ", absl::StrJoin(true_half, " and "),
                                                 " only, not '", canonical, "'"));
}

}  // namespace mantissa
