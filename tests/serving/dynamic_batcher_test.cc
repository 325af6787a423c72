#include "server/serving/dynamic_batcher.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "tests/testing/status_matchers.h"

namespace mantissa {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::StatusIs;

using Result = absl::StatusOr<std::vector<torch::Tensor>>;

// Long enough never to pass in a test: batches close because they are full,
// because the queue delay is zero, or because of Stop.
const absl::Duration kForever = absl::Hours(1);

class Gate {
 public:
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return open_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

// A task whose result lands in a future. Inputs: float rows [n, 3] unique to
// `id`, plus an int64 [n, 2] input when `two_inputs`.
struct PendingTask {
  std::vector<torch::Tensor> inputs;
  std::shared_ptr<std::promise<Result>> promise = std::make_shared<std::promise<Result>>();
  std::future<Result> future = promise->get_future();

  DynamicBatcher::Task Task() const {
    auto p = promise;
    return {inputs, [p](Result r) { p->set_value(std::move(r)); }};
  }

  // A task that carries a Timing; `seen` is what `done` read from it.
  DynamicBatcher::Task TimedTask() {
    auto p = promise;
    auto t = timing;
    auto s = seen;
    DynamicBatcher::Task task{inputs, [p, t, s](Result r) {
                                *s = *t;
                                p->set_value(std::move(r));
                              }};
    task.timing = timing.get();
    return task;
  }
  std::shared_ptr<DynamicBatcher::Timing> timing = std::make_shared<DynamicBatcher::Timing>();
  std::shared_ptr<DynamicBatcher::Timing> seen = std::make_shared<DynamicBatcher::Timing>();

  // Waits for the result; fails rather than hangs.
  Result Get() {
    if (future.wait_for(std::chrono::seconds(60)) != std::future_status::ready) {
      return absl::DeadlineExceededError("task not answered within 60 s");
    }
    return future.get();
  }
};

std::unique_ptr<PendingTask> MakeTask(int id, int64_t rows, int64_t width = 3,
                                      bool two_inputs = false) {
  auto task = std::make_unique<PendingTask>();
  task->inputs.push_back(torch::arange(rows * width, torch::kFloat).reshape({rows, width}) +
                         1000.0 * id);
  if (two_inputs) {
    task->inputs.push_back(torch::arange(rows * 2, torch::kLong).reshape({rows, 2}) + 100 * id);
  }
  return task;
}

// The answer of the default run function: every input doubled, int64 inputs
// plus one.
void ExpectAnswered(PendingTask& task) {
  Result result = task.Get();
  ASSERT_OK(result);
  ASSERT_EQ(result->size(), task.inputs.size());
  EXPECT_TRUE(torch::equal((*result)[0], task.inputs[0] * 2));
  if (task.inputs.size() > 1) {
    EXPECT_TRUE(torch::equal((*result)[1], task.inputs[1] + 1));
  }
}

class DynamicBatcherTest : public ::testing::Test {
 protected:
  // A batcher whose run fn holds its first forward until Release(), so that
  // the tests can queue tasks while the thread is busy.
  std::unique_ptr<DynamicBatcher> Start(int64_t max_batch_size, absl::Duration delay) {
    DynamicBatcher::Options options;
    options.model = "test-model-with-a-long-name";
    options.max_batch_size = max_batch_size;
    options.max_queue_delay = delay;
    options.run = [this](const std::vector<torch::Tensor>& inputs) -> Result {
      {
        std::lock_guard<std::mutex> lock(mu_);
        inference_mode_ = inference_mode_ && c10::InferenceMode::is_enabled();
        run_shapes_.push_back(inputs[0].sizes().vec());
      }
      const bool first = calls_++ == 0;
      if (first) {
        first_started_.Open();
        release_.Wait();
      }
      if (run_ && !first) return run_(inputs);
      std::vector<torch::Tensor> outputs = {inputs[0] * 2};
      if (inputs.size() > 1) outputs.push_back(inputs[1] + 1);
      return outputs;
    };
    options.on_batch = [this](int64_t items, absl::Duration compute) {
      std::lock_guard<std::mutex> lock(mu_);
      batches_.push_back(items);
      computes_.push_back(compute);
    };
    options.on_queued = [this](int64_t delta) {
      const int64_t depth = depth_ += delta;
      int64_t low = min_depth_.load();
      while (depth < low && !min_depth_.compare_exchange_weak(low, depth)) {
      }
      int64_t high = max_depth_.load();
      while (depth > high && !max_depth_.compare_exchange_weak(high, depth)) {
      }
    };
    auto batcher = DynamicBatcher::Create(std::move(options));
    EXPECT_OK(batcher);
    return batcher.ok() ? std::move(*batcher) : nullptr;
  }

