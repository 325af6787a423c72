#ifndef MANTISSA_SERVER_SERVING_DYNAMIC_BATCHER_H_
#define MANTISSA_SERVER_SERVING_DYNAMIC_BATCHER_H_

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace mantissa {

// Merges concurrent requests to one model into one forward, as Triton's
// dynamic batcher does: the first queued request waits at most
// `max_queue_delay` for others, and a batch closes early once it holds
// `max_batch_size` items. Requests whose items have different shapes (e.g.
// token windows of other lengths) go into separate batches. Forwards run on
// the batcher's own thread, never on a gRPC reactor or a training worker.
class DynamicBatcher {
 public:
  // Runs one merged batch: every input concatenated along dim 0. Returns
  // the outputs, each with the same leading dimension as the inputs. Called
  // on the batcher thread, under c10::InferenceMode.
  using RunFn =
      std::function<absl::StatusOr<std::vector<torch::Tensor>>(const std::vector<torch::Tensor>&)>;

  struct Options {
    std::string model;  // names the thread and errors
    int64_t max_batch_size = 64;
    absl::Duration max_queue_delay = absl::Microseconds(500);
    RunFn run;
    // After each forward (also a failed one), on the batcher thread, with
    // the merged batch's item count and how long it took: concatenating the
    // inputs, the forward and splitting the outputs.
    std::function<void(int64_t items, absl::Duration compute)> on_batch;
    // Whenever requests enter (+1 per accepted Enqueue) or leave (-k when a
    // batch takes k, also while Stop drains the queue), so that a gauge can
    // follow the queue depth of every batcher of one model; the deltas sum
    // to 0 once the batcher is idle. Called under the batcher's lock: it
    // must be cheap, must not throw and must not call into the batcher.
    std::function<void(int64_t delta)> on_queued;
  };

  // Where a task's time went; the batcher fills it in before `done` runs.
  struct Timing {
    absl::Duration queue;     // from Enqueue to its batch's forward starting
    absl::Duration compute;   // that forward, including splitting the outputs
    int64_t batch_items = 0;  // items of the merged batch
  };

  struct Task {
    std::vector<torch::Tensor> inputs;  // each [n, ...], the same n <= max_batch_size
    // This task's slice of every output, or the forward's error. Called on
    // the batcher thread; must not block.
    std::function<void(absl::StatusOr<std::vector<torch::Tensor>>)> done;
    // Optional; written on the batcher thread just before `done` is called,
    // so `done` may read it (the owner keeps it alive, e.g. in done's capture).
    Timing* timing = nullptr;
  };

  // Starts the batcher thread. INVALID_ARGUMENT without `run`, or for a
  // max_batch_size below 1 or a negative max_queue_delay.
  static absl::StatusOr<std::unique_ptr<DynamicBatcher>> Create(Options options);
  ~DynamicBatcher();  // Stop()

  // Queues `task`; never waits for a forward. UNAVAILABLE after Stop (and
  // then `done` is not called). INVALID_ARGUMENT when the inputs are empty or
  // do not share one leading size in 1..max_batch_size; RESOURCE_EXHAUSTED
  // when more than kMaxQueuedBatches * max_batch_size items would be queued.
  absl::Status Enqueue(Task task);

  // Refuses new tasks, runs every queued one, then joins the thread.
  // Idempotent. On the batcher thread itself (the last reference dropped in
  // a `done` callback) it cannot join: the thread drains the queue and exits
  // on its own, keeping the shared state alive until then.
  void Stop();

  static constexpr int64_t kMaxQueuedBatches = 64;

 private:
  // Everything the thread touches; shared so that it outlives the batcher
  // object when the thread has to finish without being joined.
  struct State;

  explicit DynamicBatcher(std::shared_ptr<State> state);
  static void Loop(std::shared_ptr<State> state);

  const std::shared_ptr<State> state_;
  std::mutex stop_mu_;  // serialises joining
  std::thread thread_;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_SERVING_DYNAMIC_BATCHER_H_
