#ifndef MANTISSA_SERVER_JOBS_JOB_MANAGER_H_
#define MANTISSA_SERVER_JOBS_JOB_MANAGER_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "mantissa/v1/training.pb.h"
#include "server/jobs/event_follower.h"
#include "server/jobs/job_runner.h"
#include "server/jobs/job_store.h"
#include "server/jobs/job_watcher.h"
#include "server/metrics/metrics.h"

namespace mantissa {

// One worker's share of the jobs of a job store that may be shared by a
// fleet: validation at submission, `max_concurrent_jobs` threads that claim
// queued jobs from the store and call the JobRunner, a heartbeat that renews
// their leases (and sweeps expired ones of any worker), cancellation,
// watchers and fenced write-through persistence. Every call works for any
// job in the store, whichever worker runs it. Thread-safe.
//
// A job over several nodes (num_nodes > 1, PostgreSQL only) is claimed by
// one worker (node 0, which holds the lease and writes the job) together
// with free workers announced in the store; each of those runs its node of
// the job on one of its threads, as a follower that writes nothing.
class JobManager {
 public:
  struct Options {
    JobStore* store = nullptr;    // not owned; outlives the manager
    JobRunner* runner = nullptr;  // not owned; outlives the manager
    Metrics* metrics = nullptr;   // not owned; outlives the manager
    // This process's name in the store (--worker_id): unique per process.
    std::string worker_id = "worker";
    // A claimed job is this worker's while it renews the lease (every third
    // of it). A worker that cannot renew for this long stops its jobs.
    absl::Duration lease = absl::Seconds(30);
    // The only worker of its store (SQLite): jobs RUNNING at start-up
    // belonged to this daemon's previous life and are expired at once.
    bool sole_worker = true;
    int max_concurrent_jobs = 1;
    // Admission caps on QUEUED jobs (RESOURCE_EXHAUSTED beyond them): in all,
    // and per principal (the anonymous principal "" counts as one).
    int max_queued_jobs = 1000;
    int max_queued_jobs_per_principal = 100;
    // Progress events reach this worker's watchers at once but the store
    // (and watchers through other workers) at most this often.
    absl::Duration progress_persist_interval = absl::Seconds(1);
    // WatchJob streams per job and worker; RESOURCE_EXHAUSTED beyond.
    int max_watchers_per_job = 16;
    // The directory of the job directories (<state_dir>/jobs): DeleteJob and
    // the retention sweep remove <jobs_dir>/<id>. Empty: no files to remove.
    std::string jobs_dir;
    // Ended jobs older than this (by end time) are deleted at creation and
    // then every `retention_sweep_interval`. Zero: kept forever.
    absl::Duration keep_finished_jobs = absl::ZeroDuration();
    absl::Duration retention_sweep_interval = absl::Hours(1);
    // Fallbacks for lost store notifications: idle workers try to claim, and
    // watchers through this worker read new events, at least this often.
    absl::Duration claim_poll_interval = absl::Seconds(1);
    absl::Duration watch_poll_interval = absl::Milliseconds(500);
  };

  static absl::StatusOr<std::unique_ptr<JobManager>> Create(Options options);
  ~JobManager();  // Shutdown()

  // A spec with resume_from takes the spec of the job it names (which must
  // have ended without succeeding); only `name` may be set beside it.
  // `principal` (who submits; "" without authentication) is recorded on the job.
  absl::StatusOr<v1::Job> Submit(const v1::JobSpec& spec, const std::string& principal = "");
  absl::StatusOr<v1::Job> Get(const std::string& id);
  // Newest first, one page of `query.limit` (0 = all); with
  // `query.principal`, only the jobs it submitted.
  absl::StatusOr<JobPage> List(const JobQuery& query);
  // QUEUED: cancelled now. RUNNING (on any worker): asked to stop; it ends
  // within one step, plus one heartbeat when another worker runs it.
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
  // which it receives no more calls. A job running on this worker streams
  // every event; others stream the events the store keeps (PROGRESS at most
  // every progress_persist_interval).
  absl::Status Watch(const std::string& id, JobWatcher* watcher);
  void Unwatch(const std::string& id, JobWatcher* watcher);