  // Queues a one-row task and waits until its forward runs (and blocks).
  void Occupy(DynamicBatcher& batcher, int64_t width = 3) {
    blocker_ = MakeTask(999, 1, width);
    ASSERT_OK(batcher.Enqueue(blocker_->Task()));
    first_started_.Wait();
  }

  void Release() { release_.Open(); }

  std::vector<int64_t> Batches() {
    std::lock_guard<std::mutex> lock(mu_);
    return batches_;
  }
  std::vector<absl::Duration> Computes() {
    std::lock_guard<std::mutex> lock(mu_);
    return computes_;
  }
  std::vector<std::vector<int64_t>> RunShapes() {
    std::lock_guard<std::mutex> lock(mu_);
    return run_shapes_;
  }

  // Replaces the default doubling forward for every call but the first.
  DynamicBatcher::RunFn run_;
  std::unique_ptr<PendingTask> blocker_;
  bool inference_mode_ = true;
  // The sum of every on_queued delta, and its extremes.
  std::atomic<int64_t> depth_{0};
  std::atomic<int64_t> min_depth_{0};
  std::atomic<int64_t> max_depth_{0};

 private:
  std::mutex mu_;
  std::vector<int64_t> batches_;
  std::vector<absl::Duration> computes_;
  std::vector<std::vector<int64_t>> run_shapes_;
  std::atomic<int> calls_{0};
  Gate first_started_;
  Gate release_;
};

TEST_F(DynamicBatcherTest, ConcurrentRequestsMergeIntoOneForward) {
  auto batcher = Start(64, absl::ZeroDuration());
  ASSERT_NE(batcher, nullptr);
  Occupy(*batcher);

  constexpr int kThreads = 8;
  std::vector<std::unique_ptr<PendingTask>> tasks;
  int64_t total = 0;
  for (int i = 0; i < kThreads; ++i) {
    tasks.push_back(MakeTask(i, 1 + i % 3, 3, /*two_inputs=*/true));
    total += 1 + i % 3;
  }
  std::vector<std::thread> threads;
  std::vector<absl::Status> enqueued(kThreads);
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] { enqueued[i] = batcher->Enqueue(tasks[i]->Task()); });
  }
  for (std::thread& t : threads) t.join();
  for (const absl::Status& s : enqueued) ASSERT_OK(s);
  Release();

  for (auto& task : tasks) ExpectAnswered(*task);
  ExpectAnswered(*blocker_);
  // Everything queued behind the busy forward went into one batch.
  EXPECT_THAT(Batches(), ElementsAre(1, total));
  EXPECT_TRUE(inference_mode_);
}

TEST_F(DynamicBatcherTest, FullBatchClosesBeforeTheQueueDelay) {
  auto batcher = Start(4, kForever);
  ASSERT_NE(batcher, nullptr);
  Release();
  std::vector<std::unique_ptr<PendingTask>> tasks;
  for (int i = 0; i < 4; ++i) {
    tasks.push_back(MakeTask(i, 1));
    ASSERT_OK(batcher->Enqueue(tasks.back()->Task()));
  }
  for (auto& task : tasks) ExpectAnswered(*task);
  EXPECT_THAT(Batches(), ElementsAre(4));
}

