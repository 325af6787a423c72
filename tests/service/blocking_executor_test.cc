#include "server/service/blocking_executor.h"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <new>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/service/unary_reactors.h"

namespace mantissa {
namespace {

// Blocks tasks until Open(); counts how many are blocked at once.
class Gate {
 public:
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    ++waiting_;
    max_waiting_ = std::max(max_waiting_, waiting_);
    changed_.notify_all();
    changed_.wait(lock, [this] { return open_; });
    --waiting_;
  }
  void WaitForWaiters(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    changed_.wait(lock, [&] { return waiting_ >= n; });
  }
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    changed_.notify_all();
  }
  int max_waiting() {
    std::lock_guard<std::mutex> lock(mu_);
    return max_waiting_;
  }

 private:
  std::mutex mu_;
  std::condition_variable changed_;
  int waiting_ = 0;
  int max_waiting_ = 0;
  bool open_ = false;
};

TEST(BlockingExecutorTest, RunsEveryTaskOffTheCallingThread) {
  BlockingExecutor executor({.threads = 2});
  std::mutex mu;
  std::set<std::thread::id> threads;
  std::atomic<int> runs{0};
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(executor.Schedule([&] {
      std::lock_guard<std::mutex> lock(mu);
      threads.insert(std::this_thread::get_id());
      ++runs;
    }));
  }
  executor.Shutdown();
  EXPECT_EQ(runs.load(), 20);
  EXPECT_EQ(threads.count(std::this_thread::get_id()), 0u);
  EXPECT_LE(threads.size(), 2u);
}

TEST(BlockingExecutorTest, RunsUpToThreadsTasksAtOnce) {
  BlockingExecutor executor({.threads = 3});
  Gate gate;
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(executor.Schedule([&] { gate.Wait(); }));
  // Three block together; the other two can only start once the gate opens.
  gate.WaitForWaiters(3);
  gate.Open();
  executor.Shutdown();
  EXPECT_EQ(gate.max_waiting(), 3);
}

TEST(BlockingExecutorTest, ShutdownRunsTheQueuedTasksThenRefusesNewOnes) {
  BlockingExecutor executor({.threads = 1});
  Gate gate;
  std::atomic<int> runs{0};
  ASSERT_TRUE(executor.Schedule([&] { gate.Wait(); }));
  gate.WaitForWaiters(1);
  // Queued behind the blocked task when Shutdown begins.
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(executor.Schedule([&] { ++runs; }));
  std::thread shutdown([&] { executor.Shutdown(); });
  // Shutdown has begun once Schedule refuses; the queue is still blocked.
  while (executor.Schedule([&] { runs += 100; })) {
    // Accepted before Shutdown began: it runs too, so count it out.
    runs -= 100;
    std::this_thread::yield();
  }
  gate.Open();
  shutdown.join();
  EXPECT_EQ(runs.load(), 4);
  EXPECT_FALSE(executor.Schedule([] {}));
}

TEST(BlockingExecutorTest, ShutdownIsIdempotentAndTheDestructorShutsDown) {
  std::atomic<int> runs{0};
  {
    BlockingExecutor executor({.threads = 2});
    ASSERT_TRUE(executor.Schedule([&] { ++runs; }));
    executor.Shutdown();
    executor.Shutdown();
    EXPECT_FALSE(executor.Schedule([&] { ++runs; }));
  }
  {
    BlockingExecutor executor({.threads = 1});
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(executor.Schedule([&] { ++runs; }));
  }
  EXPECT_EQ(runs.load(), 4);
}

TEST(BlockingExecutorTest, ZeroThreadsMeansOne) {
  BlockingExecutor executor({.threads = 0});
  std::atomic<bool> ran{false};
  ASSERT_TRUE(executor.Schedule([&] { ran = true; }));
  executor.Shutdown();
  EXPECT_TRUE(ran.load());
}

// A task that throws (a LibTorch error, anything) must neither end the
// process nor its worker: with one thread, the tasks after it still run.
TEST(BlockingExecutorTest, SurvivesTasksThatThrow) {
  BlockingExecutor executor({.threads = 1});
  std::atomic<int> runs{0};
  ASSERT_TRUE(executor.Schedule([] { throw std::runtime_error("boom"); }));
  ASSERT_TRUE(executor.Schedule([] { throw 42; }));
  ASSERT_TRUE(executor.Schedule([&] { ++runs; }));
  executor.Shutdown();
  EXPECT_EQ(runs.load(), 1);
}

TEST(RunCatchingTest, TurnsExceptionsIntoInternalWithContext) {
  const absl::Status thrown =
      RunCatching("loading model m", []() -> absl::Status { throw std::bad_alloc(); });
  EXPECT_EQ(thrown.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(thrown.message()), ::testing::HasSubstr("loading model m"));
  const absl::Status unknown = RunCatching("x", []() -> absl::Status { throw 7; });
  EXPECT_EQ(unknown.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(RunCatching("x", [] { return absl::NotFoundError("n"); }).code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace mantissa
