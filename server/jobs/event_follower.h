#ifndef MANTISSA_SERVER_JOBS_EVENT_FOLLOWER_H_
#define MANTISSA_SERVER_JOBS_EVENT_FOLLOWER_H_

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "mantissa/v1/training.pb.h"
#include "server/jobs/job_store.h"
#include "server/jobs/job_watcher.h"

namespace mantissa {

// Streams a job's events from the store's event log to watchers on a worker
// that does not run the job: one thread reads the events after each
// watcher's position when the store notifies a change, and at least every
// `poll_interval` in case a notification was lost. A watcher is dropped
// after its job's FINISHED event. Thread-safe.
class EventFollower {
 public:
  struct Options {
    JobStore* store = nullptr;  // not owned; outlives the follower
    absl::Duration poll_interval = absl::Milliseconds(500);
  };

  explicit EventFollower(Options options);
  ~EventFollower();  // Shutdown()

  // Delivers the events of `job_id` after sequence `after` to `watcher`.
  void Follow(const std::string& job_id, JobWatcher* watcher, int64_t after);
  // After it returns, `watcher` is not called again.
  void Unfollow(const std::string& job_id, JobWatcher* watcher);
  // Delivers what the store holds for `job_id` now, at once.
  void CatchUp(const std::string& job_id);
  // Stops following `job_id` and returns its watchers (for the worker that
  // now runs the job, which streams its events itself).
  std::vector<JobWatcher*> Take(const std::string& job_id);
  int Count(const std::string& job_id) const;
  void Wake();
  void Shutdown();

 private:
  struct Follower {
    JobWatcher* watcher;
    int64_t after;
  };

  static int64_t LeastAfter(const std::vector<Follower>& followers);
  void Loop();
  // Reads and delivers what is new for `job_id`; returns how many events
  // it read (at most one batch).
  int Poll(const std::string& job_id, int64_t after);

  const Options options_;
  mutable std::mutex mu_;  // also held while delivering
  std::condition_variable wake_;
  bool woken_ = false;
  bool stopping_ = false;
  std::map<std::string, std::vector<Follower>> followers_;
  std::thread thread_;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_JOBS_EVENT_FOLLOWER_H_
