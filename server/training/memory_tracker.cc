#include "server/training/memory_tracker.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <utility>

#include "server/common/torch_compat.h"

#ifdef MANTISSA_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace mantissa {
namespace {

// Plain atomics with constant initialisation and trivial destructors, so
// tensors freed during static destruction (after main) still find them.
std::atomic<int64_t> g_cpu_current{0};
std::atomic<int64_t> g_cpu_peak{0};
std::atomic<bool> g_cpu_installed{false};
thread_local bool t_uncounted = false;

void RaisePeak(int64_t level) {
  int64_t peak = g_cpu_peak.load(std::memory_order_relaxed);
  while (level > peak &&
         !g_cpu_peak.compare_exchange_weak(peak, level, std::memory_order_relaxed)) {
  }
}

void FreeCounted(void* data);

// Counts bytes in front of the base CPU allocator.
//
// The DataPtrs it returns use the data pointer as their context, because
// LibTorch 1.13's bf16 CPU matmul goes through Allocator::raw_allocate, which
// requires exactly that. Sizes and the base allocator's DataPtrs are kept in
// a table keyed by data pointer instead, sharded to keep lock contention low.
class CountingCpuAllocator final : public c10::Allocator {
 public:
  explicit CountingCpuAllocator(c10::Allocator* base) : base_(base) {}

  c10::DataPtr allocate(size_t n) MANTISSA_ALLOCATOR_ALLOCATE_CONST override {
    c10::DataPtr base = base_->allocate(n);
    // Zero-byte allocations hold no memory, and uncounted ones are not ours:
    // hand them back untouched, to be freed by the base allocator.
    if (n == 0 || base.get() == nullptr || t_uncounted) return base;
    void* data = base.get();
    const c10::Device device = base.device();
    const auto bytes = static_cast<int64_t>(n);
    {
      Shard& shard = ShardFor(data);
      std::lock_guard<std::mutex> lock(shard.mutex);
      shard.live.try_emplace(data, Live{std::move(base), bytes});
    }
    RaisePeak(g_cpu_current.fetch_add(bytes, std::memory_order_relaxed) + bytes);
    return c10::DataPtr(data, data, &FreeCounted, device);
  }

  c10::DeleterFnPtr raw_deleter() const override { return &FreeCounted; }

#if MANTISSA_ALLOCATOR_HAS_COPY_DATA
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    std::memcpy(dest, src, count);
  }
#endif

  void Free(void* data) {
    c10::DataPtr base;  // Released after the lock, through the base deleter.
    {
      Shard& shard = ShardFor(data);
      std::lock_guard<std::mutex> lock(shard.mutex);
      auto it = shard.live.find(data);
      if (it != shard.live.end()) {
        base = std::move(it->second.base);
        g_cpu_current.fetch_sub(it->second.bytes, std::memory_order_relaxed);
        shard.live.erase(it);
      }
    }
    // Not in the table: raw_allocate'd before installation and raw_deallocate'd
    // through the current CPU allocator since; the base allocator owns it.
    if (!base && data != nullptr) {
      if (c10::DeleterFnPtr deleter = base_->raw_deleter()) deleter(data);
    }
  }

 private:
  struct Live {
    c10::DataPtr base;
    int64_t bytes;
  };
  struct Shard {
    std::mutex mutex;
    std::unordered_map<void*, Live> live;
  };
  static constexpr size_t kShards = 16;

  Shard& ShardFor(void* data) const {
    // Allocations are at least 64-byte aligned; mix the rest of the address.
    const uint64_t key = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(data) >> 6);
    return shards_[((key * 0x9E3779B97F4A7C15ull) >> 32) % kShards];
  }

  c10::Allocator* base_;
  mutable std::array<Shard, kShards> shards_;
};

// Set once, before the allocator is installed; never deleted.
std::atomic<CountingCpuAllocator*> g_counting{nullptr};

void FreeCounted(void* data) { g_counting.load(std::memory_order_acquire)->Free(data); }

}  // namespace

void MemoryTracker::InstallCpuCounting() {
  static std::once_flag once;
  std::call_once(once, [] {
    // Never deleted: storages allocated through it may outlive main().
    auto* counting = new CountingCpuAllocator(c10::GetCPUAllocator());
    g_counting.store(counting, std::memory_order_release);
    c10::SetCPUAllocator(counting, /*priority=*/100);
    g_cpu_installed.store(true, std::memory_order_release);
  });
}

