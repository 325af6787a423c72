#ifndef MANTISSA_SERVER_PRECISION_PRECISION_PLUGIN_H_
#define MANTISSA_SERVER_PRECISION_PRECISION_PLUGIN_H_

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "server/models/model.h"
#include "server/precision/grad_scaler.h"

namespace mantissa {

// A scope set up by a plugin (autocast, default dtype) and undone when the
// guard is destroyed: the C++ form of Fabric's context managers.
class PrecisionGuard {
 public:
  virtual ~PrecisionGuard() = default;
};

// Mirrors Lightning Fabric's `Precision` plugin: every hook defaults to what
// 32-true does (nothing), and each precision mode is one subclass in its own
// file overriding only what differs. The trainer calls the hooks in this
// order every step:
//   ConvertInput -> ForwardGuard{ model.Forward } -> ConvertOutput -> loss
//   -> Backward -> [UnscaleGradients -> clip] -> OptimizerStep
// (data parallel: the gradients are summed over the ranks after the last
// Backward of the step, before UnscaleGradients).
// Loss scaling lives here rather than in the mixed plugin alone (where Fabric
// keeps it) so that a job may enable the grad scaler in any mode.
// A plugin instance belongs to one job and is used from one thread.
class PrecisionPlugin {
 public:
  virtual ~PrecisionPlugin() = default;

  // Canonical Fabric value, e.g. "32-true".
  virtual std::string name() const = 0;

  // Dtype of the parameters after ConvertModule, and of the compute (the
  // autocast dtype in the mixed modes).
  virtual torch::Dtype parameter_dtype() const { return torch::kFloat32; }
  virtual torch::Dtype compute_dtype() const { return parameter_dtype(); }

  // The job's grad scaler; Backward, UnscaleGradients and OptimizerStep use
  // it when it is enabled.
  void set_grad_scaler(std::unique_ptr<GradScaler> scaler) { scaler_ = std::move(scaler); }
  GradScaler* grad_scaler() const { return scaler_.get(); }

  // Fabric: convert_module. Casts the model's parameters where the mode
  // keeps weights in another dtype (64-true, the *-true half modes).
  virtual void ConvertModule(Model& model) {}

  // What the plugin could not do as the mode asks (e.g. layers FP8 cannot
  // run), found by ConvertModule; the trainer reports them on the job.
  const std::vector<std::string>& warnings() const { return warnings_; }

  // Fabric: module_init_context. Parameters created inside the guard are
  // created directly in the mode's dtype.
  virtual std::unique_ptr<PrecisionGuard> ModuleInitGuard() { return nullptr; }

  // Fabric: forward_context (autocast in the mixed modes).
  virtual std::unique_ptr<PrecisionGuard> ForwardGuard() { return nullptr; }

  // Fabric: convert_input. Floating inputs to the compute dtype.
  virtual torch::Tensor ConvertInput(const torch::Tensor& input) { return input; }

  // Fabric: convert_output. Floating outputs back to the default dtype.
  virtual torch::Tensor ConvertOutput(const torch::Tensor& output) { return output; }

  // Fabric: backward (pre_backward/post_backward folded in). Scales the
  // loss first when the grad scaler is on.
  virtual void Backward(const torch::Tensor& loss) {
    (scaling() ? scaler_->Scale(loss) : loss).backward();
  }

  // Fabric: unscale_gradients. Called before gradient clipping.
  virtual void UnscaleGradients(torch::optim::Optimizer& optimizer) {
    if (scaling()) scaler_->Unscale(optimizer);
  }

  // Fabric: optimizer_step. With the scaler: step unless a gradient is
  // inf/NaN, then update the scale. (OptimizerStepResult is in grad_scaler.h:
  // a fused optimizer's skip is known only on the device.)
  virtual OptimizerStepResult OptimizerStep(torch::optim::Optimizer& optimizer) {
    if (!scaling()) {
      optimizer.step();
      return {};
    }
    const OptimizerStepResult result = scaler_->Step(optimizer);
    scaler_->Update();
    return result;
  }

  // Data-parallel training: `reducer` replaces a float32 tensor, in place,
  // with its elementwise max over the ranks. Plugins with FP8 scaling state
  // reduce each step's amaxes with it before updating their scales, so every
  // rank quantizes with the same scales (TransformerEngine's amax reduction).
  // Collectives must run the same number of times on every rank: a plugin
  // that takes a reducer calls it once per OptimizerStep. Default: nothing
  // to reduce.
  virtual void SetAmaxReducer(std::function<void(const torch::Tensor&)> reducer) {}

  // Bytes of state the plugin keeps beside the model and the optimizer
  // (bf16_update=kahan's compensation buffers), for the memory report.
  virtual int64_t StateBytes() const { return 0; }

  // JobSpec.bf16_update as the plugin runs it: "nearest" unless a true-half
  // plugin rounds otherwise.
  virtual std::string update_rounding() const { return "nearest"; }

  // Fabric: state_dict / load_state_dict. The plugin's own state (the grad
  // scaler's), saved with checkpoints.
  virtual void SaveState(torch::serialize::OutputArchive& archive) const {
    if (scaler_) {
      torch::serialize::OutputArchive scaler;
      scaler_->Save(scaler);
      archive.write("grad_scaler", scaler);
    }
  }
  virtual void LoadState(torch::serialize::InputArchive& archive) {
    torch::serialize::InputArchive scaler;
    if (scaler_ && archive.try_read("grad_scaler", scaler)) scaler_->Load(scaler);
  }

 protected:
  bool scaling() const { return scaler_ != nullptr && scaler_->enabled(); }
  void AddWarning(std::string warning) { warnings_.push_back(std::move(warning)); }

 private:
  std::unique_ptr<GradScaler> scaler_;
  std::vector<std::string> warnings_;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_PRECISION_PRECISION_PLUGIN_H_
