#include "server/precision/delayed_scaling.h"

#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"

namespace mantissa {

std::string DelayedScaling::FormatName(Format format) {
  return format == Format::kHybrid ? "HYBRID" : "E4M3";
}

std::string DelayedScaling::AlgoName(AmaxComputeAlgo algo) {
  return algo == AmaxComputeAlgo::kMax ? "max" : "most_recent";
}

absl::StatusOr<DelayedScaling> DelayedScaling::Parse(absl::string_view fp8_format,
                                                     std::optional<int64_t> amax_history_len,
                                                     absl::string_view amax_compute_algo,
                                                     std::optional<int64_t> margin) {
  DelayedScaling recipe;
  if (fp8_format == "E4M3") {
    recipe.fp8_format = Format::kE4M3;
  } else if (!fp8_format.empty() && fp8_format != "HYBRID") {
    // TransformerEngine's Format.E5M2 exists but DelayedScaling refuses it
    // for training: E5M2 weights and activations lose too much precision.
    return absl::InvalidArgumentError(absl::StrCat(
        "fp8.fp8_format: unknown value '", fp8_format,
        "'; valid values: HYBRID (E4M3 forward, E5M2 gradients), E4M3 (E4M3 everywhere)"));
  }
  if (amax_compute_algo == "most_recent") {
    recipe.amax_compute_algo = AmaxComputeAlgo::kMostRecent;
  } else if (!amax_compute_algo.empty() && amax_compute_algo != "max") {
    return absl::InvalidArgumentError(absl::StrCat("fp8.amax_compute_algo: unknown value '",
                                                   amax_compute_algo,
                                                   "'; valid values: max, most_recent"));
  }
  if (amax_history_len.has_value()) recipe.amax_history_len = *amax_history_len;
  if (margin.has_value()) recipe.margin = *margin;
  RETURN_IF_ERROR(recipe.Validate());
  return recipe;
}

absl::Status DelayedScaling::Validate() const {
  if (amax_history_len < 1 || amax_history_len > kMaxAmaxHistoryLen) {
    return absl::InvalidArgumentError(absl::StrCat(
        "fp8.amax_history_len: must be in [1, ", kMaxAmaxHistoryLen, "], got ", amax_history_len));
  }
  if (margin < 0 || margin > kMaxMargin) {
    return absl::InvalidArgumentError(
        absl::StrCat("fp8.margin: must be in [0, ", kMaxMargin, "], got ", margin));
  }
  return absl::OkStatus();
}

}  // namespace mantissa
