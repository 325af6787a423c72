#ifndef MANTISSA_SERVER_TRAINING_CUDA_GRAPH_STEP_H_
#define MANTISSA_SERVER_TRAINING_CUDA_GRAPH_STEP_H_

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/precision/grad_scaler.h"
#include "server/training/fused_adam.h"

namespace mantissa {

// A whole training step (forward, loss, backward, clipping, the grad
// scaler's ops and the fused optimizer step) captured once as a CUDA graph
// and replayed for every batch of the same shape: one launch per step and no
// host work (JobSpec.cuda_graph).
//
// PyTorch's whole-network capture recipe: the first `warmup_steps` steps run
// eagerly on a side stream (so lazily created state, such as the optimizer's
// moments and cuBLAS workspaces, exists before capture), the next one is
// captured on that stream with the gradients unset (backward then allocates
// them from the graph's private pool) and replayed, and every later batch is
// copied into the static input/target buffers and the graph replayed. The lr
// is the fused optimizer's device tensor, refreshed before each replay, so
// the schedule still applies. A batch of another shape (an epoch's partial
// last batch) runs eagerly on the same parameters, gradients and state.
//
// When the capture throws (an op that syncs or is not capturable), Run fails
// and so does the job: a failed capture can leave the device's RNG and
// allocator in capture state, so training on eagerly is not safe. A capture
// also puts the device's shared RNG generator into capture mode, which breaks
// the random draws of any other job on that device, so a device that other
// jobs may share is refused up front.
//
// One instance per job, used from the job's thread.
class CudaGraphStep {
 public:
  struct Output {
    // The batch's loss. After a replay, the graph's own output tensor: read
    // it (or queue work on it) before the next Run().
    torch::Tensor loss;
    OptimizerStepResult step;
  };
  // One step on these batch tensors, gradients already cleared: forward,
  // loss, backward, optimizer step. Must not read the device from the host.
  using StepFn = std::function<Output(const torch::Tensor& inputs, const torch::Tensor& targets)>;

  struct Options {
    torch::Device device = torch::kCPU;
    int64_t accumulate_grad_batches = 1;
    std::string optimizer_name;                    // for the messages
    torch::optim::Optimizer* optimizer = nullptr;  // the job's
    GradScaler* scaler = nullptr;                  // null or disabled: none
    int64_t warmup_steps = 3;
    // Other jobs may run on the device at the same time (--max_concurrent_jobs > 1).
    bool device_shared = false;
  };

  // Why a job with `options` trains eagerly instead, or "" when it can be
  // captured: not a CUDA device, a shared device, accumulate_grad_batches > 1,
  // an optimizer without fused kernels, or a build without CUDA.
  static std::string UnsupportedReason(const Options& options);

  // FAILED_PRECONDITION "cuda_graph: <reason>; training eagerly" when
  // UnsupportedReason says so.
  static absl::StatusOr<std::unique_ptr<CudaGraphStep>> Create(Options options, StepFn step);
  ~CudaGraphStep();

  // Trains on one batch (on the device), eagerly or by replay as above.
  // FAILED_PRECONDITION naming the cause when the capture fails.
  absl::StatusOr<Output> Run(const torch::Tensor& inputs, const torch::Tensor& targets);

  bool captured() const;

 private:
  struct Cuda;  // the graph and the side stream; CUDA builds only

  CudaGraphStep(Options options, StepFn step, FusedOptimizer* fused);
  Output Eager(const torch::Tensor& inputs, const torch::Tensor& targets);

  const Options options_;
  const StepFn step_;
  FusedOptimizer* const fused_;  // options_.optimizer's fused interface
  std::unique_ptr<Cuda> cuda_;
  torch::Tensor static_inputs_;
  torch::Tensor static_targets_;
  int64_t warmed_up_ = 0;  // eager steps run on the current static shape
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_TRAINING_CUDA_GRAPH_STEP_H_
