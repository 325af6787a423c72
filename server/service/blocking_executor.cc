#include "server/service/blocking_executor.h"

#include <algorithm>
#include <exception>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/common/logging.h"

namespace mantissa {

BlockingExecutor::BlockingExecutor(Options options) {
  const int threads = std::max(1, options.threads);
  workers_.reserve(threads);
  for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { Work(); });
}

BlockingExecutor::~BlockingExecutor() { Shutdown(); }

bool BlockingExecutor::Schedule(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return false;
    queue_.push_back(std::move(task));
  }
  wake_.notify_one();
  return true;
}

void BlockingExecutor::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  std::call_once(joined_, [this] {
    for (std::thread& worker : workers_) worker.join();
  });
}

void BlockingExecutor::Work() {
  while (true) {
    std::function<void()> task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      // Drain before stopping: every accepted task answers a request.
      if (queue_.empty()) return;
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    // A task that throws must not end the daemon (std::terminate) nor this
    // worker: it is logged and the worker takes the next one. Tasks answer
    // their own requests, so FinishOnExecutor catches first and answers.
    try {
      task();
    } catch (const std::exception& e) {
      LogError(absl::StrCat("a service task failed: ", e.what()));
    } catch (...) {
      LogError("a service task failed with an unknown exception");
    }
  }
}

}  // namespace mantissa
