#ifndef MANTISSA_SERVER_JOBS_POSTGRES_JOB_STORE_H_
#define MANTISSA_SERVER_JOBS_POSTGRES_JOB_STORE_H_

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/jobs/job_store.h"

namespace mantissa {

// libpq stays out of this header (pg_connection.h, pg_listener.h).
class PgConnectionPool;
class PgListener;

// The job store of a fleet: every worker opens the same PostgreSQL database.
// Claims take the oldest QUEUED row with FOR UPDATE SKIP LOCKED (a job over
// several nodes together with the rows of the free workers it is placed
// on, in the workers table that AnnounceWorker keeps), leases are
// timed by the database's clock, and every write that changes a job's state
// or appends an event sends NOTIFY mantissa_jobs '<id>' (mantissa_models
// '<name>' for model changes), which a LISTEN connection of this store hands
// to the ChangeListener. Calls borrow one of `pool_size` connections; while
// the server is unreachable they fail with UNAVAILABLE and work again once
// it is back. Thread-safe.
class PostgresJobStore : public JobStore {
 public:
  struct Options {
    std::string uri;  // handed to libpq as is; never logged unredacted
    int pool_size = 4;
  };

  // Connects and creates or migrates the schema (one transaction under an
  // advisory lock, so that workers starting together do not race).
  static absl::StatusOr<std::unique_ptr<PostgresJobStore>> Create(Options options);
  ~PostgresJobStore() override;

  std::string kind() const override { return "postgresql"; }
  absl::Status Insert(const v1::Job& job, const QueueCaps& caps) override;
  absl::StatusOr<v1::Job> Get(const std::string& id) override;
  absl::StatusOr<JobSnapshot> Snapshot(const std::string& id) override;
  absl::StatusOr<JobPage> List(const JobQuery& query) override;
  absl::Status Delete(const std::string& id) override;
  absl::StatusOr<JobCounts> Count() override;
  absl::StatusOr<std::optional<v1::Job>> Claim(const std::string& worker,
                                               absl::Duration lease) override;
  absl::StatusOr<int64_t> Update(const v1::Job& job, const Lease& lease,
                                 const v1::JobEvent* event) override;
  absl::StatusOr<std::vector<HeldLease>> Renew(const std::string& worker, absl::Duration lease,
                                               const std::vector<std::string>& job_ids) override;
  absl::StatusOr<v1::Job> RequestCancel(const std::string& id) override;
  absl::StatusOr<std::vector<v1::Job>> ExpireLeases(bool all_running) override;
  absl::Status AnnounceWorker(const std::string& worker, int free_slots,
                              absl::Duration ttl) override;
  absl::StatusOr<std::vector<NodeAssignment>> TakeAssignments(const std::string& worker) override;
  absl::Status PublishRendezvous(const std::string& id, int32_t attempt,
                                 const std::string& address) override;
  absl::StatusOr<std::string> Rendezvous(const std::string& id, int32_t attempt) override;
  absl::StatusOr<std::vector<StoredEvent>> EventsAfter(const std::string& id, int64_t after,
                                                       int limit) override;
  absl::StatusOr<int64_t> PublishModelChange(const std::string& name, bool loaded) override;
  absl::StatusOr<std::vector<ModelRecord>> ModelRecords() override;
  // Opens the LISTEN connection before it returns (so that no notification
  // sent after it is missed), then follows it on a thread of its own.
  void SetChangeListener(ChangeListener listener) override;

 private:
  explicit PostgresJobStore(std::unique_ptr<PgConnectionPool> pool);
  absl::Status Migrate();

  std::unique_ptr<PgConnectionPool> pool_;
  std::once_flag listen_once_;
  std::unique_ptr<PgListener> listener_;  // set by SetChangeListener
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_JOBS_POSTGRES_JOB_STORE_H_
