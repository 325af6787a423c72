#ifndef MANTISSA_SERVER_PRECISION_GRAD_SCALER_H_
#define MANTISSA_SERVER_PRECISION_GRAD_SCALER_H_

#include <torch/torch.h>

#include <memory>

#include "absl/status/statusor.h"

namespace mantissa {

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
  static absl::StatusOr<std::unique_ptr<GradScaler>> Create(Options options);

  bool enabled() const { return options_.enabled; }
  const Options& options() const { return options_; }

  // loss * scale (the loss itself when disabled).
  torch::Tensor Scale(const torch::Tensor& loss);

  // Divides every gradient of `optimizer`'s parameters by the scale and
  // records found-inf. A second call in the same step does nothing.
  void Unscale(torch::optim::Optimizer& optimizer);

  // Unscales if not done yet, then runs optimizer.step() unless a gradient
  // was inf/NaN. Returns true when the step was skipped. Reads one scalar
  // back to the host (as torch.amp.GradScaler.step does).
  bool Step(torch::optim::Optimizer& optimizer);

  // Adjusts the scale from this step's found-inf and starts a new step.
  void Update();

  // Host copies; each reads the device (a sync on CUDA): call at progress
  // time, not every step.
  double scale() const;
  int64_t growth_tracker() const;
  int64_t skipped_steps() const { return skipped_steps_; }

  // The scaler's state, as torch.amp.GradScaler.state_dict(): scale,
  // growth_factor, backoff_factor, growth_interval, _growth_tracker, plus
  // skipped_steps.
  void Save(torch::serialize::OutputArchive& archive) const;
  void Load(torch::serialize::InputArchive& archive);

 private:
  explicit GradScaler(Options options) : options_(options) {}
  void LazyInit(const torch::Device& device);

  Options options_;
  torch::Tensor scale_;           // float32 [1]
  torch::Tensor growth_tracker_;  // int32 [1]
  torch::Tensor found_inf_;       // float32 [1], this step's
  bool unscaled_ = false;         // Unscale ran in this step
  int64_t skipped_steps_ = 0;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_PRECISION_GRAD_SCALER_H_