  // The store's change notifications (JobStore::SetChangeListener), with
  // the job's id when known: wakes idle workers, the event follower, and the
  // heartbeat when the job runs here. Cheap; any thread.
  void StoreChanged(const std::string& job_id = "");

  // Refuses new jobs, stops claiming, and stops each running job at its
  // current step with a checkpoint, releasing it to the queue for another
  // worker (or this daemon's next start); then joins the threads.
  // Idempotent.
  void Shutdown();

 private:
  class Context;
  class FollowerContext;
  struct ActiveJob;
  struct FollowerRun;

  explicit JobManager(Options options);
  void WorkerLoop();
  void HeartbeatLoop();
  void SweeperLoop();
  // Renews this worker's leases; with `sweep`, also expires everyone's
  // run-out leases and refreshes the fleet's gauges.
  void Heartbeat(bool sweep);
  void RunClaimed(v1::Job job, absl::Time claimed_at);
  // The runner's Run, with any exception it lets through as INTERNAL.
  absl::StatusOr<v1::JobResult> RunGuarded(const v1::Job& job, JobContext& context);
  // A node of another worker's job that was placed on this one, if any:
  // taken from the store, or left by another thread's take.
  std::optional<NodeAssignment> NextAssignment();
  // Runs node `assignment.node_rank` of a job node 0 runs elsewhere.
  void RunFollower(NodeAssignment assignment);
  // Stops the followers whose job no longer runs their attempt.
  void CheckFollowers();
  // Tells the store how many more jobs this worker can take now.
  void Announce();
  // Which announcements had begun when a worker thread went to claim.
  struct AnnounceMark {
    uint64_t started = 0;
    bool in_flight = false;
  };
  // Counts a worker thread busy with what it claimed or took since `mark`.
  void Occupy(const AnnounceMark& mark);
  v1::JobEvent EndOfRun(const ActiveJob& active, const absl::StatusOr<v1::JobResult>& result,
                        v1::Job& job);
  // Writes how the run ended, tells the watchers, and removes `active`.
  void FinishRun(ActiveJob& active, const absl::StatusOr<v1::JobResult>& result);
  absl::StatusOr<v1::JobSpec> ResumeSpec(const v1::JobSpec& spec);
  // Writes `job` under the active job's lease, retrying while the store is
  // unreachable and the lease may still hold; false once it does not.
  bool WriteFinal(ActiveJob& active, const v1::Job& job, v1::JobEvent& event);
  void RefreshGauges();

  // All *Locked methods need mu_ held.
  void PublishLocked(ActiveJob& active, const v1::JobEvent& event);
  void LoseLocked(ActiveJob& active, const std::string& why);

  const Options options_;
  std::unique_ptr<EventFollower> follower_;

  mutable std::mutex mu_;
  std::condition_variable wake_;  // workers, heartbeat, sweeper: a change or shutdown
  uint64_t changes_ = 0;          // StoreChanged calls, so workers see a wake-up
  bool renew_now_ = false;        // a job running here changed in the store
  bool workers_joined_ = false;   // Shutdown joined the workers: the heartbeat ends
  // Jobs whose next attempt this worker claimed while its old run of them
  // was still stopping.
  std::set<std::string> reclaiming_;
  std::unordered_map<std::string, std::unique_ptr<ActiveJob>> active_;  // running here
  std::vector<FollowerRun*> followers_;      // nodes of jobs whose node 0 is elsewhere
  std::vector<NodeAssignment> assignments_;  // taken from the store, not yet run
  int busy_ = 0;                             // worker threads running a job or a node of one
  uint64_t announces_started_ = 0;
  int announces_in_flight_ = 0;
  std::mutex announce_mu_;  // held by Announce from its count to its write; before mu_
  bool shutting_down_ = false;
  std::vector<std::thread> workers_;
  std::thread heartbeat_;
  std::thread sweeper_;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_JOBS_JOB_MANAGER_H_
