#ifndef MANTISSA_SERVER_JOBS_JOB_STORE_H_
#define MANTISSA_SERVER_JOBS_JOB_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "mantissa/v1/training.pb.h"

namespace mantissa {

// Who may write a running job: the worker holding its lease, in the attempt
// it claimed. Every write a worker makes for a job is fenced by it.
struct Lease {
  std::string worker;
  int32_t attempt = 0;
};

// A ListJobs query: filters (empty = any), newest first, paged by the
// store's insertion sequence.
struct JobQuery {
  std::vector<v1::JobState> states;
  std::string model;
  std::string precision;  // the job's effective_precision
  std::string name;
  std::optional<std::string> principal;
  int limit = 0;           // 0 = no limit
  int64_t before_seq = 0;  // only jobs inserted before this sequence; 0 = from the newest
};

struct JobPage {
  std::vector<v1::Job> jobs;
  // Pass as before_seq for the next (older) page; 0 = this was the last.
  int64_t next_before_seq = 0;
};

// Admission caps checked atomically with the insertion.
struct QueueCaps {
  int max_queued = 0;                // 0 = no cap
  int max_queued_per_principal = 0;  // 0 = no cap
};

// A lease a worker still holds after renewing, with what others asked of it.
struct HeldLease {
  std::string job_id;
  int32_t attempt = 0;
  bool cancel_requested = false;
};

// An event in the store's append-only log of one job.
struct StoredEvent {
  int64_t sequence = 0;
  v1::JobEvent event;  // event.sequence() == sequence
};

// A job with the sequence of its newest stored event, read together, so
// that a watcher that follows events after it misses none.
struct JobSnapshot {
  v1::Job job;
  int64_t last_event_seq = 0;
};

struct JobCounts {
  int64_t queued = 0;
  int64_t running = 0;
};

// A model of the shared model repository as the store records it: every
// change (an export, a load, an unload, a deletion) bumps its generation.
struct ModelRecord {
  std::string name;
  int64_t generation = 0;
  bool loaded = false;  // false: unloaded (or deleted) everywhere
};

// A worker's part in a job over several nodes (JobSpec.num_nodes > 1):
// node `node_rank` (> 0) of the job's current attempt, placed on it by the
// worker that claimed the job (node 0, which holds the lease).
struct NodeAssignment {
  v1::Job job;  // as stored: RUNNING, job.nodes(node_rank) is this worker
  int node_rank = 0;
};

// What a change notification is about.
enum class StoreChannel { kJobs, kModels };

// The durable state of every job, shared by every worker that opens the same
// database: the queue, leases, the job records (each a serialized v1::Job
// beside indexed columns), an append-only event log per job, and the model
// repository's change records. Two implementations with one contract
// (tests/jobs/job_store_contract_test.cc): SqliteJobStore for one daemon,
// PostgresJobStore for a fleet. Thread-safe. Errors: NOT_FOUND for unknown
// ids, FAILED_PRECONDITION for a state that forbids the change, ABORTED for
// a write whose lease no longer holds, UNAVAILABLE when the database cannot
// be reached (callers retry).
//
// The v1::Job fields state, attempt, worker and cancel_requested are also
// columns: reads return the columns' values (cancel_requested is set only by
// RequestCancel, so a worker's write never clears it).
class JobStore {
 public:
  virtual ~JobStore() = default;

  // "sqlite" or "postgresql".
  virtual std::string kind() const = 0;

  // Adds a QUEUED job (attempt 1) and appends a STATE_CHANGED "queued" event.
  // RESOURCE_EXHAUSTED beyond `caps` (naming --max_queued_jobs or
  // --max_queued_jobs_per_principal), ALREADY_EXISTS for a taken id.
  virtual absl::Status Insert(const v1::Job& job, const QueueCaps& caps) = 0;
  virtual absl::StatusOr<v1::Job> Get(const std::string& id) = 0;
  virtual absl::StatusOr<JobSnapshot> Snapshot(const std::string& id) = 0;
  virtual absl::StatusOr<JobPage> List(const JobQuery& query) = 0;
  // Removes an ended job's record and events; FAILED_PRECONDITION while it
  // is QUEUED or RUNNING.
  virtual absl::Status Delete(const std::string& id) = 0;
  virtual absl::StatusOr<JobCounts> Count() = 0;

  // Claims the oldest QUEUED job for `worker` (FOR UPDATE SKIP LOCKED on
  // PostgreSQL): RUNNING, worker set, start_time set, a new v1::Attempt
  // appended (MarkClaimed), lease until now + `lease` on the database's
  // clock, and a STATE_CHANGED "running on <worker>" event. nullopt when
  // nothing is queued.
  virtual absl::StatusOr<std::optional<v1::Job>> Claim(const std::string& worker,
                                                       absl::Duration lease) = 0;

