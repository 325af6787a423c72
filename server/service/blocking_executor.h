#ifndef MANTISSA_SERVER_SERVICE_BLOCKING_EXECUTOR_H_
#define MANTISSA_SERVER_SERVICE_BLOCKING_EXECUTOR_H_

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace mantissa {

// A few worker threads for service calls that block for seconds (model loads
// cast and validate a model), so that gRPC reactors never wait on them.
// Tasks run in submission order, at most `threads` at once. Thread-safe.
class BlockingExecutor {
 public:
  struct Options {
    int threads = 2;  // at least 1
  };

  explicit BlockingExecutor(Options options);
  ~BlockingExecutor();  // Shutdown()
  BlockingExecutor(const BlockingExecutor&) = delete;
  BlockingExecutor& operator=(const BlockingExecutor&) = delete;

  // Queues `task`. False, without running it, once Shutdown has begun: the
  // caller answers its request itself (UNAVAILABLE).
  bool Schedule(std::function<void()> task);

  // Refuses new tasks, runs every queued one and joins the workers, so that
  // every accepted request gets its answer. Idempotent; must not be called
  // from a task.
  void Shutdown();

 private:
  void Work();

  std::mutex mu_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> queue_;  // guarded by mu_
  bool stopping_ = false;                    // guarded by mu_
  std::vector<std::thread> workers_;
  std::once_flag joined_;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_SERVICE_BLOCKING_EXECUTOR_H_
