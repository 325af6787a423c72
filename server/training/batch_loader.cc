#include "server/training/batch_loader.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>

#ifdef MANTISSA_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/common/torch_status.h"
#include "server/training/memory_tracker.h"

namespace mantissa {

#ifdef MANTISSA_WITH_CUDA
// Copies batch b+1 on a side stream while the caller's stream runs step b.
// Each copy ends with an event the consumer's stream waits on, and the
// copied tensors are recorded on the consumer's stream so the caching
// allocator does not reuse them while that stream may still read them.
struct BatchLoader::DeviceCopier {
  explicit DeviceCopier(const torch::Device& device)
      : stream(c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index())) {}

  void Start(Batch host) {
    c10::cuda::CUDAStreamGuard guard(stream);
    in_flight.inputs = host.inputs.to(stream.device(), /*non_blocking=*/true);
    in_flight.targets = host.targets.to(stream.device(), /*non_blocking=*/true);
    copied.record(stream);
    pending = true;
  }

  // The batch started last, usable on the calling thread's current stream.
  Batch Finish() {
    const c10::cuda::CUDAStream consumer = c10::cuda::getCurrentCUDAStream(stream.device_index());
    copied.block(consumer);
    in_flight.inputs.record_stream(consumer);
    in_flight.targets.record_stream(consumer);
    pending = false;
    return std::move(in_flight);
  }

  c10::cuda::CUDAStream stream;
  at::cuda::CUDAEvent copied;
  Batch in_flight;
  bool pending = false;
};
#else
struct BatchLoader::DeviceCopier {
  explicit DeviceCopier(const torch::Device&) {}
};
#endif

absl::StatusOr<std::unique_ptr<BatchLoader>> BatchLoader::Create(Options options) {
  if (options.dataset == nullptr || options.dataset->size() <= 0) {
    return absl::InvalidArgumentError("batch loader: the dataset is empty");
  }
  if (options.batch_size <= 0 || options.queue_capacity <= 0) {
    return absl::InvalidArgumentError("batch loader: batch size and queue capacity must be > 0");
  }
  if (options.world_size < 1 || options.rank < 0 || options.rank >= options.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("batch loader: rank ", options.rank,
                                                   " of world size ", options.world_size,
                                                   "; the rank must be in [0, world size)"));
  }
  if (options.first_batch < 0 || options.end_batch < options.first_batch) {
    return absl::InvalidArgumentError(absl::StrCat("batch loader: bad range [", options.first_batch,
                                                   ", ", options.end_batch, ")"));
  }
  return std::unique_ptr<BatchLoader>(new BatchLoader(std::move(options)));
}

BatchLoader::BatchLoader(Options options)
    // Made before the thread starts: if making it throws, no joinable thread
    // is left behind to terminate the process.
    : copier_(options.device.is_cuda() ? std::make_unique<DeviceCopier>(options.device) : nullptr),
      options_(std::move(options)),
      batches_per_epoch_(
          BatchesPerEpoch(options_.dataset->size(), options_.batch_size, options_.world_size)),
      next_to_return_(options_.first_batch),
      thread_([this] { Produce(); }) {}

BatchLoader::~BatchLoader() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

int64_t BatchLoader::BatchesPerEpoch(int64_t n, int64_t batch_size, int64_t world_size) {
  const int64_t global = batch_size * world_size;
  return (n + global - 1) / global;
}

int64_t BatchLoader::GlobalBatchItems(int64_t n, int64_t batch_size, int64_t world_size,
                                      int64_t b) {
  const int64_t global = batch_size * world_size;
  const int64_t start = (b % BatchesPerEpoch(n, batch_size, world_size)) * global;
  return std::min(global, n - start);
}

torch::Tensor BatchLoader::EpochOrder(int64_t n, uint64_t seed, int64_t epoch) {
  // Distinct epochs get well-separated generator seeds.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed + static_cast<uint64_t>(epoch) *
                                                                          0x9E3779B97F4A7C15ull);
  return torch::randperm(n, gen, torch::TensorOptions(torch::kInt64));
}

void BatchLoader::Produce() {
  MemoryTracker::UncountedScope uncounted;
  const int64_t n = options_.dataset->size();
  const bool pin = options_.device.is_cuda();
  int64_t order_epoch = -1;
  torch::Tensor order;
  for (int64_t b = options_.first_batch; b < options_.end_batch; ++b) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      changed_.wait(lock, [&] {
        return stop_ || static_cast<int64_t>(queue_.size()) < options_.queue_capacity;
      });
      if (stop_) return;
    }
    Batch batch;
    absl::Status status = GuardTorch(absl::StrCat("loading batch ", b), [&] {
      const int64_t epoch = b / batches_per_epoch_;
      if (epoch != order_epoch) {
        order = EpochOrder(n, options_.seed, epoch);
        order_epoch = epoch;
      }
      const int64_t world = options_.world_size;
      const int64_t start = (b % batches_per_epoch_) * options_.batch_size * world;
      const int64_t end = std::min(n, start + options_.batch_size * world);
      // This rank's positions: start + rank, start + rank + world, ... (< end).
      batch = options_.dataset->Get(
          world == 1
              ? order.slice(0, start, end)
              : order.slice(0, std::min(start + options_.rank, end), end, world).contiguous());
      if (pin && batch.inputs.is_cpu()) {
        batch.inputs = batch.inputs.pin_memory();
        batch.targets = batch.targets.pin_memory();
      }
      return absl::OkStatus();
    });
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!status.ok()) {
        error_ = std::move(status);
      } else {
        queue_.push_back(std::move(batch));
      }
    }
    changed_.notify_all();
    if (!status.ok()) return;
  }
}

absl::StatusOr<Batch> BatchLoader::Take() {
  Batch batch;
  {
    std::unique_lock<std::mutex> lock(mu_);
    changed_.wait(lock, [&] { return !queue_.empty() || !error_.ok(); });
    if (queue_.empty()) return error_;
    batch = std::move(queue_.front());
    queue_.pop_front();
  }
  changed_.notify_all();
  return batch;
}

absl::StatusOr<Batch> BatchLoader::Next() {
  if (next_to_return_ >= options_.end_batch) {
    return absl::OutOfRangeError(
        absl::StrCat("batch loader: all batches up to ", options_.end_batch, " were returned"));
  }
  ++next_to_return_;
#ifdef MANTISSA_WITH_CUDA
  if (copier_ != nullptr) {
    if (!copier_->pending) {
      ASSIGN_OR_RETURN(Batch first, Take());
      if (!first.inputs.is_cpu()) {  // the dataset lives on the device: nothing to copy
        copier_.reset();
        return first;
      }
      copier_->Start(std::move(first));
    }
    Batch batch = copier_->Finish();
    if (next_to_return_ < options_.end_batch) {
      // Start the following copy now, so it overlaps the caller's step. An
      // error stays with the loader and is returned by the next Next().
      absl::StatusOr<Batch> following = Take();
      if (following.ok()) copier_->Start(*std::move(following));
    }
    return batch;
  }
#endif
  ASSIGN_OR_RETURN(Batch batch, Take());
  if (!options_.device.is_cpu()) {
    batch.inputs = batch.inputs.to(options_.device, /*non_blocking=*/true);
    batch.targets = batch.targets.to(options_.device, /*non_blocking=*/true);
  }
  return batch;
}

}  // namespace mantissa
