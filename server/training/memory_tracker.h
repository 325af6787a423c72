#ifndef MANTISSA_SERVER_TRAINING_MEMORY_TRACKER_H_
#define MANTISSA_SERVER_TRAINING_MEMORY_TRACKER_H_

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace mantissa {

// Measures the memory a training run allocates on its device.
//
// CPU: a counting c10::Allocator installed once in front of LibTorch's CPU
// allocator (c10::SetCPUAllocator with priority 100). Every DataPtr it hands
// out uses its data pointer as context (LibTorch 1.13's raw_allocate, used by
// bf16 matmul, requires that); sizes and the base allocator's DataPtrs live
// in a table keyed by data pointer, and the deleter subtracts the size and
// frees through the base allocator. Counters are atomics: current bytes and a
// resettable peak.
// CUDA (MANTISSA_WITH_CUDA builds): the caching allocator's allocated-bytes
// statistics for the device (current, peak; reset per run).
//
// Counters are process-wide: with several jobs on one device at once, each
// job's figures include the others' allocations.
class MemoryTracker {
 public:
  // Installs the counting CPU allocator. Idempotent and thread-safe; call
  // before tensors are allocated (at start-up). Tensors allocated earlier
  // are freed through their own deleters and simply not counted.
  static void InstallCpuCounting();
  static bool CpuCountingInstalled();

  // While alive, CPU allocations made by this thread are not counted (a
  // data loader thread's batches are the dataset's memory, not the model's).
  class UncountedScope {
   public:
    UncountedScope();
    ~UncountedScope();
    UncountedScope(const UncountedScope&) = delete;
    UncountedScope& operator=(const UncountedScope&) = delete;

   private:
    const bool previous_;
  };

  explicit MemoryTracker(torch::Device device) : device_(device) {}

  // Starts a measurement: the peak is reset to the current level, and that
  // level becomes the reference the figures below are relative to.
  void Start();
  // Lowers the peak to the current level, keeping Start()'s reference: drops
  // a transient spike (e.g. reading a checkpoint) from the figures.
  void RestartPeak() { ResetPeak(); }
  // Bytes allocated now, minus the level at Start().
  int64_t CurrentBytes() const;
  // Highest allocated bytes since Start(), minus the level at Start().
  int64_t PeakBytes() const;
  // "cpu counting allocator" or "cuda caching allocator".
  std::string Source() const;

 private:
  int64_t AllocatedNow() const;
  int64_t PeakNow() const;
  void ResetPeak();

  torch::Device device_;
  int64_t start_bytes_ = 0;
};

// Bytes held by tensors, counting storage once per tensor (numel x element
// size); undefined tensors count 0.
int64_t TensorBytes(const std::vector<torch::Tensor>& tensors);
// The .grad of each tensor.
int64_t GradientBytes(const std::vector<torch::Tensor>& parameters);
// State tensors of torch::optim's SGD (momentum_buffer), Adam and AdamW
// (exp_avg, exp_avg_sq, max_exp_avg_sq).
int64_t OptimizerStateBytes(torch::optim::Optimizer& optimizer);

}  // namespace mantissa

#endif  // MANTISSA_SERVER_TRAINING_MEMORY_TRACKER_H_
