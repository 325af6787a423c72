#ifndef MANTISSA_SERVER_PRECISION_FP8_SCALING_GROUP_H_
#define MANTISSA_SERVER_PRECISION_FP8_SCALING_GROUP_H_

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "server/precision/delayed_scaling.h"
#include "server/precision/fp8_tensor.h"

namespace mantissa {

// The delayed-scaling state of every FP8 tensor of a model (TransformerEngine's
// fp8_meta buffers): one amax history row and one scale per tensor, kept in
// two tensors so that a single Update() after each backward rescales them all
// with a dozen kernels, however many layers there are. (Updated one tensor at
// a time, a GPT's 49 FP8 layers cost over 2,000 kernel launches a step.)
//
// A step quantizes each tensor with the scale earlier steps left and
// Record()s its amax; then Update() turns the recorded amaxes into the next
// scales. Not thread-safe; one job's step uses it.
class Fp8ScalingGroup {
 public:
  Fp8ScalingGroup(const DelayedScaling& recipe, torch::Device device);

  // Adds a tensor (amax history of zeros, scale 1) and returns its row.
  // Reallocates the state: call it while building the model, not per step.
  int64_t Add(Fp8Dtype dtype);

  int64_t size() const { return static_cast<int64_t>(dtypes_.size()); }
  Fp8Dtype dtype(int64_t row) const { return dtypes_[row]; }
  const DelayedScaling& recipe() const { return recipe_; }

  // float32 [size, amax_history_len]; column 0 is the slot of the step
  // being recorded.
  const torch::Tensor& amax_history() const { return amax_history_; }
  // float32 [size]: x * scale is what gets cast to FP8.
  const torch::Tensor& scale() const { return scale_; }

  // Records a step's amax (float32 [], any dtype converts) of row `row`:
  // the slot keeps the largest amax recorded since the last Update(), as
  // when a layer runs twice in a step. One kernel, no host sync.
  void Record(int64_t row, const torch::Tensor& amax);

  // TransformerEngine's amax-and-scale update, on every row at once, where
  // anything was recorded since the last Update() (an evaluation forward
  // records nothing, so it changes no state):
  //   amax' = max(history) (or history[0] for most_recent),
  //   scale = (fp8_max / amax') / 2^margin,
  // keeping the previous scale where amax' is 0 or not finite, and FLT_MAX
  // where the quotient overflows; then rolls each history one step,
  // dropping its oldest entry. (Under max, an inf/NaN amax thus holds the
  // scale until it leaves the history.) Device ops only: no host sync.
  void Update();

  // Data-parallel training: Update() first replaces the recorded amaxes
  // (column 0 of the history) with their max over the ranks through
  // `reducer`, and then runs on every call, recorded or not: a rank whose
  // share of a batch was empty recorded nothing but must join the
  // collective and take the others' amaxes.
  void set_amax_reducer(std::function<void(const torch::Tensor&)> reducer) {
    reducer_ = std::move(reducer);
  }

  // Moves the state; nothing to do where it already is.
  void To(torch::Device device);

  // Overwrites one row with saved tensors (any device). Throws c10::Error
  // when the history length differs.
  void Load(int64_t row, const torch::Tensor& amax_history, const torch::Tensor& scale);

 private:
  DelayedScaling recipe_;
  std::vector<Fp8Dtype> dtypes_;
  torch::Tensor scaled_max_;  // float32 [size]: fp8_max / 2^margin of each row
  torch::Tensor amax_history_;
  torch::Tensor scale_;
  bool recorded_ = false;  // host-side, so checking it costs no sync
  std::function<void(const torch::Tensor&)> reducer_;
};

// One tensor's row of an Fp8ScalingGroup: what an FP8 layer holds for its
// input, weight or output gradient. Copyable; the group outlives its handles.
class Fp8TensorScaling {
 public:
  // Adds a row for the tensor to `group`.
  Fp8TensorScaling(std::shared_ptr<Fp8ScalingGroup> group, Fp8Dtype dtype)
      : group_(std::move(group)), row_(group_->Add(dtype)) {}

  Fp8Dtype dtype() const { return group_->dtype(row_); }
  // Views of the group's state: float32 [] and [amax_history_len].
  torch::Tensor scale() const { return group_->scale().select(0, row_); }
  torch::Tensor amax_history() const { return group_->amax_history().select(0, row_); }

  void Record(const torch::Tensor& amax) { group_->Record(row_, amax); }
  void Load(const torch::Tensor& amax_history, const torch::Tensor& scale) {
    group_->Load(row_, amax_history, scale);
  }

  Fp8ScalingGroup& group() const { return *group_; }

 private:
  std::shared_ptr<Fp8ScalingGroup> group_;
  int64_t row_;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_PRECISION_FP8_SCALING_GROUP_H_
