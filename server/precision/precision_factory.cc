#include "server/precision/precision_factory.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/precision/fp32_precision.h"

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

// Why a mode cannot run here; empty when it can.
std::string Unsupported(const std::string& name) {
  if (name == "32-true") return "";
  if (name == "transformer-engine" || name == "transformer-engine-float16") {
    return "FP8 training needs LibTorch >= 2.4 on a CUDA device of compute capability >= 8.9 "
           "(Hopper/Ada) and the FP8 plugin, which this build does not include";
  }
  return "this build of mantissad implements only 32-true so far";
}

}  // namespace

std::vector<PrecisionModeInfo> PrecisionFactory::Modes() {
  std::vector<PrecisionModeInfo> modes;
  for (const ModeEntry& e : Table()) {
    PrecisionModeInfo info;
    info.name = e.name;
    info.aliases = e.aliases;
    info.reason = Unsupported(e.name);
    info.supported = info.reason.empty();
    modes.push_back(std::move(info));
  }
  return modes;
}

absl::StatusOr<ResolvedPrecision> PrecisionFactory::Resolve(const std::string& precision) {
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
    if (const std::string why = Unsupported(resolved.canonical); !why.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("precision: '", value, "' cannot run on this daemon: ", why));
    }
    resolved.effective = resolved.canonical;
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

absl::StatusOr<std::unique_ptr<PrecisionPlugin>> PrecisionFactory::Create(
    const std::string& effective) {
  if (effective == "32-true") return std::make_unique<Fp32Precision>();
  return absl::FailedPreconditionError(
      absl::StrCat("precision: no plugin for '", effective, "' in this build"));
}

}  // namespace mantissa
