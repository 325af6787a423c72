#include "server/precision/fp8_scaling_group.h"

#include <cmath>
#include <limits>

namespace mantissa {

Fp8ScalingGroup::Fp8ScalingGroup(const DelayedScaling& recipe, torch::Device device)
    : recipe_(recipe) {
  const auto options = torch::TensorOptions().dtype(torch::kFloat32).device(device);
  scaled_max_ = torch::empty({0}, options);
  amax_history_ = torch::zeros({0, recipe.amax_history_len}, options);
  scale_ = torch::ones({0}, options);
}

int64_t Fp8ScalingGroup::Add(Fp8Dtype dtype) {
  const auto options = scale_.options();
  const double scaled_max = Fp8Max(dtype) / std::exp2(static_cast<double>(recipe_.margin));
  scaled_max_ = torch::cat({scaled_max_, torch::full({1}, scaled_max, options)});
  amax_history_ = torch::cat({amax_history_, torch::zeros({1, recipe_.amax_history_len}, options)});
  scale_ = torch::cat({scale_, torch::ones({1}, options)});
  dtypes_.push_back(dtype);
  return size() - 1;
}

void Fp8ScalingGroup::Record(int64_t row, const torch::Tensor& amax) {
  torch::Tensor slot = amax_history_.select(0, row).select(0, 0);
  // The slot is 0 after each Update and amaxes are >= 0, so this is the
  // step's amax; maximum propagates NaN, as the amax of a NaN tensor is.
  at::maximum_out(slot, slot, amax.reshape({}));
  recorded_ = true;
}

void Fp8ScalingGroup::Update() {
  if (size() == 0 || (!recorded_ && !reducer_)) return;
  recorded_ = false;
  if (reducer_) {
    const torch::Tensor recorded = amax_history_.select(1, 0).contiguous();
    reducer_(recorded);
    amax_history_.select(1, 0).copy_(recorded);
  }
  const torch::Tensor current = recipe_.amax_compute_algo == DelayedScaling::AmaxComputeAlgo::kMax
                                    ? amax_history_.amax(1)
                                    : amax_history_.select(1, 0).clone();
  // One division, as TransformerEngine's kernel does (a constant times the
  // reciprocal would round twice).
  torch::Tensor scale = scaled_max_.div(current);
  // An amax so small that the quotient overflows float32.
  scale = torch::where(torch::isinf(scale),
                       torch::full_like(scale, std::numeric_limits<float>::max()), scale);
  scale = torch::where(current.gt(0) & torch::isfinite(current), scale, scale_);
  scale_.copy_(scale);
  // roll(-1) moves column 1 to 0 and 0 to the end; column 0 is then the
  // next step's slot, and what it held (the oldest entry) is gone.
  if (amax_history_.size(1) > 1) amax_history_.copy_(amax_history_.roll(-1, 1));
  amax_history_.select(1, 0).zero_();
}

void Fp8ScalingGroup::To(torch::Device device) {
  if (scale_.device() == device) return;
  scaled_max_ = scaled_max_.to(device);
  amax_history_ = amax_history_.to(device);
  scale_ = scale_.to(device);
}

void Fp8ScalingGroup::Load(int64_t row, const torch::Tensor& amax_history,
                           const torch::Tensor& scale) {
  TORCH_CHECK(amax_history.dim() == 1 && amax_history.size(0) == amax_history_.size(1),
              "FP8 amax history of shape ", amax_history.sizes(), " where the recipe has [",
              amax_history_.size(1), "]");
  TORCH_CHECK(scale.numel() == 1, "FP8 scale with ", scale.numel(), " elements");
  amax_history_.select(0, row).copy_(amax_history);
  scale_.select(0, row).copy_(scale.reshape({}));
}

}  // namespace mantissa