TEST_F(DynamicBatcherTest, BatchesNeverExceedMaxBatchSize) {
  auto batcher = Start(4, absl::ZeroDuration());
  ASSERT_NE(batcher, nullptr);
  Occupy(*batcher);
  // 3 + 2 does not fit: 2 waits for the next batch while 1 fills this one.
  std::vector<std::unique_ptr<PendingTask>> tasks;
  for (int64_t rows : {3, 2, 1, 2}) {
    tasks.push_back(MakeTask(static_cast<int>(tasks.size()), rows));
    ASSERT_OK(batcher->Enqueue(tasks.back()->Task()));
  }
  Release();
  for (auto& task : tasks) ExpectAnswered(*task);
  EXPECT_THAT(Batches(), ElementsAre(1, 4, 4));
  EXPECT_THAT(RunShapes(), ElementsAre(ElementsAre(1, 3), ElementsAre(4, 3), ElementsAre(4, 3)));
}

TEST_F(DynamicBatcherTest, DifferentItemShapesGoIntoSeparateBatches) {
  auto batcher = Start(64, absl::ZeroDuration());
  ASSERT_NE(batcher, nullptr);
  Occupy(*batcher);
  std::vector<std::unique_ptr<PendingTask>> tasks;
  tasks.push_back(MakeTask(0, 1, 3));
  tasks.push_back(MakeTask(1, 2, 5));
  tasks.push_back(MakeTask(2, 1, 3));
  tasks.push_back(MakeTask(3, 1, 5));
  for (auto& task : tasks) ASSERT_OK(batcher->Enqueue(task->Task()));
  Release();
  for (auto& task : tasks) ExpectAnswered(*task);
  EXPECT_THAT(Batches(), ElementsAre(1, 2, 3));
  EXPECT_THAT(RunShapes(), ElementsAre(ElementsAre(1, 3), ElementsAre(2, 3), ElementsAre(3, 5)));
}

TEST_F(DynamicBatcherTest, RunErrorReachesEveryTaskOfTheBatch) {
  auto batcher = Start(64, absl::ZeroDuration());
  ASSERT_NE(batcher, nullptr);
  int failures = 1;
  run_ = [&failures](const std::vector<torch::Tensor>& inputs) -> Result {
    if (failures-- > 0) return absl::FailedPreconditionError("model unloading");
    return std::vector<torch::Tensor>{inputs[0] * 2};
  };
  Occupy(*batcher);
  std::vector<std::unique_ptr<PendingTask>> tasks;
  for (int i = 0; i < 3; ++i) {
    tasks.push_back(MakeTask(i, 2));
    ASSERT_OK(batcher->Enqueue(tasks.back()->Task()));
  }
  Release();
  for (auto& task : tasks) {
    EXPECT_THAT(task->Get(),
                StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("model unloading")));
  }
  EXPECT_THAT(Batches(), ElementsAre(1, 6));
  // The thread lives on.
  auto after = MakeTask(7, 1);
  ASSERT_OK(batcher->Enqueue(after->Task()));
  ExpectAnswered(*after);
}

TEST_F(DynamicBatcherTest, ThrowingRunBecomesAnErrorAndTheThreadSurvives) {
  auto batcher = Start(64, absl::ZeroDuration());
  ASSERT_NE(batcher, nullptr);
  int failures = 1;
  run_ = [&failures](const std::vector<torch::Tensor>& inputs) -> Result {
    if (failures-- > 0) return std::vector<torch::Tensor>{torch::matmul(inputs[0], inputs[0])};
    return std::vector<torch::Tensor>{inputs[0] * 2};
  };
  Occupy(*batcher);
  std::vector<std::unique_ptr<PendingTask>> tasks;
  for (int i = 0; i < 2; ++i) {
    tasks.push_back(MakeTask(i, 2));
    ASSERT_OK(batcher->Enqueue(tasks.back()->Task()));
  }
  Release();
  for (auto& task : tasks) {
    EXPECT_THAT(task->Get(),
                StatusIs(absl::StatusCode::kInternal, HasSubstr("test-model-with-a-long-name")));
  }
  auto after = MakeTask(7, 1);
  ASSERT_OK(batcher->Enqueue(after->Task()));
  ExpectAnswered(*after);
}

