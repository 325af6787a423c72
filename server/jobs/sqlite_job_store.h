#ifndef MANTISSA_SERVER_JOBS_SQLITE_JOB_STORE_H_
#define MANTISSA_SERVER_JOBS_SQLITE_JOB_STORE_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "server/jobs/job_store.h"

struct sqlite3;

namespace mantissa {

// The job store of a single daemon: one SQLite database file (WAL, FULL
// sync) that one process at a time may open, which an exclusive flock on
// "<path>.lock" enforces for the store's life. A database of the previous
// schema (one jobs table of id, state and blob) is migrated on open.
// Thread-safe: calls are serialized by a mutex; the change listener runs
// after each commit, outside it.
class SqliteJobStore : public JobStore {
 public:
  struct Options {
    std::string path;  // database file; its directory must exist
  };

  static absl::StatusOr<std::unique_ptr<SqliteJobStore>> Create(Options options);
  ~SqliteJobStore() override;
  SqliteJobStore(const SqliteJobStore&) = delete;
  SqliteJobStore& operator=(const SqliteJobStore&) = delete;

  std::string kind() const override { return "sqlite"; }
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
  absl::StatusOr<std::vector<StoredEvent>> EventsAfter(const std::string& id, int64_t after,
                                                       int limit) override;
  absl::StatusOr<int64_t> PublishModelChange(const std::string& name, bool loaded) override;
  absl::StatusOr<std::vector<ModelRecord>> ModelRecords() override;
  void SetChangeListener(ChangeListener listener) override;

 private:
  struct Change {
    StoreChannel channel;
    std::string payload;
  };
  using Changes = std::vector<Change>;

  SqliteJobStore(sqlite3* db, int lock_fd) : db_(db), lock_fd_(lock_fd) {}

  absl::Status Exec(const char* sql);
  absl::Status Migrate(const std::string& path);
  absl::Status CreateSchema();
  absl::Status MigrateFromV1();
  // Runs `body` in a transaction under mu_ ("BEGIN IMMEDIATE" for writes),
  // rolling back when it fails, then tells the listener what changed.
  absl::Status Transact(const char* begin, absl::FunctionRef<absl::Status(Changes&)> body);
  absl::Status Read(absl::FunctionRef<absl::Status()> body);
  absl::Status Write(absl::FunctionRef<absl::Status(Changes&)> body);
  // Steps of the transactions, called under mu_.
  absl::StatusOr<int64_t> AppendEvent(const std::string& job_id, const v1::JobEvent& event);
  absl::Status InsertRow(const v1::Job& job);
  absl::Status UpdateRow(int64_t seq, const v1::Job& job, int64_t lease_expires_ms,
                         bool cancel_requested);

  std::mutex mu_;
  sqlite3* const db_;  // guarded by mu_
  const int lock_fd_;  // holds the flock
  ChangeListener listener_;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_JOBS_SQLITE_JOB_STORE_H_
