#include "server/serving/dynamic_batcher.h"

#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/common/logging.h"
#include "server/common/status_macros.h"
#include "server/common/torch_status.h"

namespace mantissa {
namespace {

using Clock = std::chrono::steady_clock;

// What tasks must share to be concatenated: per input, the dtype, device and
// item shape (every dim but the first).
struct ItemKey {
  std::vector<c10::ScalarType> dtypes;
  std::vector<c10::Device> devices;
  std::vector<std::vector<int64_t>> shapes;

  bool operator==(const ItemKey& other) const {
    return dtypes == other.dtypes && devices == other.devices && shapes == other.shapes;
  }
};

// Linux thread names hold 15 characters; "batch:" + the model's start is
// enough to find the thread in top or gdb.
void NameThisThread(const std::string& model) {
#ifdef __linux__
  const std::string name = absl::StrCat("batch:", model).substr(0, 15);
  pthread_setname_np(pthread_self(), name.c_str());
#else
  (void)model;
#endif
}

}  // namespace

struct DynamicBatcher::State {
  struct Queued {
    Task task;
    int64_t items = 0;
    ItemKey key;
    Clock::time_point enqueued;
  };

  explicit State(Options o) : options(std::move(o)) {}

  const Options options;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Queued> queue;  // guarded by mu
  int64_t queued_items = 0;  // guarded by mu
  bool stopping = false;     // guarded by mu
};

absl::StatusOr<std::unique_ptr<DynamicBatcher>> DynamicBatcher::Create(Options options) {
  const std::string where = absl::StrCat("model \"", options.model, "\": ");
  if (!options.run) return absl::InvalidArgumentError(absl::StrCat(where, "batcher without run"));
  if (options.max_batch_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, "batching.max_batch_size ", options.max_batch_size, " is below 1"));
  }
  if (options.max_queue_delay < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(where, "batching.max_queue_delay ",
                                                   absl::FormatDuration(options.max_queue_delay),
                                                   " is negative"));
  }
  auto state = std::make_shared<State>(std::move(options));
  std::unique_ptr<DynamicBatcher> batcher(new DynamicBatcher(state));
  try {
    batcher->thread_ = std::thread(&DynamicBatcher::Loop, state);
  } catch (const std::system_error& e) {
    return absl::ResourceExhaustedError(
        absl::StrCat(where, "cannot start the batcher thread: ", e.what()));
  }
  return batcher;
}

DynamicBatcher::DynamicBatcher(std::shared_ptr<State> state) : state_(std::move(state)) {}

DynamicBatcher::~DynamicBatcher() { Stop(); }

absl::Status DynamicBatcher::Enqueue(Task task) {
  const Options& options = state_->options;
  const std::string where = absl::StrCat("model \"", options.model, "\": ");
  if (!task.done) return absl::InvalidArgumentError(absl::StrCat(where, "task without done"));
  if (task.inputs.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(where, "task without inputs"));
  }
  State::Queued queued;
  for (size_t i = 0; i < task.inputs.size(); ++i) {
    const torch::Tensor& input = task.inputs[i];
    if (!input.defined() || input.dim() < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "task input ", i, " has no batch dimension"));
    }
    const int64_t n = input.size(0);
    if (i == 0) queued.items = n;
    if (n != queued.items || n < 1 || n > options.max_batch_size) {
      return absl::InvalidArgumentError(absl::StrCat(where, "task input ", i, " has ", n,
                                                     " items; expected ", queued.items, " in 1..",
                                                     options.max_batch_size, " for every input"));
    }
    queued.key.dtypes.push_back(input.scalar_type());
    queued.key.devices.push_back(input.device());
    queued.key.shapes.emplace_back(input.sizes().begin() + 1, input.sizes().end());
  }
  queued.task = std::move(task);
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (state_->stopping) {
      return absl::UnavailableError(absl::StrCat(where, "the batcher is shutting down"));
    }
    const int64_t bound = kMaxQueuedBatches * options.max_batch_size;
    if (state_->queued_items + queued.items > bound) {
      return absl::ResourceExhaustedError(
          absl::StrCat(where, state_->queued_items, " items are queued, at most ", bound));
    }
    queued.enqueued = Clock::now();
    state_->queued_items += queued.items;
    state_->queue.push_back(std::move(queued));
    // Under the lock, so that the gauge never sees a batch leave before its
    // requests entered.
    if (options.on_queued) options.on_queued(+1);
  }
  state_->cv.notify_one();
  return absl::OkStatus();
}

void DynamicBatcher::Stop() {
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->stopping = true;
  }
  state_->cv.notify_all();
  std::lock_guard<std::mutex> lock(stop_mu_);
  if (!thread_.joinable()) return;
  if (thread_.get_id() == std::this_thread::get_id()) {
    // Joining itself would deadlock; Loop holds `state` and drains the queue.
    thread_.detach();
    return;
  }
  thread_.join();
}

