#ifndef MANTISSA_SERVER_JOBS_JOB_MANAGER_H_
#define MANTISSA_SERVER_JOBS_JOB_MANAGER_H_

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "mantissa/v1/training.pb.h"
#include "server/jobs/job_runner.h"
#include "server/jobs/job_store.h"
#include "server/metrics/metrics.h"

namespace mantissa {

// Receives the events of one job. Called with the manager's lock held, in
// event order: it must return quickly and must not call into the manager.
class JobWatcher {
 public:
  virtual ~JobWatcher() = default;
  virtual void OnJobEvent(const v1::JobEvent& event) = 0;
};

// Owns the life of training jobs: validation at submission, a FIFO queue,
// `max_concurrent_jobs` worker threads that call the JobRunner, cancellation,
// events for watchers, and write-through persistence to the JobStore.
// On creation it recovers the store: jobs that were RUNNING when the daemon
// died are marked FAILED, QUEUED jobs are queued again. Thread-safe.
class JobManager {
 public:
  struct Options {
    JobStore* store = nullptr;    // not owned; outlives the manager
    JobRunner* runner = nullptr;  // not owned; outlives the manager
    Metrics* metrics = nullptr;   // not owned; outlives the manager
    int max_concurrent_jobs = 1;
    // Admission caps on QUEUED jobs (RESOURCE_EXHAUSTED beyond them): in all,
    // and per principal (the anonymous principal "" counts as one).
    int max_queued_jobs = 1000;
    int max_queued_jobs_per_principal = 100;
    // Progress events reach watchers at once but the store at most this often.
    absl::Duration progress_persist_interval = absl::Seconds(1);
    // WatchJob streams per job; RESOURCE_EXHAUSTED beyond.
    int max_watchers_per_job = 16;
    // The directory of the job directories (<state_dir>/jobs): DeleteJob and
    // the retention sweep remove <jobs_dir>/<id>. Empty: no files to remove.
    std::string jobs_dir;
    // Ended jobs older than this (by end time) are deleted at creation and
    // then every `retention_sweep_interval`. Zero: kept forever.
    absl::Duration keep_finished_jobs = absl::ZeroDuration();
    absl::Duration retention_sweep_interval = absl::Hours(1);
  };

  static absl::StatusOr<std::unique_ptr<JobManager>> Create(Options options);
  ~JobManager();  // Shutdown()

  // A spec with resume_from takes the spec of the job it names (which must
  // have ended without succeeding); only `name` may be set beside it.
  // `principal` (who submits; "" without authentication) is recorded on the job.
  absl::StatusOr<v1::Job> Submit(const v1::JobSpec& spec, const std::string& principal = "");
  absl::StatusOr<v1::Job> Get(const std::string& id);
  // Newest first; with `principal`, only the jobs it submitted.
  absl::StatusOr<std::vector<v1::Job>> List(const std::vector<v1::JobState>& states, int limit,
                                            const std::optional<std::string>& principal = {});
  // QUEUED: cancelled now. RUNNING: asked to stop; it ends within one step.
  // Ended jobs: FAILED_PRECONDITION.
  absl::StatusOr<v1::Job> Cancel(const std::string& id);
  // Removes an ended job: its record and its directory with every
  // checkpoint. QUEUED or RUNNING: FAILED_PRECONDITION; unknown: NOT_FOUND.
  absl::Status Delete(const std::string& id);
  // Deletes the ended jobs that ended before now - keep_finished_jobs;
  // returns how many. A job that cannot be removed is logged and skipped.
  // Called by the manager's own sweeper thread.
  absl::StatusOr<int> SweepFinishedJobs();
  v1::GetCapabilitiesResponse Capabilities() const;

  // Sends `watcher` a SNAPSHOT now and every later event of the job. For a
  // job that already ended, SNAPSHOT is followed by FINISHED and the watcher
  // is not kept. Otherwise the watcher stays registered until Unwatch, after
  // which it receives no more calls.
  absl::Status Watch(const std::string& id, JobWatcher* watcher);
  void Unwatch(const std::string& id, JobWatcher* watcher);

  // Refuses new jobs, cancels running ones (they end CANCELLED, queued ones
  // stay QUEUED in the store for the next start) and joins the workers.
  // Idempotent.
  void Shutdown();

 private:
  class Context;
  struct ActiveJob {
    v1::Job job;
    std::atomic<bool> cancel{false};
    // Set when the job starts: start + spec.max_duration. Past it the job
    // is stopped as by a cancellation, and `timed_out` says why.
    absl::Time deadline = absl::InfiniteFuture();
    std::atomic<bool> timed_out{false};
    bool cancelled_by_shutdown = false;
    std::vector<JobWatcher*> watchers;
    absl::Time last_persisted = absl::InfinitePast();
    std::shared_ptr<JobMetrics> metrics;
  };

  explicit JobManager(Options options) : options_(std::move(options)) {}
  absl::Status Recover();
  absl::StatusOr<v1::JobSpec> ResumeSpec(const v1::JobSpec& spec);
  void WorkerLoop();
  void SweeperLoop();
  void RunJob(ActiveJob& active);

  // All *Locked methods need mu_ held.
  void PersistLocked(ActiveJob& active);
  void PublishLocked(ActiveJob& active, v1::JobEvent::Type type, const std::string& message);
  void FinishLocked(ActiveJob& active, v1::JobState state, const std::string& error,
                    const v1::JobResult* result);
  void UpdateGaugesLocked();
  absl::Status CheckQueueCapsLocked(const std::string& principal) const;

  const Options options_;

  mutable std::mutex mu_;
  std::condition_variable work_available_;
  std::unordered_map<std::string, std::unique_ptr<ActiveJob>> active_;  // queued or running
  std::deque<std::string> queue_;
  int running_ = 0;
  bool shutting_down_ = false;
  std::vector<std::thread> workers_;
  std::condition_variable sweeper_wake_;  // with mu_: shutdown
  std::thread sweeper_;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_JOBS_JOB_MANAGER_H_
