#include "server/jobs/job_store.h"

#include <sqlite3.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace mantissa {
namespace {

constexpr int kSchemaVersion = 1;

absl::Status SqliteError(sqlite3* db, absl::string_view what) {
  return absl::InternalError(absl::StrCat("job store: ", what, ": ", sqlite3_errmsg(db)));
}

// Finalizes a prepared statement on every path out of a function.
class Statement {
 public:
  Statement(sqlite3* db, const std::string& sql) {
    rc_ = sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt_, nullptr);
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  bool ok() const { return rc_ == SQLITE_OK; }
  sqlite3_stmt* get() { return stmt_; }

 private:
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<JobStore>> JobStore::Create(Options options) {
  sqlite3* db = nullptr;
  const int rc =
      sqlite3_open_v2(options.path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    absl::Status status = absl::FailedPreconditionError(absl::StrCat(
        "job store: cannot open ", options.path, ": ", db ? sqlite3_errmsg(db) : "out of memory"));
    sqlite3_close(db);
    return status;
  }
  std::unique_ptr<JobStore> store(new JobStore(db));
  sqlite3_busy_timeout(db, 5000);
  // WAL keeps readers off the writer's back; FULL sync flushes the log at
  // every commit, so an acknowledged submission survives a power loss too
  // (NORMAL survives only process crashes). The cost per submit is in the
  // README.
  if (auto s = store->Exec("PRAGMA journal_mode=WAL"); !s.ok()) return s;
  if (auto s = store->Exec("PRAGMA synchronous=FULL"); !s.ok()) return s;
  if (auto s = store->Exec("CREATE TABLE IF NOT EXISTS jobs ("
                           "  id TEXT PRIMARY KEY,"
                           "  state INTEGER NOT NULL,"
                           "  job BLOB NOT NULL)");
      !s.ok()) {
    return s;
  }
  if (auto s = store->Exec("CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state)"); !s.ok()) {
    return s;
  }
  if (auto s = store->Exec(absl::StrCat("PRAGMA user_version=", kSchemaVersion).c_str()); !s.ok()) {
    return s;
  }
  return store;
}

JobStore::~JobStore() { sqlite3_close(db_); }

absl::Status JobStore::Exec(const char* sql) {
  char* error = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &error) != SQLITE_OK) {
    absl::Status status = absl::InternalError(absl::StrCat("job store: ", sql, ": ", error));
    sqlite3_free(error);
    return status;
  }
  return absl::OkStatus();
}

absl::Status JobStore::Put(const v1::Job& job) {
  const std::string blob = job.SerializeAsString();
  std::lock_guard<std::mutex> lock(mu_);
  // The upsert keeps the rowid of the first insert, so rowid order is
  // submission order.
  Statement stmt(db_,
                 "INSERT INTO jobs(id, state, job) VALUES(?1, ?2, ?3) "
                 "ON CONFLICT(id) DO UPDATE SET state=excluded.state, job=excluded.job");
  if (!stmt.ok()) return SqliteError(db_, "prepare put");
  sqlite3_bind_text(stmt.get(), 1, job.id().data(), static_cast<int>(job.id().size()),
                    SQLITE_TRANSIENT);
  sqlite3_bind_int(stmt.get(), 2, job.state());
  sqlite3_bind_blob(stmt.get(), 3, blob.data(), static_cast<int>(blob.size()), SQLITE_TRANSIENT);
  if (sqlite3_step(stmt.get()) != SQLITE_DONE) {
    return SqliteError(db_, absl::StrCat("put job ", job.id()));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::Job> JobStore::Get(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement stmt(db_, "SELECT job FROM jobs WHERE id = ?1");
  if (!stmt.ok()) return SqliteError(db_, "prepare get");
  sqlite3_bind_text(stmt.get(), 1, id.data(), static_cast<int>(id.size()), SQLITE_TRANSIENT);
  const int rc = sqlite3_step(stmt.get());
  if (rc == SQLITE_DONE) return absl::NotFoundError(absl::StrCat("job_id: no job '", id, "'"));
  if (rc != SQLITE_ROW) return SqliteError(db_, absl::StrCat("get job ", id));
  v1::Job job;
  if (!job.ParseFromArray(sqlite3_column_blob(stmt.get(), 0),
                          sqlite3_column_bytes(stmt.get(), 0))) {
    return absl::DataLossError(absl::StrCat("job store: record of job ", id, " is corrupt"));
  }
  return job;
}

absl::Status JobStore::Delete(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement stmt(db_, "DELETE FROM jobs WHERE id = ?1");
  if (!stmt.ok()) return SqliteError(db_, "prepare delete");
  sqlite3_bind_text(stmt.get(), 1, id.data(), static_cast<int>(id.size()), SQLITE_TRANSIENT);
  if (sqlite3_step(stmt.get()) != SQLITE_DONE) {
    return SqliteError(db_, absl::StrCat("delete job ", id));
  }
  if (sqlite3_changes(db_) == 0)
    return absl::NotFoundError(absl::StrCat("job_id: no job '", id, "'"));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::Job>> JobStore::List(const std::vector<v1::JobState>& states,
                                                    int limit) {
  std::string sql = "SELECT id, job FROM jobs";
  if (!states.empty()) {
    sql += absl::StrCat(" WHERE state IN (", absl::StrJoin(states, ","), ")");
  }
  sql += " ORDER BY rowid DESC";
  if (limit > 0) sql += absl::StrCat(" LIMIT ", limit);

  std::lock_guard<std::mutex> lock(mu_);
  Statement stmt(db_, sql);
  if (!stmt.ok()) return SqliteError(db_, "prepare list");
  std::vector<v1::Job> jobs;
  int rc;
  while ((rc = sqlite3_step(stmt.get())) == SQLITE_ROW) {
    v1::Job job;
    if (!job.ParseFromArray(sqlite3_column_blob(stmt.get(), 1),
                            sqlite3_column_bytes(stmt.get(), 1))) {
      return absl::DataLossError(absl::StrCat(
          "job store: record of job ",
          reinterpret_cast<const char*>(sqlite3_column_text(stmt.get(), 0)), " is corrupt"));
    }
    jobs.push_back(std::move(job));
  }
  if (rc != SQLITE_DONE) return SqliteError(db_, "list jobs");
  return jobs;
}

}  // namespace mantissa