MemoryTracker::UncountedScope::UncountedScope() : previous_(t_uncounted) { t_uncounted = true; }
MemoryTracker::UncountedScope::~UncountedScope() { t_uncounted = previous_; }

bool MemoryTracker::CpuCountingInstalled() {
  return g_cpu_installed.load(std::memory_order_acquire);
}

void MemoryTracker::Start() {
  ResetPeak();
  start_bytes_ = AllocatedNow();
}

int64_t MemoryTracker::CurrentBytes() const {
  // Signed on purpose: memory allocated before Start() and freed since makes
  // it negative, which is more honest than clamping to zero.
  return AllocatedNow() - start_bytes_;
}

int64_t MemoryTracker::PeakBytes() const { return std::max<int64_t>(0, PeakNow() - start_bytes_); }

std::string MemoryTracker::Source() const {
  if (device_.is_cpu()) {
    return CpuCountingInstalled() ? "cpu counting allocator"
                                  : "unavailable (cpu counting allocator not installed)";
  }
  if (device_.is_cuda()) {
#ifdef MANTISSA_WITH_CUDA
    return "cuda caching allocator";
#else
    return "unavailable (no CUDA in this build)";
#endif
  }
  return "unavailable (unsupported device " + device_.str() + ")";
}

#ifdef MANTISSA_WITH_CUDA
namespace {

c10::DeviceIndex CudaIndex(const torch::Device& device) {
  // The caching allocator has no per-device state until CUDA is initialised,
  // and a tracker may be started before anything touched the device.
  at::globalContext().lazyInitDevice(c10::DeviceType::CUDA);
  return device.has_index() ? device.index() : c10::cuda::current_device();
}

c10::CachingAllocator::Stat CudaAllocatedStat(const torch::Device& device) {
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(CudaIndex(device));
  return stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)];
}

}  // namespace
#endif

int64_t MemoryTracker::AllocatedNow() const {
  if (device_.is_cpu()) return g_cpu_current.load(std::memory_order_relaxed);
#ifdef MANTISSA_WITH_CUDA
  if (device_.is_cuda()) return CudaAllocatedStat(device_).current;
#endif
  return 0;
}

int64_t MemoryTracker::PeakNow() const {
  if (device_.is_cpu()) return g_cpu_peak.load(std::memory_order_relaxed);
#ifdef MANTISSA_WITH_CUDA
  if (device_.is_cuda()) return CudaAllocatedStat(device_).peak;
#endif
  return 0;
}

void MemoryTracker::ResetPeak() {
  if (device_.is_cpu()) {
    // An allocation racing with this store may be missed by the new peak;
    // Start() is called between runs, where that does not matter.
    g_cpu_peak.store(g_cpu_current.load(std::memory_order_relaxed), std::memory_order_relaxed);
    return;
  }
#ifdef MANTISSA_WITH_CUDA
  if (device_.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(CudaIndex(device_));
#endif
}

int64_t TensorBytes(const std::vector<torch::Tensor>& tensors) {
  int64_t total = 0;
  for (const torch::Tensor& tensor : tensors) {
    if (tensor.defined()) total += tensor.numel() * static_cast<int64_t>(tensor.element_size());
  }
  return total;
}

int64_t GradientBytes(const std::vector<torch::Tensor>& parameters) {
  int64_t total = 0;
  for (const torch::Tensor& parameter : parameters) {
    if (parameter.defined()) total += TensorBytes({parameter.grad()});
  }
  return total;
}

int64_t OptimizerStateBytes(torch::optim::Optimizer& optimizer) {
  int64_t total = 0;
  // The state map's key type differs between versions (string in 1.13,
  // void* in 2.x); only the values are used.
  for (const auto& entry : optimizer.state()) {
    const torch::optim::OptimizerParamState* state = entry.second.get();
    if (const auto* sgd = dynamic_cast<const torch::optim::SGDParamState*>(state)) {
      total += TensorBytes({sgd->momentum_buffer()});
    } else if (const auto* adam = dynamic_cast<const torch::optim::AdamParamState*>(state)) {
      total += TensorBytes({adam->exp_avg(), adam->exp_avg_sq(), adam->max_exp_avg_sq()});
    } else if (const auto* adamw = dynamic_cast<const torch::optim::AdamWParamState*>(state)) {
      total += TensorBytes({adamw->exp_avg(), adamw->exp_avg_sq(), adamw->max_exp_avg_sq()});
    }
  }
  return total;
}

}  // namespace mantissa