TEST_F(DynamicBatcherTest, OutputsWithoutTheBatchDimensionAreAnError) {
  auto batcher = Start(64, absl::ZeroDuration());
  ASSERT_NE(batcher, nullptr);
  run_ = [](const std::vector<torch::Tensor>& inputs) -> Result {
    return std::vector<torch::Tensor>{inputs[0].sum(0)};
  };
  Occupy(*batcher);
  auto a = MakeTask(0, 1);
  auto b = MakeTask(1, 1);
  ASSERT_OK(batcher->Enqueue(a->Task()));
  ASSERT_OK(batcher->Enqueue(b->Task()));
  Release();
  EXPECT_THAT(a->Get(), StatusIs(absl::StatusCode::kInternal, HasSubstr("leading dimension")));
  EXPECT_THAT(b->Get(), StatusIs(absl::StatusCode::kInternal, HasSubstr("leading dimension")));
}

TEST_F(DynamicBatcherTest, StopRunsQueuedTasksWithoutWaitingForTheDelay) {
  auto batcher = Start(64, kForever);
  ASSERT_NE(batcher, nullptr);
  Release();
  std::vector<std::unique_ptr<PendingTask>> tasks;
  for (int i = 0; i < 3; ++i) {
    tasks.push_back(MakeTask(i, 1));
    ASSERT_OK(batcher->Enqueue(tasks.back()->Task()));
  }
  batcher->Stop();
  // Stop returned after the join: every task has its answer already.
  for (auto& task : tasks) {
    ASSERT_EQ(task->future.wait_for(std::chrono::seconds(0)), std::future_status::ready);
    ExpectAnswered(*task);
  }
  EXPECT_THAT(Batches(), ElementsAre(3));
  batcher->Stop();  // idempotent
}

TEST_F(DynamicBatcherTest, EnqueueAfterStopIsUnavailable) {
  auto batcher = Start(64, absl::ZeroDuration());
  ASSERT_NE(batcher, nullptr);
  batcher->Stop();
  bool called = false;
  DynamicBatcher::Task task{{torch::ones({1, 3})}, [&called](Result) { called = true; }};
  EXPECT_THAT(batcher->Enqueue(std::move(task)),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("test-model-with-a-long-name")));
  batcher.reset();
  EXPECT_FALSE(called);
  EXPECT_TRUE(Batches().empty());
}

TEST_F(DynamicBatcherTest, DestructorDrainsTheQueue) {
  auto batcher = Start(64, kForever);
  ASSERT_NE(batcher, nullptr);
  Release();
  auto task = MakeTask(0, 2);
  ASSERT_OK(batcher->Enqueue(task->Task()));
  batcher.reset();
  ASSERT_EQ(task->future.wait_for(std::chrono::seconds(0)), std::future_status::ready);
  ExpectAnswered(*task);
}

TEST_F(DynamicBatcherTest, CanBeDestroyedFromItsOwnCallback) {
  std::shared_ptr<DynamicBatcher> owner = Start(64, absl::ZeroDuration());
  ASSERT_NE(owner, nullptr);
  Occupy(*owner);
  auto promise = std::make_shared<std::promise<void>>();
  std::future<void> destroyed = promise->get_future();
  // The callback drops the last reference, as a request holding a model
  // handle does when the model was replaced meanwhile.
  DynamicBatcher::Task task{{torch::ones({1, 3})}, [owner, promise](Result) mutable {
                              owner.reset();
                              promise->set_value();
                            }};
  ASSERT_OK(owner->Enqueue(std::move(task)));
  owner.reset();
  Release();
  EXPECT_EQ(destroyed.wait_for(std::chrono::seconds(60)), std::future_status::ready);
  ExpectAnswered(*blocker_);
}

