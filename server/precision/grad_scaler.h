#ifndef MANTISSA_SERVER_PRECISION_GRAD_SCALER_H_
#define MANTISSA_SERVER_PRECISION_GRAD_SCALER_H_

#include <torch/torch.h>

#include <functional>
#include <memory>

#include "absl/status/statusor.h"

namespace mantissa {

// The outcome of one optimizer step.
struct OptimizerStepResult {
  // True when the step was not applied (a grad scaler found inf/NaN
  // gradients). Fabric's optimizer_step cannot tell its caller this.
  bool skipped = false;
  // False when the skip was decided on the device (a DeviceScaledOptimizer
  // with the grad scaler on): `skipped` is then false whatever happened, and
  // the skip shows only in GradScaler::skipped_steps(), read at progress time.
  bool skip_known = true;
};

// An optimizer that unscales the gradients and skips its step on the device,
// so the grad scaler need not read found-inf back (torch.optim's
// `_step_supports_amp_scaling`): the fused Adam/AdamW kernels.
class DeviceScaledOptimizer {
 public:
  virtual ~DeviceScaledOptimizer() = default;
  // One step with the gradients divided by `grad_scale` (undefined: they are
  // unscaled already) and nothing changed where `found_inf` is nonzero.
  virtual void StepScaled(const torch::Tensor& grad_scale, const torch::Tensor& found_inf) = 0;
};

// Dynamic loss scaling with torch.amp.GradScaler's exact semantics:
//   Scale(loss) multiplies by the current scale; Unscale (at most once per
//   step) divides the gradients by it, with inv_scale computed in double and
//   then rounded to float, and records whether any gradient is inf/NaN; Step
//   skips the optimizer when one was; Update backs the scale off by
//   backoff_factor after a skipped step (resetting the growth tracker) and,
//   after growth_interval clean steps in a row, multiplies it by
//   growth_factor if the result is finite (resetting the tracker either way).
// The scale and growth tracker are float32/int32 tensors on the gradients'
// device. On CUDA the fused ATen ops (_amp_foreach_non_finite_check_and_unscale_,
// _amp_update_scale_) do the work without per-tensor host syncs; LibTorch 1.13
// has no CPU kernels for them, so CPU tensors take an implementation with the
// same results. Disabled, every method passes through.
// One instance per job, used from the job's thread.
class GradScaler {
 public:
  struct Options {
    bool enabled = true;
    double init_scale = 65536.0;
    double growth_factor = 2.0;
    double backoff_factor = 0.5;
    int64_t growth_interval = 2000;
  };

  // INVALID_ARGUMENT naming the field for init_scale <= 0 or not finite,
  // growth_factor <= 1, backoff_factor outside (0, 1), growth_interval < 1.
  static absl::Status CheckOptions(const Options& options);
  // CheckOptions, then the scaler.
  static absl::StatusOr<std::unique_ptr<GradScaler>> Create(Options options);

  bool enabled() const { return options_.enabled; }
  const Options& options() const { return options_; }

  // loss * scale (the loss itself when disabled).
  torch::Tensor Scale(const torch::Tensor& loss);

  // Divides every gradient of `optimizer`'s parameters by the scale and
  // records found-inf. A second call in the same step does nothing.
  void Unscale(torch::optim::Optimizer& optimizer);

  // Unscales if not done yet, then runs optimizer.step() unless a gradient
  // was inf/NaN; reads one scalar back to the host (as
  // torch.amp.GradScaler.step does) and says whether the step was skipped.
  // A DeviceScaledOptimizer instead gets the scale and found-inf tensors (as
  // torch.amp.GradScaler does for fused optimizers: an inf check without
  // unscaling, then the kernel unscales), the skip is counted on the device,
  // and the result says that it is not known.
  OptimizerStepResult Step(torch::optim::Optimizer& optimizer);

  // Adjusts the scale from this step's found-inf and starts a new step.
  void Update();

  // Data-parallel training: each step's found-inf (float32 [1] on the
  // scale's device) goes through `reducer`, which replaces it in place with
  // its max over the ranks, before Step decides; so a gradient overflow on
  // any rank skips the step, and backs the scale off, on every rank. Unset:
  // the local found-inf decides.
  void set_found_inf_reducer(std::function<void(const torch::Tensor&)> reducer) {
    found_inf_reducer_ = std::move(reducer);
  }

  // The factor that unscales this step's gradients (1/scale, computed as
  // Unscale does, float32 [1] on the scale's device) while they are still
  // scaled; undefined once Unscale ran in this step, before the first
  // Scale, and when the scaler is off. No host sync.
  torch::Tensor UnscaleFactor() const;

  // This step's found-inf (float32 [1]; nonzero: the step is skipped), valid
  // from Step until Update; undefined before the first check.
  const torch::Tensor& found_inf() const { return found_inf_; }

  // Forgets a step abandoned half-way (a failed CUDA graph capture ran its
  // host code without its kernels): the next Unscale starts afresh.
  void DiscardStep();

  // Host copies; each reads the device (a sync on CUDA): call at progress
  // time, not every step. skipped_steps counts both the skips decided on the
  // host and those decided on the device.
  double scale() const;
  int64_t growth_tracker() const;
  int64_t skipped_steps() const;

  // The scaler's state, as torch.amp.GradScaler.state_dict(): scale,
  // growth_factor, backoff_factor, growth_interval, _growth_tracker, plus
  // skipped_steps.
  void Save(torch::serialize::OutputArchive& archive) const;
  void Load(torch::serialize::InputArchive& archive);

 private:
  explicit GradScaler(Options options) : options_(options) {}
  void LazyInit(const torch::Device& device);
  // Records found-inf for this step and, unless `check_only`, divides the
  // gradients by the scale (check_only: by 1, as torch.amp.GradScaler's
  // _check_inf_per_device before a fused step).
  void CheckAndUnscale(torch::optim::Optimizer& optimizer, bool check_only);
  // 1/scale, float32 [1], computed as Unscale divides by it.
  torch::Tensor InverseScale() const;

  Options options_;
  torch::Tensor scale_;           // float32 [1]
  torch::Tensor growth_tracker_;  // int32 [1]
  torch::Tensor found_inf_;       // float32 [1], this step's
  torch::Tensor device_skips_;    // float64 [1]: skips decided on the device
  bool unscaled_ = false;         // the gradients were divided by the scale in this step
  bool inf_checked_ = false;      // found_inf_ holds this step's check
  int64_t skipped_steps_ = 0;     // skips decided on the host (and restored ones)
  std::function<void(const torch::Tensor&)> found_inf_reducer_;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_PRECISION_GRAD_SCALER_H_