  // Writes `job` (whose state may be RUNNING, QUEUED for a release, or
  // terminal) only while the stored job is RUNNING under `lease`, and appends
  // `event` (when given) in the same transaction, returning its sequence
  // (0 without an event). ABORTED when the lease no longer holds: the job is
  // no longer this worker's and nothing was written.
  virtual absl::StatusOr<int64_t> Update(const v1::Job& job, const Lease& lease,
                                         const v1::JobEvent* event) = 0;

  // Extends the leases `worker` holds on `job_ids` (the jobs it still
  // runs) to now + `lease`; returns those it still holds. A lease the worker
  // holds on another job (one it gave up without a word, e.g. the database
  // was unreachable) is left to expire.
  virtual absl::StatusOr<std::vector<HeldLease>> Renew(const std::string& worker,
                                                       absl::Duration lease,
                                                       const std::vector<std::string>& job_ids) = 0;

  // QUEUED: CANCELLED now (FINISHED event) and returned. RUNNING: sets
  // cancel_requested for the worker to see at its next renewal (and a
  // STATE_CHANGED "cancellation requested" event). Ended: FAILED_PRECONDITION
  // naming its state.
  virtual absl::StatusOr<v1::Job> RequestCancel(const std::string& id) = 0;

  // The idempotent expiry sweep every worker runs: each RUNNING job whose
  // lease ran out (or every RUNNING job with `all_running`, for a daemon that
  // knows it is the only one) goes back to QUEUED with attempt + 1, or to
  // FAILED once its max_attempts are used (MarkLeaseExpired). Returns the
  // jobs it changed, as stored.
  virtual absl::StatusOr<std::vector<v1::Job>> ExpireLeases(bool all_running = false) = 0;

  // Jobs over several nodes (a store shared by workers: PostgreSQL). The
  // defaults are a store of one worker's (SQLite), which never holds such
  // jobs: they are refused at submission.
  //
  // Every worker announces its free job slots at each heartbeat (and when a
  // job ends here); the announcement lasts `ttl`.
  virtual absl::Status AnnounceWorker(const std::string& worker, int free_slots,
                                      absl::Duration ttl) {
    return absl::OkStatus();
  }
  // Claim places a QUEUED job with num_nodes = N > 1 only together with N - 1
  // other workers whose announcement holds with a free slot, in the same
  // transaction (their slots taken, Job.nodes set with the claimer first, one
  // assignment per node), or leaves it QUEUED: never a partial gang. A
  // claimer whose own announced slots all went to such nodes claims nothing
  // (it takes those first). An announcement leaves out the slots of nodes
  // placed on the worker that it has not taken yet. Here: the assignments of
  // `worker` in RUNNING jobs not taken before, each returned once.
  virtual absl::StatusOr<std::vector<NodeAssignment>> TakeAssignments(const std::string& worker) {
    return std::vector<NodeAssignment>{};
  }
  // Node 0 of job `id`'s attempt `attempt` publishes where rank 0's store
  // listens ("host:port"); the other nodes read it ("" until published).
  // ABORTED once that attempt no longer runs, NOT_FOUND for an unknown job.
  virtual absl::Status PublishRendezvous(const std::string& id, int32_t attempt,
                                         const std::string& address) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", id, ": jobs over several nodes need the PostgreSQL job store"));
  }
  virtual absl::StatusOr<std::string> Rendezvous(const std::string& id, int32_t attempt) {
    return PublishRendezvous(id, attempt, "");
  }

  // Events of job `id` with sequence > `after`, oldest first, at most `limit`.
  virtual absl::StatusOr<std::vector<StoredEvent>> EventsAfter(const std::string& id, int64_t after,
                                                               int limit) = 0;

  // Records a change of model `name` in the shared repository: bumps its
  // generation and sets `loaded`; returns the new generation.
  virtual absl::StatusOr<int64_t> PublishModelChange(const std::string& name, bool loaded) = 0;
  virtual absl::StatusOr<std::vector<ModelRecord>> ModelRecords() = 0;

  // Called after a change committed by any worker sharing the database (on
  // PostgreSQL through LISTEN/NOTIFY on a connection of its own; on SQLite
  // in this process only), with the job id or model name. A wake-up only:
  // callers also poll, as notifications may be lost across reconnections.
  // Called from the store's threads; must return quickly and must not call
  // the store. Set once, before other threads use the store.
  using ChangeListener = std::function<void(StoreChannel, const std::string&)>;
  virtual void SetChangeListener(ChangeListener listener) = 0;
};

// Opens the store `database` names: "sqlite:PATH", or a PostgreSQL URI
// ("postgresql://user@host:port/db?sslmode=...", also "?host=/socket/dir").
// Empty: sqlite:<state_dir>/jobs.db. The schema is created or migrated
// before it returns.
struct JobStoreOptions {
  std::string database;
  std::string state_dir;
};
absl::StatusOr<std::unique_ptr<JobStore>> OpenJobStore(const JobStoreOptions& options);

// `database` fit for a log line: a PostgreSQL URI's password is replaced by
// "***".
std::string RedactDatabase(const std::string& database);

}  // namespace mantissa

#endif  // MANTISSA_SERVER_JOBS_JOB_STORE_H_