TEST_F(DynamicBatcherTest, QueueIsBounded) {
  auto batcher = Start(1, absl::ZeroDuration());
  ASSERT_NE(batcher, nullptr);
  Occupy(*batcher);
  std::vector<std::unique_ptr<PendingTask>> tasks;
  for (int i = 0; i < DynamicBatcher::kMaxQueuedBatches; ++i) {
    tasks.push_back(MakeTask(i, 1));
    ASSERT_OK(batcher->Enqueue(tasks.back()->Task()));
  }
  auto extra = MakeTask(100, 1);
  EXPECT_THAT(batcher->Enqueue(extra->Task()),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("64 items are queued")));
  Release();
  for (auto& task : tasks) ExpectAnswered(*task);
}

TEST_F(DynamicBatcherTest, EnqueueRejectsMalformedTasks) {
  auto batcher = Start(4, absl::ZeroDuration());
  ASSERT_NE(batcher, nullptr);
  auto ignore = [](Result) {};
  EXPECT_THAT(batcher->Enqueue({{}, ignore}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("without inputs")));
  EXPECT_THAT(batcher->Enqueue({{torch::ones({5, 3})}, ignore}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("1..4")));
  EXPECT_THAT(batcher->Enqueue({{torch::ones({2, 3}), torch::ones({3, 3})}, ignore}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("task input 1 has 3")));
  EXPECT_THAT(batcher->Enqueue({{torch::tensor(1.0)}, ignore}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no batch dimension")));
  EXPECT_THAT(batcher->Enqueue({{torch::ones({1, 3})}, nullptr}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("without done")));
}

TEST_F(DynamicBatcherTest, TimingSplitsQueueWaitFromCompute) {
  auto batcher = Start(64, absl::ZeroDuration());
  ASSERT_NE(batcher, nullptr);
  run_ = [](const std::vector<torch::Tensor>& inputs) -> Result {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    return std::vector<torch::Tensor>{inputs[0] * 2};
  };
  Occupy(*batcher);
  std::vector<std::unique_ptr<PendingTask>> tasks;
  const absl::Time before = absl::Now();
  for (int64_t rows : {1, 3}) {
    tasks.push_back(MakeTask(static_cast<int>(tasks.size()), rows));
    ASSERT_OK(batcher->Enqueue(tasks.back()->TimedTask()));
  }
  // Both wait behind the blocked forward for at least this long.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  Release();
  for (auto& task : tasks) ExpectAnswered(*task);
  const absl::Duration elapsed = absl::Now() - before;

  ASSERT_THAT(Batches(), ElementsAre(1, 4));
  const absl::Duration compute = Computes()[1];
  EXPECT_GE(compute, absl::Milliseconds(30));
  for (auto& task : tasks) {
    // `done` already saw the figures, and they are the batch's.
    EXPECT_EQ(task->seen->batch_items, 4);
    EXPECT_EQ(task->seen->compute, compute);
    EXPECT_EQ(task->seen->queue, task->timing->queue);
    EXPECT_GE(task->seen->queue, absl::Milliseconds(50));
    // The forward does not count as queueing: both fit in the time from
    // Enqueue to the answer (1 ms for the two clocks' granularity).
    EXPECT_LE(task->seen->queue + compute, elapsed + absl::Milliseconds(1));
  }
  // The first task waited at least as long as the one queued after it.
  EXPECT_GE(tasks[0]->seen->queue, tasks[1]->seen->queue);
}

TEST_F(DynamicBatcherTest, TimingIsFilledForAFailedForwardToo) {
  auto batcher = Start(64, absl::ZeroDuration());
  ASSERT_NE(batcher, nullptr);
  Release();
  run_ = [](const std::vector<torch::Tensor>&) -> Result {
    return absl::FailedPreconditionError("model unloading");
  };
  // The first forward (the default one) answers; later ones fail.
  auto first = MakeTask(0, 1);
  ASSERT_OK(batcher->Enqueue(first->TimedTask()));
  ExpectAnswered(*first);
  EXPECT_EQ(first->seen->batch_items, 1);
  auto failed = MakeTask(1, 2);
  ASSERT_OK(batcher->Enqueue(failed->TimedTask()));
  EXPECT_THAT(failed->Get(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("model unloading")));
  EXPECT_EQ(failed->seen->batch_items, 2);
  EXPECT_GT(failed->seen->compute, absl::ZeroDuration());
  EXPECT_THAT(Batches(), ElementsAre(1, 2));
}

TEST_F(DynamicBatcherTest, QueuedDeltasFollowTheDepthAndReturnToZero) {
  auto batcher = Start(4, absl::ZeroDuration());
  ASSERT_NE(batcher, nullptr);
  Occupy(*batcher);
  EXPECT_EQ(depth_.load(), 0);  // the blocker left the queue for its forward
  std::vector<std::unique_ptr<PendingTask>> tasks;
  for (int64_t rows : {3, 2, 1, 2, 1}) {
    tasks.push_back(MakeTask(static_cast<int>(tasks.size()), rows));
    ASSERT_OK(batcher->Enqueue(tasks.back()->Task()));
  }
  // Refused tasks never enter the queue.
  EXPECT_FALSE(batcher->Enqueue({{torch::ones({5, 3})}, [](Result) {}}).ok());
  EXPECT_EQ(depth_.load(), 5);  // requests, not items
  Release();
  for (auto& task : tasks) ExpectAnswered(*task);
  EXPECT_EQ(depth_.load(), 0);
  EXPECT_EQ(min_depth_.load(), 0);  // never a batch left before it entered
  EXPECT_EQ(max_depth_.load(), 5);
}

TEST_F(DynamicBatcherTest, QueuedDeltasBalanceWhenStopDrainsTheQueue) {
  auto batcher = Start(64, kForever);
  ASSERT_NE(batcher, nullptr);
  Release();
  // The batch waits for the delay that never passes: everything stays queued.
  std::vector<std::unique_ptr<PendingTask>> tasks;
  for (int i = 0; i < 5; ++i) {
    tasks.push_back(MakeTask(i, 1));
    ASSERT_OK(batcher->Enqueue(tasks.back()->Task()));
  }
  EXPECT_EQ(depth_.load(), 5);
  batcher->Stop();
  for (auto& task : tasks) ExpectAnswered(*task);
  EXPECT_EQ(depth_.load(), 0);
  EXPECT_EQ(min_depth_.load(), 0);
  // Refused after Stop: not counted.
  EXPECT_FALSE(batcher->Enqueue(MakeTask(9, 1)->Task()).ok());
  EXPECT_EQ(depth_.load(), 0);
}

TEST_F(DynamicBatcherTest, ConcurrentEnqueuesKeepTheDepthBalanced) {
  // 16 * kMaxQueuedBatches items fit in the queue: none is refused.
  auto batcher = Start(16, absl::ZeroDuration());
  ASSERT_NE(batcher, nullptr);
  Release();
  constexpr int kThreads = 8;
  constexpr int kEach = 50;
  std::vector<std::vector<std::unique_ptr<PendingTask>>> tasks(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        tasks[t].push_back(MakeTask(t * kEach + i, 1 + i % 2));
        ASSERT_OK(batcher->Enqueue(tasks[t].back()->Task()));
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (auto& list : tasks) {
    for (auto& task : list) ExpectAnswered(*task);
  }
  EXPECT_EQ(depth_.load(), 0);
  EXPECT_EQ(min_depth_.load(), 0);
  EXPECT_LE(max_depth_.load(), kThreads * kEach);
}

TEST(DynamicBatcherCreateTest, RejectsBadOptions) {
  DynamicBatcher::Options options;
  options.model = "m";
  EXPECT_THAT(DynamicBatcher::Create(options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("run")));
  options.run = [](const std::vector<torch::Tensor>& inputs) -> Result { return inputs; };
  options.max_batch_size = 0;
  EXPECT_THAT(DynamicBatcher::Create(options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_batch_size")));
  options.max_batch_size = 8;
  options.max_queue_delay = absl::Microseconds(-1);
  EXPECT_THAT(DynamicBatcher::Create(options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_queue_delay")));
}

}  // namespace
}  // namespace mantissa