namespace {

// Concatenates the tasks' inputs and runs the forward; checks that every
// output has the batch's leading dimension.
absl::Status MergeAndRun(const DynamicBatcher::Options& options, const std::string& context,
                         const std::vector<DynamicBatcher::Task>& tasks, int64_t total,
                         std::vector<torch::Tensor>& outputs, bool& ran) {
  std::vector<torch::Tensor> merged;
  RETURN_IF_ERROR(GuardTorch(context, [&]() -> absl::Status {
    if (tasks.size() == 1) {
      merged = tasks[0].inputs;
      return absl::OkStatus();
    }
    for (size_t i = 0; i < tasks[0].inputs.size(); ++i) {
      std::vector<torch::Tensor> parts;
      parts.reserve(tasks.size());
      for (const DynamicBatcher::Task& task : tasks) parts.push_back(task.inputs[i]);
      merged.push_back(torch::cat(parts, 0));
    }
    return absl::OkStatus();
  }));
  ran = true;
  return GuardTorch(context, [&]() -> absl::Status {
    ASSIGN_OR_RETURN(outputs, options.run(merged));
    for (size_t i = 0; i < outputs.size(); ++i) {
      if (!outputs[i].defined() || outputs[i].dim() < 1 || outputs[i].size(0) != total) {
        return absl::InternalError(
            absl::StrCat(context, ": output ", i, " has shape ",
                         outputs[i].defined() ? c10::str(outputs[i].sizes()) : "undefined",
                         ", expected a leading dimension of ", total));
      }
    }
    return absl::OkStatus();
  });
}

// Each task's slice of every output.
absl::Status Split(const std::string& context, std::vector<torch::Tensor>& outputs,
                   const std::vector<int64_t>& items,
                   std::vector<std::vector<torch::Tensor>>& slices) {
  return GuardTorch(context, [&]() -> absl::Status {
    if (slices.size() == 1) {
      slices[0] = std::move(outputs);
      return absl::OkStatus();
    }
    int64_t offset = 0;
    for (size_t t = 0; t < slices.size(); ++t) {
      for (const torch::Tensor& output : outputs) {
        slices[t].push_back(output.narrow(0, offset, items[t]));
      }
      offset += items[t];
    }
    return absl::OkStatus();
  });
}

// Runs one merged batch and answers every task of it. `enqueued[t]` is when
// task t entered the queue. Never throws.
void RunBatch(const DynamicBatcher::Options& options, std::vector<DynamicBatcher::Task>& tasks,
              const std::vector<int64_t>& items, const std::vector<Clock::time_point>& enqueued,
              int64_t total) {
  const std::string context =
      absl::StrCat("model \"", options.model, "\": batch of ", total, " items");
  const Clock::time_point start = Clock::now();
  std::vector<torch::Tensor> outputs;
  bool ran = false;
  absl::Status status = MergeAndRun(options, context, tasks, total, outputs, ran);
  std::vector<std::vector<torch::Tensor>> slices(tasks.size());
  if (status.ok()) status = Split(context, outputs, items, slices);
  const absl::Duration compute = absl::FromChrono(Clock::now() - start);

  if (ran && options.on_batch) {
    const absl::Status s = GuardTorch(context, [&]() -> absl::Status {
      options.on_batch(total, compute);
      return absl::OkStatus();
    });
    if (!s.ok()) LogError(absl::StrCat("on_batch failed: ", s.message()));
  }

  for (size_t t = 0; t < tasks.size(); ++t) {
    if (tasks[t].timing != nullptr) {
      *tasks[t].timing = {absl::FromChrono(start - enqueued[t]), compute, total};
    }
    // A throwing callback must not take the thread (and every later request) down.
    const absl::Status s = GuardTorch(context, [&]() -> absl::Status {
      if (status.ok()) {
        tasks[t].done(std::move(slices[t]));
      } else {
        tasks[t].done(status);
      }
      return absl::OkStatus();
    });
    if (!s.ok()) LogError(absl::StrCat("done callback failed: ", s.message()));
  }
}

}  // namespace

void DynamicBatcher::Loop(std::shared_ptr<State> state) {
  State& s = *state;
  NameThisThread(s.options.model);
  // at::set_num_threads on the main thread set only that thread's OpenMP
  // team size; without this each forward here would fork a team of every
  // core, whose spinning workers take the cores the RPC threads need.
  at::init_num_threads();
  c10::InferenceMode inference_mode;
  const int64_t max = s.options.max_batch_size;
  // Clamped so that time arithmetic cannot overflow; nobody waits a day.
  const Clock::duration delay = std::chrono::duration_cast<Clock::duration>(
      absl::ToChronoNanoseconds(std::min(s.options.max_queue_delay, absl::Hours(24))));

  std::unique_lock<std::mutex> lock(s.mu);
  while (true) {
    s.cv.wait(lock, [&] { return s.stopping || !s.queue.empty(); });
    if (s.queue.empty()) break;  // stopping, and every task has run

    // Wait for the batch to fill or the head's delay to pass. Only this
    // thread removes tasks, so entries already counted stay put and each
    // wakeup only scans what was appended since.
    const ItemKey head = s.queue.front().key;
    const Clock::time_point deadline = s.queue.front().enqueued + delay;
    size_t scanned = 0;
    int64_t compatible = 0;
    while (true) {
      for (; scanned < s.queue.size(); ++scanned) {
        if (s.queue[scanned].key == head) compatible += s.queue[scanned].items;
      }
      if (s.stopping || compatible >= max) break;
      if (s.cv.wait_until(lock, deadline) == std::cv_status::timeout) break;
    }

    // FIFO: the head, then every later compatible task that still fits.
    std::vector<Task> tasks;
    std::vector<int64_t> items;
    std::vector<Clock::time_point> enqueued;
    int64_t total = 0;
    std::deque<State::Queued> rest;
    for (State::Queued& queued : s.queue) {
      if (total + queued.items <= max && queued.key == head) {
        total += queued.items;
        items.push_back(queued.items);
        enqueued.push_back(queued.enqueued);
        tasks.push_back(std::move(queued.task));
      } else {
        rest.push_back(std::move(queued));
      }
    }
    s.queue.swap(rest);
    s.queued_items -= total;
    if (s.options.on_queued) s.options.on_queued(-static_cast<int64_t>(tasks.size()));
    lock.unlock();

    RunBatch(s.options, tasks, items, enqueued, total);
    // Tasks die here, unlocked: their callbacks may hold the last reference
    // to whatever owns this batcher.
    tasks.clear();
    rest.clear();
    lock.lock();
  }
}

}  // namespace mantissa
