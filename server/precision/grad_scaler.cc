#include "server/precision/grad_scaler.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"

namespace mantissa {
namespace {

// The growth tracker is int32 (as in torch.amp.GradScaler and the ATen kernel),
// so a longer interval could never be reached.
constexpr int64_t kMaxGrowthInterval = std::numeric_limits<int32_t>::max();

// Unscales one device's gradients of one dtype, as the fused kernel takes them.
// `found_inf` and `inv_scale` live on that device.
void UnscaleGroup(std::vector<torch::Tensor>& grads, torch::Tensor& found_inf,
                  const torch::Tensor& inv_scale) {
  if (grads.front().is_cuda()) {
    at::_amp_foreach_non_finite_check_and_unscale_(grads, found_inf, inv_scale);
    return;
  }
  // LibTorch 1.13 has no CPU kernel for the op above. Same results from plain
  // ops: the finiteness test sees the gradient before it is multiplied (as the
  // kernel does), the multiply runs in the promoted type (float for fp16/bf16,
  // double for fp64) like the kernel's opmath, and found-inf stays a tensor so
  // nothing waits on the host.
  torch::Tensor all_finite;
  for (torch::Tensor& grad : grads) {
    torch::Tensor finite = torch::isfinite(grad).all();
    all_finite = all_finite.defined() ? all_finite.logical_and(finite) : finite;
    // An in-place multiply by the [1]-shaped inv_scale would try to broadcast
    // a 0-dim gradient to [1]; the unsqueezed view writes the same storage.
    torch::Tensor target = grad.dim() == 0 ? grad.unsqueeze(0) : grad;
    target.mul_(inv_scale);
  }
  found_inf.masked_fill_(all_finite.logical_not(), 1.0);
}

}  // namespace

absl::Status GradScaler::CheckOptions(const Options& options) {
  if (!std::isfinite(options.init_scale) || !(options.init_scale > 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "grad_scaler.init_scale: must be a finite number > 0, got ", options.init_scale));
  }
  // Written so that NaN fails too.
  if (!(options.growth_factor > 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("grad_scaler.growth_factor: must be > 1, got ", options.growth_factor));
  }
  if (!(options.backoff_factor > 0 && options.backoff_factor < 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "grad_scaler.backoff_factor: must be in (0, 1), got ", options.backoff_factor));
  }
  if (options.growth_interval < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("grad_scaler.growth_interval: must be >= 1, got ", options.growth_interval));
  }
  if (options.growth_interval > kMaxGrowthInterval) {
    return absl::InvalidArgumentError(
        absl::StrCat("grad_scaler.growth_interval: must be <= ", kMaxGrowthInterval,
                     " (the growth tracker is int32), got ", options.growth_interval));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<GradScaler>> GradScaler::Create(Options options) {
  RETURN_IF_ERROR(CheckOptions(options));
  return std::unique_ptr<GradScaler>(new GradScaler(options));
}

void GradScaler::LazyInit(const torch::Device& device) {
  if (!scale_.defined()) {
    scale_ = torch::full({1}, options_.init_scale,
                         torch::TensorOptions().dtype(torch::kFloat32).device(device));
    growth_tracker_ = torch::zeros({1}, torch::TensorOptions().dtype(torch::kInt32).device(device));
    found_inf_ = torch::zeros({1}, torch::TensorOptions().dtype(torch::kFloat32).device(device));
    device_skips_ = torch::zeros({1}, torch::TensorOptions().dtype(torch::kFloat64).device(device));
    return;
  }
  // State restored by Load() lives on the CPU until the first loss shows
  // where training runs; values are kept, only the device changes.
  if (scale_.device() != device) {
    scale_ = scale_.to(device);
    growth_tracker_ = growth_tracker_.to(device);
    found_inf_ = found_inf_.to(device);
    device_skips_ = device_skips_.to(device);
  }
}

torch::Tensor GradScaler::Scale(const torch::Tensor& loss) {
  if (!enabled()) return loss;
  LazyInit(loss.device());
  return loss * scale_;
}

void GradScaler::Unscale(torch::optim::Optimizer& optimizer) {
  if (!enabled() || unscaled_) return;
  CheckAndUnscale(optimizer, /*check_only=*/false);
}

void GradScaler::CheckAndUnscale(torch::optim::Optimizer& optimizer, bool check_only) {
  // Grouped by device and dtype, the way the fused kernel needs them.
  std::unordered_map<torch::Device, std::unordered_map<int, std::vector<torch::Tensor>>> groups;
  std::vector<torch::Device> device_order;
  for (auto& group : optimizer.param_groups()) {
    for (auto& param : group.params()) {
      torch::Tensor& grad = param.mutable_grad();
      if (!grad.defined()) continue;
      torch::Tensor to_unscale = grad;
      if (grad.is_sparse()) {
        // As torch.amp.GradScaler: fp16 sparse gradients are coalesced first
        // so that summing duplicate indices cannot overflow later.
        if (grad.scalar_type() == torch::kHalf) grad = grad.coalesce();
        to_unscale = grad._values();
      }
      const torch::Device device = to_unscale.device();
      if (groups.find(device) == groups.end()) device_order.push_back(device);
      groups[device][static_cast<int>(to_unscale.scalar_type())].push_back(to_unscale);
    }
  }

  if (!scale_.defined()) {
    LazyInit(device_order.empty() ? torch::Device(torch::kCPU) : device_order.front());
  }
  found_inf_.zero_();
  const torch::Tensor inv_scale = check_only ? torch::ones_like(scale_) : InverseScale();

  for (const torch::Device& device : device_order) {
    const bool home = device == scale_.device();
    torch::Tensor found_inf = home ? found_inf_ : torch::zeros_like(found_inf_, device);
    const torch::Tensor device_inv_scale = home ? inv_scale : inv_scale.to(device);
    for (auto& [dtype, grads] : groups[device]) {
      UnscaleGroup(grads, found_inf, device_inv_scale);
    }
    if (!home) found_inf_.copy_(torch::maximum(found_inf_, found_inf.to(found_inf_.device())));
  }
  if (found_inf_reducer_) found_inf_reducer_(found_inf_);
  unscaled_ = !check_only;
  inf_checked_ = true;
}

OptimizerStepResult GradScaler::Step(torch::optim::Optimizer& optimizer) {
  OptimizerStepResult result;
  if (!enabled()) {
    optimizer.step();
    return result;
  }
  if (auto* device_scaled = dynamic_cast<DeviceScaledOptimizer*>(&optimizer)) {
    // No host read: the kernel unscales (unless clipping did already) and
    // skips on found-inf, and the skip is counted where it is known.
    const bool unscaled = unscaled_;
    if (!inf_checked_) CheckAndUnscale(optimizer, /*check_only=*/true);
    device_scaled->StepScaled(unscaled ? torch::Tensor() : scale_, found_inf_);
    device_skips_.add_(found_inf_);
    result.skip_known = false;
    return result;
  }
  Unscale(optimizer);
  if (found_inf_.item<float>() != 0.0f) {
    ++skipped_steps_;
    result.skipped = true;
    return result;
  }
  optimizer.step();
  return result;
}

torch::Tensor GradScaler::InverseScale() const {
  // Double reciprocal then float, as torch.amp.GradScaler.unscale_.
  return scale_.to(torch::kDouble).reciprocal().to(torch::kFloat);
}

torch::Tensor GradScaler::UnscaleFactor() const {
  if (!enabled() || unscaled_ || !scale_.defined()) return {};
  return InverseScale();
}

void GradScaler::Update() {
  // torch.amp.GradScaler refuses an update with no inf check recorded in the
  // step; here such a step leaves the scale alone instead of counting as clean.
  if (!enabled() || !inf_checked_) return;

  if (scale_.is_cuda()) {
    at::_amp_update_scale_(scale_, growth_tracker_, found_inf_, options_.growth_factor,
                           options_.backoff_factor, options_.growth_interval);
  } else {
    // The kernel's arithmetic with tensor ops (no CPU kernel in LibTorch 1.13):
    // float scale times double factor, rounded back to float; growth past
    // float range is refused but still resets the tracker.
    const torch::Tensor found = found_inf_ != 0;
    const torch::Tensor scale_double = scale_.to(torch::kDouble);
    const torch::Tensor backed_off = (scale_double * options_.backoff_factor).to(torch::kFloat);
    const torch::Tensor grown = (scale_double * options_.growth_factor).to(torch::kFloat);
    const torch::Tensor successful = growth_tracker_ + 1;
    const torch::Tensor at_interval = successful == options_.growth_interval;
    const torch::Tensor grow = at_interval.logical_and(torch::isfinite(grown));
    const torch::Tensor new_scale =
        torch::where(found, backed_off, torch::where(grow, grown, scale_));
    const torch::Tensor new_tracker =
        torch::where(found.logical_or(at_interval), torch::zeros_like(successful), successful);
    scale_.copy_(new_scale);
    growth_tracker_.copy_(new_tracker);
  }
  found_inf_.zero_();
  unscaled_ = false;
  inf_checked_ = false;
}

void GradScaler::DiscardStep() {
  if (found_inf_.defined()) found_inf_.zero_();
  unscaled_ = false;
  inf_checked_ = false;
}

double GradScaler::scale() const {
  if (!scale_.defined()) return options_.init_scale;
  return static_cast<double>(scale_.item<float>());
}

int64_t GradScaler::skipped_steps() const {
  if (!device_skips_.defined()) return skipped_steps_;
  return skipped_steps_ + std::llround(device_skips_.item<double>());
}

int64_t GradScaler::growth_tracker() const {
  if (!growth_tracker_.defined()) return 0;
  return static_cast<int64_t>(growth_tracker_.item<int32_t>());
}

void GradScaler::Save(torch::serialize::OutputArchive& archive) const {
  // A disabled scaler has no state, as torch.amp.GradScaler.state_dict().
  if (!enabled()) return;
  archive.write("scale", c10::IValue(scale()));
  archive.write("growth_factor", c10::IValue(options_.growth_factor));
  archive.write("backoff_factor", c10::IValue(options_.backoff_factor));
  archive.write("growth_interval", c10::IValue(options_.growth_interval));
  archive.write("_growth_tracker", c10::IValue(growth_tracker()));
  archive.write("skipped_steps", c10::IValue(skipped_steps()));
}

void GradScaler::Load(torch::serialize::InputArchive& archive) {
  if (!enabled()) return;
  c10::IValue value;
  // A checkpoint written while the scaler was disabled has no keys: the
  // scaler then starts fresh.
  if (!archive.try_read("scale", value)) return;
  // The checkpoint's factors and interval replace the options, as
  // torch.amp.GradScaler.load_state_dict does.
  options_.init_scale = value.toDouble();
  archive.read("growth_factor", value);
  options_.growth_factor = value.toDouble();
  archive.read("backoff_factor", value);
  options_.backoff_factor = value.toDouble();
  archive.read("growth_interval", value);
  options_.growth_interval = value.toInt();
  archive.read("_growth_tracker", value);
  const int64_t tracker = value.toInt();
  skipped_steps_ = archive.try_read("skipped_steps", value) ? value.toInt() : 0;

  // Where training runs is known only at the first Scale(); until then the
  // restored state waits on the CPU and LazyInit moves it.
  const torch::Device device = scale_.defined() ? scale_.device() : torch::Device(torch::kCPU);
  scale_ = torch::full({1}, options_.init_scale,
                       torch::TensorOptions().dtype(torch::kFloat32).device(device));
  growth_tracker_ =
      torch::full({1}, tracker, torch::TensorOptions().dtype(torch::kInt32).device(device));
  found_inf_ = torch::zeros({1}, torch::TensorOptions().dtype(torch::kFloat32).device(device));
  device_skips_ = torch::zeros({1}, torch::TensorOptions().dtype(torch::kFloat64).device(device));
  unscaled_ = false;
  inf_checked_ = false;
}

}  // namespace mantissa
