#ifndef MANTISSA_SERVER_TRAINING_BATCH_LOADER_H_
#define MANTISSA_SERVER_TRAINING_BATCH_LOADER_H_

#include <torch/torch.h>

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/status/statusor.h"
#include "server/data/dataset.h"

namespace mantissa {

// Prepares training batches ahead of the trainer on a background thread, so
// that reading and converting data overlaps the device's work. Batches are
// numbered globally across epochs: batch b belongs to epoch
// b / batches_per_epoch and holds the items at positions
// [k * batch_size, (k + 1) * batch_size) of that epoch's order, a seeded
// permutation that depends only on (seed, epoch). The data position of a run
// is therefore just a batch number, which is what checkpoints store.
//
// Data parallel (world_size W > 1): batch b is a global batch of up to
// batch_size * W items, positions [k * batch_size * W, (k + 1) * batch_size * W)
// of the epoch's order, and rank r takes every W-th of them from the r-th.
// Every item is thus trained on once per epoch across the ranks, and the
// union of the ranks' batch b is exactly the single-process batch b of
// batch_size * W items. A rank's share of a short last batch may be empty: a
// Batch with 0 rows.
//
// On CUDA the loader pins each batch, and Next() copies the following batch
// to the device on a side stream while the caller computes on the current
// one, so the copy overlaps the step and the host never waits on it. The
// loader thread's CPU allocations are not counted in the job's memory figures
// (they are the dataset's, not the model's).
//
// Next() is called from one thread (the trainer's).
class BatchLoader {
 public:
  struct Options {
    const Dataset* dataset = nullptr;  // not owned; outlives the loader
    int64_t batch_size = 0;
    uint64_t seed = 0;
    int64_t first_batch = 0;     // global number of the first batch to produce
    int64_t end_batch = 0;       // one past the last
    int64_t queue_capacity = 4;  // batches prepared ahead
    torch::Device device = torch::kCPU;
    // This rank's share of every global batch; 0 of 1 = the whole batch.
    int64_t rank = 0;
    int64_t world_size = 1;
  };

  static absl::StatusOr<std::unique_ptr<BatchLoader>> Create(Options options);
  ~BatchLoader();  // stops and joins the thread

  // The next batch on the device. An error (e.g. a dataset that fails to
  // read) is returned once and ends the stream; OUT_OF_RANGE past the end.
  absl::StatusOr<Batch> Next();

  // ceil(dataset size / (batch size * world size)).
  int64_t batches_per_epoch() const { return batches_per_epoch_; }

  // Global batches per epoch of `n` items: ceil(n / (batch_size * world_size)).
  static int64_t BatchesPerEpoch(int64_t n, int64_t batch_size, int64_t world_size);
  // The items of global batch `b` over all ranks (the single-process batch's
  // size): batch_size * world_size but for an epoch's short last batch.
  static int64_t GlobalBatchItems(int64_t n, int64_t batch_size, int64_t world_size, int64_t b);

  // Epoch `epoch`'s order of the `n` items: a permutation drawn from a
  // generator of its own, so it depends on nothing but its arguments.
  static torch::Tensor EpochOrder(int64_t n, uint64_t seed, int64_t epoch);

 private:
  explicit BatchLoader(Options options);
  void Produce();
  // The next prepared batch, in host memory; blocks until there is one.
  absl::StatusOr<Batch> Take();

  // CUDA only (the side stream, the batch being copied on it); null elsewhere.
  struct DeviceCopier;
  std::unique_ptr<DeviceCopier> copier_;

  const Options options_;
  const int64_t batches_per_epoch_;

  std::mutex mu_;
  std::condition_variable changed_;
  std::deque<Batch> queue_;
  absl::Status error_;  // set by the producer; ends the stream
  bool stop_ = false;
  int64_t next_to_return_;
  std::thread thread_;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_TRAINING_BATCH_LOADER_H_
