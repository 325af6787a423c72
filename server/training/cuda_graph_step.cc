#include "server/training/cuda_graph_step.h"

#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"

#ifdef MANTISSA_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace mantissa {
namespace {

#ifdef MANTISSA_WITH_CUDA
constexpr bool kCudaBuild = true;
#else
constexpr bool kCudaBuild = false;
#endif

// optimizer.zero_grad(set_to_none) with one meaning in every LibTorch (1.13's
// zero_grad() cannot unset).
void ClearGradients(torch::optim::Optimizer& optimizer, bool set_to_none) {
  for (auto& group : optimizer.param_groups()) {
    for (auto& param : group.params()) {
      torch::Tensor& grad = param.mutable_grad();
      if (!grad.defined()) continue;
      if (set_to_none) {
        grad = torch::Tensor();
      } else {
        grad.detach_();
        grad.zero_();
      }
    }
  }
}

bool SameShape(const torch::Tensor& a, const torch::Tensor& b) {
  return a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type() && a.device() == b.device();
}

std::string FirstLine(const std::string& text) { return text.substr(0, text.find('\n')); }

#ifdef MANTISSA_WITH_CUDA
// Work queued on `waiter` from now on starts after the work queued on
// `waited` so far; the host does not wait.
void WaitFor(const c10::cuda::CUDAStream& waiter, const c10::cuda::CUDAStream& waited) {
  at::cuda::CUDAEvent event;
  event.record(waited);
  event.block(waiter);
}
#endif

}  // namespace

#ifdef MANTISSA_WITH_CUDA
struct CudaGraphStep::Cuda {
  explicit Cuda(c10::DeviceIndex device)
      : index(device), side(c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device)) {}
  const c10::DeviceIndex index;
  const c10::cuda::CUDAStream side;  // warm-up and capture (never the default stream)
  at::cuda::CUDAGraph graph;
  bool captured = false;
  Output output;  // the captured step's, rewritten by every replay
};
#else
struct CudaGraphStep::Cuda {
  bool captured = false;
};
#endif

std::string CudaGraphStep::UnsupportedReason(const Options& options) {
  if (!options.device.is_cuda()) {
    return absl::StrCat("the job runs on ", options.device.str(),
                        ", CUDA graphs need a CUDA device");
  }
  if (options.device_shared) {
    return absl::StrCat("other jobs may run on ", options.device.str(),
                        " at the same time (--max_concurrent_jobs > 1), and a capture would "
                        "break their random number draws");
  }
  if (options.accumulate_grad_batches > 1) {
    return absl::StrCat("accumulate_grad_batches is ", options.accumulate_grad_batches,
                        ", a captured step takes exactly one batch");
  }
  if (dynamic_cast<FusedOptimizer*>(options.optimizer) == nullptr) {
    return absl::StrCat("optimizer ", options.optimizer_name,
                        " has no fused CUDA kernel here (a captured step needs adam or adamw on "
                        "LibTorch >= 2.2)");
  }
  if (!kCudaBuild) return "this mantissad was built without CUDA";
  return "";
}

absl::StatusOr<std::unique_ptr<CudaGraphStep>> CudaGraphStep::Create(Options options, StepFn step) {
  const std::string reason = UnsupportedReason(options);
  if (!reason.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cuda_graph: ", reason, "; training eagerly"));
  }
  FusedOptimizer* fused = dynamic_cast<FusedOptimizer*>(options.optimizer);
  return std::unique_ptr<CudaGraphStep>(
      new CudaGraphStep(std::move(options), std::move(step), fused));
}

CudaGraphStep::CudaGraphStep(Options options, StepFn step, FusedOptimizer* fused)
    : options_(std::move(options)), step_(std::move(step)), fused_(fused) {
#ifdef MANTISSA_WITH_CUDA
  cuda_ = std::make_unique<Cuda>(options_.device.has_index() ? options_.device.index()
                                                             : c10::cuda::current_device());
#else
  cuda_ = std::make_unique<Cuda>();
#endif
}

CudaGraphStep::~CudaGraphStep() = default;

bool CudaGraphStep::captured() const { return cuda_->captured; }

CudaGraphStep::Output CudaGraphStep::Eager(const torch::Tensor& inputs,
                                           const torch::Tensor& targets) {
  // Once captured, the gradients stay the graph's tensors (zeroed, not
  // unset): every replay writes and reads those.
  ClearGradients(*options_.optimizer, /*set_to_none=*/!captured());
  return step_(inputs, targets);
}

#ifdef MANTISSA_WITH_CUDA

absl::StatusOr<CudaGraphStep::Output> CudaGraphStep::Run(const torch::Tensor& inputs,
                                                         const torch::Tensor& targets) {
  const bool same_shape = static_inputs_.defined() && SameShape(inputs, static_inputs_) &&
                          SameShape(targets, static_targets_);
  if (!same_shape) {
    // Full batches are the largest: a smaller one (an epoch's partial last
    // batch) runs eagerly and leaves the warm-up count alone.
    if (cuda_->captured || (static_inputs_.defined() && inputs.size(0) < static_inputs_.size(0))) {
      return Eager(inputs, targets);
    }
    // The first batch, or a larger one than the first (a run resumed at an
    // epoch's partial last batch): warm up on this shape.
    static_inputs_ = torch::empty_like(inputs);
    static_targets_ = torch::empty_like(targets);
    warmed_up_ = 0;
  }
  c10::cuda::CUDAGuard device_guard(cuda_->index);
  const c10::cuda::CUDAStream current = c10::cuda::getCurrentCUDAStream(cuda_->index);
  static_inputs_.copy_(inputs);
  static_targets_.copy_(targets);

  if (!cuda_->captured) {
    std::optional<Output> eager;
    WaitFor(cuda_->side, current);
    {
      c10::cuda::CUDAStreamGuard on_side(cuda_->side);
      if (warmed_up_ < options_.warmup_steps) {
        ++warmed_up_;
        eager = Eager(static_inputs_, static_targets_);
      } else {
        // The graph reads the lr from the device: set it before capturing,
        // so the captured step records no fill of it.
        fused_->SyncLr();
        ClearGradients(*options_.optimizer, /*set_to_none=*/true);
        try {
          // Thread-local: the batch loader's thread keeps copying while
          // this one captures.
          cuda_->graph.capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
          try {
            cuda_->output = step_(static_inputs_, static_targets_);
          } catch (...) {
            // Ends the invalidated capture; its own error says less.
            try {
              cuda_->graph.capture_end();
            } catch (const c10::Error&) {
            }
            throw;
          }
          cuda_->graph.capture_end();
          cuda_->captured = true;
        } catch (const c10::Error& e) {
          WaitFor(current, cuda_->side);
          return absl::FailedPreconditionError(absl::StrCat(
              "cuda_graph: capturing the training step failed (",
              FirstLine(e.what_without_backtrace()), "); submit the job without cuda_graph"));
        }
      }
    }
    WaitFor(current, cuda_->side);
    if (eager) return *eager;
  }
  // Capturing recorded the step without running it, so it is replayed too.
  fused_->SyncLr();
  cuda_->graph.replay();
  return cuda_->output;
}

#else

absl::StatusOr<CudaGraphStep::Output> CudaGraphStep::Run(const torch::Tensor& inputs,
                                                         const torch::Tensor& targets) {
  return Eager(inputs, targets);  // not reached: Create refuses without CUDA
}

#endif

}  // namespace mantissa
