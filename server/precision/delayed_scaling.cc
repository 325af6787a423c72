#include "server/precision/delayed_scaling.h"

#include <cmath>
#include <limits>

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

Fp8TensorScaling::Fp8TensorScaling(Fp8Dtype dtype, const DelayedScaling& recipe,
                                   torch::Device device)
    : dtype_(dtype),
      algo_(recipe.amax_compute_algo),
      scaled_max_(Fp8Max(dtype) / std::exp2(static_cast<double>(recipe.margin))) {
  const auto options = torch::TensorOptions().dtype(torch::kFloat32).device(device);
  amax_history_ = torch::zeros({recipe.amax_history_len}, options);
  scale_ = torch::ones({}, options);
}

void Fp8TensorScaling::Update(const torch::Tensor& amax) {
  amax_history_.select(0, 0).copy_(amax.reshape({}));
  const torch::Tensor current = algo_ == DelayedScaling::AmaxComputeAlgo::kMax
                                    ? amax_history_.max()
                                    : amax_history_.select(0, 0).clone();
  // One division, as TransformerEngine's kernel does (Scalar / Tensor would
  // multiply by a rounded reciprocal).
  torch::Tensor scale = torch::full({}, scaled_max_, current.options()).div(current);
  // An amax so small that the quotient overflows float32.
  scale = torch::where(torch::isinf(scale),
                       torch::full_like(scale, std::numeric_limits<float>::max()), scale);
  scale = torch::where(current.gt(0) & torch::isfinite(current), scale, scale_);
  scale_.copy_(scale);
  // roll(-1) moves [1] to [0] and [0] to the end; [0] is then the next
  // step's slot, and what it held (the oldest entry) is gone.
  if (amax_history_.size(0) > 1) amax_history_.copy_(amax_history_.roll(-1, 0));
  amax_history_.select(0, 0).zero_();
}

void Fp8TensorScaling::To(torch::Device device) {
  if (scale_.device() == device) return;
  amax_history_ = amax_history_.to(device);
  scale_ = scale_.to(device);
}

void Fp8TensorScaling::Load(const torch::Tensor& amax_history, const torch::Tensor& scale) {
  TORCH_CHECK(amax_history.sizes() == amax_history_.sizes(), "FP8 amax history of shape ",
              amax_history.sizes(), " where the recipe has ", amax_history_.sizes());
  TORCH_CHECK(scale.numel() == 1, "FP8 scale with ", scale.numel(), " elements");
  amax_history_.copy_(amax_history);
  scale_.copy_(scale.reshape({}));
}

}  // namespace mantissa
