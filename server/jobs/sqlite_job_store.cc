#include "server/jobs/sqlite_job_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "server/common/status_macros.h"
#include "server/jobs/job_transitions.h"

namespace mantissa {
namespace {

// v1: jobs(id, state, job). v2: indexed columns beside the blob, events and
// models.
constexpr int kSchemaVersion = 2;

constexpr char kSchema[] = R"sql(
CREATE TABLE jobs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT UNIQUE NOT NULL,
  state INTEGER NOT NULL,
  model TEXT NOT NULL,
  precision TEXT NOT NULL,
  name TEXT NOT NULL,
  principal TEXT NOT NULL,
  worker TEXT NOT NULL DEFAULT '',
  attempt INTEGER NOT NULL,
  lease_expires_ms INTEGER NOT NULL DEFAULT 0,
  cancel_requested INTEGER NOT NULL DEFAULT 0,
  job BLOB NOT NULL);
CREATE INDEX jobs_state_seq ON jobs(state, seq);
CREATE TABLE job_events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  job_id TEXT NOT NULL,
  event BLOB NOT NULL);
CREATE INDEX job_events_job_seq ON job_events(job_id, seq);
CREATE TABLE models (
  name TEXT PRIMARY KEY,
  generation INTEGER NOT NULL,
  loaded INTEGER NOT NULL);
)sql";

// The columns ReadRow expects, in its order.
constexpr char kJobColumns[] = "seq, state, attempt, worker, cancel_requested, job";

// The SET list of a job row's columns from its blob (?1 .. ?8, see BindJob).
constexpr char kJobSet[] =
    "state = ?1, attempt = ?2, worker = ?3, model = ?4, precision = ?5, name = ?6, "
    "principal = ?7, job = ?8";

absl::Status SqliteError(sqlite3* db, int rc, absl::string_view what) {
  std::string message = absl::StrCat("job store (sqlite): ", what, ": ", sqlite3_errmsg(db));
  // Another connection (a sqlite3 shell) holding the database: retryable.
  if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED) {
    return absl::UnavailableError(message);
  }
  return absl::InternalError(message);
}

// A prepared statement, finalized on every path out of a function.
class Statement {
 public:
  Statement(sqlite3* db, std::string sql) : db_(db), sql_(std::move(sql)) {
    rc_ = sqlite3_prepare_v2(db, sql_.data(), static_cast<int>(sql_.size()), &stmt_, nullptr);
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& Bind(int index, absl::string_view text) {
    if (stmt_ != nullptr) {
      sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
    }
    return *this;
  }
  Statement& Bind(int index, int64_t value) {
    if (stmt_ != nullptr) sqlite3_bind_int64(stmt_, index, value);
    return *this;
  }
  Statement& BindBlob(int index, absl::string_view blob) {
    if (stmt_ != nullptr) {
      sqlite3_bind_blob(stmt_, index, blob.data(), static_cast<int>(blob.size()), SQLITE_TRANSIENT);
    }
    return *this;
  }

  // True for a row, false when done.
  absl::StatusOr<bool> Step() {
    if (rc_ != SQLITE_OK) return SqliteError(db_, rc_, Abbreviated());
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return SqliteError(db_, rc, Abbreviated());
  }
  // Steps once: runs a statement, or reads its first row.
  absl::Status Run() { return Step().status(); }

  int64_t Int(int column) { return sqlite3_column_int64(stmt_, column); }
  std::string Text(int column) {
    const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, column));
    return text == nullptr ? std::string() : std::string(text, sqlite3_column_bytes(stmt_, column));
  }
  absl::string_view Blob(int column) {
    const void* blob = sqlite3_column_blob(stmt_, column);
    if (blob == nullptr) return {};
    return absl::string_view(static_cast<const char*>(blob), sqlite3_column_bytes(stmt_, column));
  }

 private:
  absl::string_view Abbreviated() const { return absl::string_view(sql_).substr(0, 60); }

  sqlite3* db_;
  std::string sql_;  // for error messages
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

struct Row {
  int64_t seq = 0;
  v1::Job job;
};

// A job row read through kJobColumns: the blob with the columns laid over it.
absl::StatusOr<Row> ReadRow(Statement& stmt) {
  Row row;
  row.seq = stmt.Int(0);
  const absl::string_view blob = stmt.Blob(5);
  if (!row.job.ParseFromArray(blob.data(), static_cast<int>(blob.size()))) {
    return absl::DataLossError(
        absl::StrCat("job store (sqlite): the record of job #", row.seq, " is corrupt"));
  }
  row.job.set_state(static_cast<v1::JobState>(stmt.Int(1)));
  row.job.set_attempt(static_cast<int32_t>(stmt.Int(2)));
  row.job.set_worker(stmt.Text(3));
  row.job.set_cancel_requested(stmt.Int(4) != 0);
  return row;
}

// Reads the rows of `stmt` (selecting kJobColumns).
absl::StatusOr<std::vector<Row>> ReadRows(Statement& stmt) {
  std::vector<Row> rows;
  while (true) {
    ASSIGN_OR_RETURN(const bool has_row, stmt.Step());
    if (!has_row) return rows;
    ASSIGN_OR_RETURN(Row row, ReadRow(stmt));
    rows.push_back(std::move(row));
  }
}

// Binds ?1 .. ?8 of kJobSet from the job's blob.
void BindJob(Statement& stmt, const v1::Job& job) {
  stmt.Bind(1, static_cast<int64_t>(job.state()))
      .Bind(2, static_cast<int64_t>(job.attempt()))
      .Bind(3, job.worker())
      .Bind(4, job.spec().model())
      .Bind(5, job.effective_precision())
      .Bind(6, job.spec().name())
      .Bind(7, job.principal())
      .BindBlob(8, job.SerializeAsString());
}

absl::Status NoSuchJob(const std::string& id) {
  return absl::NotFoundError(absl::StrCat("job_id: no job '", id, "'"));
}

std::string ReasonOfLastAttempt(const v1::Job& job) {
  if (job.attempts_size() == 0) return "lease expired";
  return job.attempts(job.attempts_size() - 1).reason();
}

// Takes the exclusive flock that keeps a second daemon off the database and
// records this process's pid in the lock file for the next one's message.
absl::StatusOr<int> LockDatabase(const std::string& path) {
  const std::string lock_path = path + ".lock";
  // A fresh open file description each time: flock conflicts between two of
  // them even within one process.
  const int fd = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::FailedPreconditionError(absl::StrCat("--database: cannot open the lock file ",
                                                      lock_path, ": ", std::strerror(errno)));
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    char buffer[32] = {};
    const ssize_t n = pread(fd, buffer, sizeof(buffer) - 1, 0);
    close(fd);
    if (error != EWOULDBLOCK) {
      return absl::FailedPreconditionError(
          absl::StrCat("--database: cannot lock ", lock_path, ": ", std::strerror(error)));
    }
    int pid = 0;
    const bool known =
        n > 0 && absl::SimpleAtoi(absl::StripAsciiWhitespace(absl::string_view(buffer, n)), &pid);
    return absl::FailedPreconditionError(absl::StrCat(
        "--database: ", path, " is in use by another mantissad",
        known ? absl::StrCat(" (pid ", pid, ")") : "",
        "; one SQLite database serves one daemon: stop that one or pass another --database "
        "(a PostgreSQL URI to share the queue)"));
  }
  // The pid only feeds the next daemon's message: the lock holds without it.
  const std::string pid = absl::StrCat(getpid(), "\n");
  static_cast<void>(ftruncate(fd, 0) == 0 && pwrite(fd, pid.data(), pid.size(), 0) > 0);
  return fd;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SqliteJobStore>> SqliteJobStore::Create(Options options) {
  ASSIGN_OR_RETURN(const int lock_fd, LockDatabase(options.path));
  sqlite3* db = nullptr;
  const int rc =
      sqlite3_open_v2(options.path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    absl::Status status = absl::FailedPreconditionError(
        absl::StrCat("--database: cannot open sqlite:", options.path, ": ",
                     db ? sqlite3_errmsg(db) : "out of memory"));
    sqlite3_close(db);
    close(lock_fd);
    return status;
  }
  std::unique_ptr<SqliteJobStore> store(new SqliteJobStore(db, lock_fd));
  sqlite3_busy_timeout(db, 5000);
  // WAL keeps readers off the writer's back; FULL sync flushes the log at
  // every commit, so an acknowledged submission survives a power loss too
  // (NORMAL survives only process crashes).
  RETURN_IF_ERROR(store->Exec("PRAGMA journal_mode=WAL"));
  RETURN_IF_ERROR(store->Exec("PRAGMA synchronous=FULL"));
  RETURN_IF_ERROR(store->Migrate(options.path));
  return store;
}

SqliteJobStore::~SqliteJobStore() {
  // Closing the database before the lock: the next daemon finds the WAL
  // checkpointed.
  sqlite3_close(db_);
  close(lock_fd_);
}

absl::Status SqliteJobStore::Exec(const char* sql) {
  char* error = nullptr;
  const int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &error);
  if (rc != SQLITE_OK) {
    absl::Status status = SqliteError(db_, rc, absl::string_view(sql).substr(0, 60));
    sqlite3_free(error);
    return status;
  }
  return absl::OkStatus();
}

absl::Status SqliteJobStore::Migrate(const std::string& path) {
  int64_t version = 0;
  bool has_jobs = false;
  {
    Statement stmt(db_, "PRAGMA user_version");
    ASSIGN_OR_RETURN(const bool has_row, stmt.Step());
    if (has_row) version = stmt.Int(0);
  }
  if (version == kSchemaVersion) return absl::OkStatus();
  if (version > kSchemaVersion) {
    return absl::FailedPreconditionError(absl::StrCat("--database: ", path, " has schema version ",
                                                      version, "; this mantissad knows up to ",
                                                      kSchemaVersion, ": run a newer mantissad"));
  }
  {
    Statement stmt(db_,
                   "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'jobs'");
    ASSIGN_OR_RETURN(const bool has_row, stmt.Step());
    has_jobs = has_row && stmt.Int(0) > 0;
  }
  // One transaction: an interrupted migration leaves the v1 database as it
  // was. (A v0 database with a jobs table is a v1 one whose first start
  // stopped before it set the version.)
  return Write([&](Changes&) -> absl::Status {
    RETURN_IF_ERROR(has_jobs ? MigrateFromV1() : CreateSchema());
    return Exec(absl::StrCat("PRAGMA user_version = ", kSchemaVersion).c_str());
  });
}

absl::Status SqliteJobStore::CreateSchema() { return Exec(kSchema); }

absl::Status SqliteJobStore::MigrateFromV1() {
  RETURN_IF_ERROR(Exec("ALTER TABLE jobs RENAME TO jobs_v1"));
  RETURN_IF_ERROR(Exec("DROP INDEX IF EXISTS jobs_state"));
  RETURN_IF_ERROR(CreateSchema());
  // rowid order is v1's submission order; seq keeps it.
  Statement stmt(db_, "SELECT id, job FROM jobs_v1 ORDER BY rowid");
  while (true) {
    ASSIGN_OR_RETURN(const bool has_row, stmt.Step());
    if (!has_row) break;
    v1::Job job;
    const absl::string_view blob = stmt.Blob(1);
    if (!job.ParseFromArray(blob.data(), static_cast<int>(blob.size()))) {
      return absl::DataLossError(absl::StrCat("job store (sqlite): migrating to schema version ",
                                              kSchemaVersion, ": the record of job '", stmt.Text(0),
                                              "' is corrupt"));
    }
    if (job.attempt() < 1) job.set_attempt(1);
    RETURN_IF_ERROR(InsertRow(job));
  }
  return Exec("DROP TABLE jobs_v1");
}

absl::Status SqliteJobStore::Transact(const char* begin,
                                      absl::FunctionRef<absl::Status(Changes&)> body) {
  Changes changes;
  {
    std::lock_guard<std::mutex> lock(mu_);
    RETURN_IF_ERROR(Exec(begin));
    absl::Status status = body(changes);
    if (status.ok()) status = Exec("COMMIT");
    if (!status.ok()) {
      Exec("ROLLBACK").IgnoreError();
      return status;
    }
  }
  if (listener_) {
    for (const Change& change : changes) listener_(change.channel, change.payload);
  }
  return absl::OkStatus();
}

absl::Status SqliteJobStore::Read(absl::FunctionRef<absl::Status()> body) {
  return Transact("BEGIN", [&](Changes&) { return body(); });
}

absl::Status SqliteJobStore::Write(absl::FunctionRef<absl::Status(Changes&)> body) {
  // IMMEDIATE takes the write lock first, so a read-then-write transaction
  // never fails to upgrade halfway.
  return Transact("BEGIN IMMEDIATE", body);
}

absl::StatusOr<int64_t> SqliteJobStore::AppendEvent(const std::string& job_id,
                                                    const v1::JobEvent& event) {
  Statement stmt(db_, "INSERT INTO job_events(job_id, event) VALUES(?1, ?2)");
  stmt.Bind(1, job_id).BindBlob(2, event.SerializeAsString());
  RETURN_IF_ERROR(stmt.Run());
  return sqlite3_last_insert_rowid(db_);
}

absl::Status SqliteJobStore::InsertRow(const v1::Job& job) {
  Statement stmt(db_,
                 "INSERT INTO jobs(state, attempt, worker, model, precision, name, principal, job, "
                 "cancel_requested, id) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)");
  BindJob(stmt, job);
  stmt.Bind(9, int64_t{job.cancel_requested()}).Bind(10, job.id());
  return stmt.Run();
}

absl::Status SqliteJobStore::UpdateRow(int64_t seq, const v1::Job& job, int64_t lease_expires_ms,
                                       bool cancel_requested) {
  Statement stmt(db_, absl::StrCat("UPDATE jobs SET ", kJobSet,
                                   ", lease_expires_ms = ?9, cancel_requested = ?10 "
                                   "WHERE seq = ?11"));
  BindJob(stmt, job);
  stmt.Bind(9, lease_expires_ms).Bind(10, int64_t{cancel_requested}).Bind(11, seq);
  return stmt.Run();
}

absl::Status SqliteJobStore::Insert(const v1::Job& job, const QueueCaps& caps) {
  v1::Job queued = job;
  queued.set_state(v1::QUEUED);
  if (queued.attempt() < 1) queued.set_attempt(1);
  queued.clear_worker();
  queued.set_cancel_requested(false);
  return Write([&](Changes& changes) -> absl::Status {
    if (caps.max_queued > 0 || caps.max_queued_per_principal > 0) {
      Statement count(db_, absl::StrCat("SELECT COUNT(*), COALESCE(SUM(principal = ?1), 0) "
                                        "FROM jobs WHERE state = ",
                                        v1::QUEUED));
      count.Bind(1, queued.principal());
      RETURN_IF_ERROR(count.Run());
      RETURN_IF_ERROR(CheckQueueCaps(caps, count.Int(0), count.Int(1), queued.principal()));
    }
    Statement exists(db_, "SELECT 1 FROM jobs WHERE id = ?1");
    exists.Bind(1, queued.id());
    ASSIGN_OR_RETURN(const bool taken, exists.Step());
    if (taken) {
      return absl::AlreadyExistsError(
          absl::StrCat("job_id: a job '", queued.id(), "' already exists"));
    }
    RETURN_IF_ERROR(InsertRow(queued));
    RETURN_IF_ERROR(
        AppendEvent(queued.id(), MakeJobEvent(v1::JobEvent::STATE_CHANGED, queued, "queued"))
            .status());
    changes.push_back({StoreChannel::kJobs, queued.id()});
    return absl::OkStatus();
  });
}

absl::StatusOr<v1::Job> SqliteJobStore::Get(const std::string& id) {
  ASSIGN_OR_RETURN(JobSnapshot snapshot, Snapshot(id));
  return std::move(snapshot.job);
}

absl::StatusOr<JobSnapshot> SqliteJobStore::Snapshot(const std::string& id) {
  JobSnapshot snapshot;
  RETURN_IF_ERROR(Read([&]() -> absl::Status {
    Statement stmt(db_, absl::StrCat("SELECT ", kJobColumns, " FROM jobs WHERE id = ?1"));
    stmt.Bind(1, id);
    ASSIGN_OR_RETURN(std::vector<Row> rows, ReadRows(stmt));
    if (rows.empty()) return NoSuchJob(id);
    snapshot.job = std::move(rows[0].job);
    Statement last(db_, "SELECT COALESCE(MAX(seq), 0) FROM job_events WHERE job_id = ?1");
    last.Bind(1, id);
    RETURN_IF_ERROR(last.Run());
    snapshot.last_event_seq = last.Int(0);
    return absl::OkStatus();
  }));
  return snapshot;
}

absl::StatusOr<JobPage> SqliteJobStore::List(const JobQuery& query) {
  std::vector<std::string> where;
  std::vector<std::string> args;  // bound to the ?s in order
  if (!query.states.empty()) {
    where.push_back(absl::StrCat("state IN (", absl::StrJoin(query.states, ", "), ")"));
  }
  const auto match = [&](const char* column, const std::string& value) {
    where.push_back(absl::StrCat(column, " = ?"));
    args.push_back(value);
  };
  if (!query.model.empty()) match("model", query.model);
  if (!query.precision.empty()) match("precision", query.precision);
  if (!query.name.empty()) match("name", query.name);
  if (query.principal.has_value()) match("principal", *query.principal);
  if (query.before_seq > 0) where.push_back(absl::StrCat("seq < ", query.before_seq));
  std::string sql = absl::StrCat("SELECT ", kJobColumns, " FROM jobs");
  if (!where.empty()) absl::StrAppend(&sql, " WHERE ", absl::StrJoin(where, " AND "));
  absl::StrAppend(&sql, " ORDER BY seq DESC");
  // One row more than asked tells whether an older page exists.
  if (query.limit > 0) absl::StrAppend(&sql, " LIMIT ", query.limit + 1);

  std::vector<Row> rows;
  RETURN_IF_ERROR(Read([&]() -> absl::Status {
    Statement stmt(db_, sql);
    for (size_t i = 0; i < args.size(); ++i) stmt.Bind(static_cast<int>(i + 1), args[i]);
    ASSIGN_OR_RETURN(rows, ReadRows(stmt));
    return absl::OkStatus();
  }));
  JobPage page;
  if (query.limit > 0 && rows.size() > static_cast<size_t>(query.limit)) {
    rows.resize(query.limit);
    page.next_before_seq = rows.back().seq;
  }
  for (Row& row : rows) page.jobs.push_back(std::move(row.job));
  return page;
}

absl::Status SqliteJobStore::Delete(const std::string& id) {
  return Write([&](Changes& changes) -> absl::Status {
    Statement stmt(db_, "SELECT state FROM jobs WHERE id = ?1");
    stmt.Bind(1, id);
    ASSIGN_OR_RETURN(const bool found, stmt.Step());
    if (!found) return NoSuchJob(id);
    const auto state = static_cast<v1::JobState>(stmt.Int(0));
    if (!IsTerminal(state)) {
      return NotDeletable(id, state);
    }
    Statement events(db_, "DELETE FROM job_events WHERE job_id = ?1");
    RETURN_IF_ERROR(events.Bind(1, id).Run());
    Statement job(db_, "DELETE FROM jobs WHERE id = ?1");
    RETURN_IF_ERROR(job.Bind(1, id).Run());
    changes.push_back({StoreChannel::kJobs, id});
    return absl::OkStatus();
  });
}

absl::StatusOr<JobCounts> SqliteJobStore::Count() {
  JobCounts counts;
  RETURN_IF_ERROR(Read([&]() -> absl::Status {
    Statement stmt(db_, absl::StrCat("SELECT state, COUNT(*) FROM jobs WHERE state IN (",
                                     v1::QUEUED, ", ", v1::RUNNING, ") GROUP BY state"));
    while (true) {
      ASSIGN_OR_RETURN(const bool has_row, stmt.Step());
      if (!has_row) return absl::OkStatus();
      (stmt.Int(0) == v1::QUEUED ? counts.queued : counts.running) = stmt.Int(1);
    }
  }));
  return counts;
}

absl::StatusOr<std::optional<v1::Job>> SqliteJobStore::Claim(const std::string& worker,
                                                             absl::Duration lease) {
  std::optional<v1::Job> claimed;
  RETURN_IF_ERROR(Write([&](Changes& changes) -> absl::Status {
    Statement stmt(db_, absl::StrCat("SELECT ", kJobColumns, " FROM jobs WHERE state = ",
                                     v1::QUEUED, " ORDER BY seq LIMIT 1"));
    ASSIGN_OR_RETURN(std::vector<Row> rows, ReadRows(stmt));
    if (rows.empty()) return absl::OkStatus();
    Row& row = rows[0];
    const absl::Time now = absl::Now();
    MarkClaimed(row.job, worker, now);
    RETURN_IF_ERROR(
        UpdateRow(row.seq, row.job, absl::ToUnixMillis(now + lease), row.job.cancel_requested()));
    RETURN_IF_ERROR(AppendEvent(row.job.id(), MakeJobEvent(v1::JobEvent::STATE_CHANGED, row.job,
                                                           absl::StrCat("running on ", worker)))
                        .status());
    changes.push_back({StoreChannel::kJobs, row.job.id()});
    claimed = std::move(row.job);
    return absl::OkStatus();
  }));
  return claimed;
}

absl::StatusOr<int64_t> SqliteJobStore::Update(const v1::Job& job, const Lease& lease,
                                               const v1::JobEvent* event) {
  int64_t sequence = 0;
  RETURN_IF_ERROR(Write([&](Changes& changes) -> absl::Status {
    // Leaving RUNNING ends the lease. A cancellation request stays: a job
    // released with one is cancelled as soon as a worker claims it.
    Statement stmt(
        db_, absl::StrCat(
                 "UPDATE jobs SET ", kJobSet, ", lease_expires_ms = CASE WHEN ?1 = ", v1::RUNNING,
                 " THEN lease_expires_ms ELSE 0 END",
                 " WHERE id = ?9 AND worker = ?10 AND attempt = ?11 AND state = ", v1::RUNNING));
    BindJob(stmt, job);
    stmt.Bind(9, job.id()).Bind(10, lease.worker).Bind(11, int64_t{lease.attempt});
    RETURN_IF_ERROR(stmt.Run());
    if (sqlite3_changes(db_) == 0) {
      return absl::AbortedError(absl::StrCat("job ", job.id(), ": lease of attempt ", lease.attempt,
                                             " on ", lease.worker, " no longer held"));
    }
    if (event != nullptr) {
      ASSIGN_OR_RETURN(sequence, AppendEvent(job.id(), *event));
    }
    if (event != nullptr || job.state() != v1::RUNNING) {
      changes.push_back({StoreChannel::kJobs, job.id()});
    }
    return absl::OkStatus();
  }));
  return sequence;
}

absl::StatusOr<std::vector<HeldLease>> SqliteJobStore::Renew(
    const std::string& worker, absl::Duration lease, const std::vector<std::string>& job_ids) {
  std::vector<HeldLease> held;
  if (job_ids.empty()) return held;
  std::vector<std::string> placeholders;
  for (size_t i = 0; i < job_ids.size(); ++i) placeholders.push_back(absl::StrCat("?", i + 3));
  RETURN_IF_ERROR(Write([&](Changes&) -> absl::Status {
    Statement stmt(db_, absl::StrCat("UPDATE jobs SET lease_expires_ms = ?1 WHERE worker = ?2 "
                                     "AND state = ",
                                     v1::RUNNING, " AND id IN (", absl::StrJoin(placeholders, ","),
                                     ") RETURNING id, attempt, cancel_requested"));
    stmt.Bind(1, absl::ToUnixMillis(absl::Now() + lease)).Bind(2, worker);
    for (size_t i = 0; i < job_ids.size(); ++i) stmt.Bind(static_cast<int>(i + 3), job_ids[i]);
    while (true) {
      ASSIGN_OR_RETURN(const bool has_row, stmt.Step());
      if (!has_row) return absl::OkStatus();
      held.push_back({stmt.Text(0), static_cast<int32_t>(stmt.Int(1)), stmt.Int(2) != 0});
    }
  }));
  return held;
}

absl::StatusOr<v1::Job> SqliteJobStore::RequestCancel(const std::string& id) {
  v1::Job result;
  RETURN_IF_ERROR(Write([&](Changes& changes) -> absl::Status {
    Statement stmt(db_, absl::StrCat("SELECT ", kJobColumns, " FROM jobs WHERE id = ?1"));
    stmt.Bind(1, id);
    ASSIGN_OR_RETURN(std::vector<Row> rows, ReadRows(stmt));
    if (rows.empty()) return NoSuchJob(id);
    Row& row = rows[0];
    v1::Job& job = row.job;
    if (job.state() == v1::QUEUED) {
      MarkFinished(job, v1::CANCELLED, "", absl::Now());
      RETURN_IF_ERROR(UpdateRow(row.seq, job, 0, job.cancel_requested()));
      RETURN_IF_ERROR(
          AppendEvent(id, MakeJobEvent(v1::JobEvent::FINISHED, job, "CANCELLED")).status());
      changes.push_back({StoreChannel::kJobs, id});
    } else if (job.state() == v1::RUNNING) {
      if (!job.cancel_requested()) {
        job.set_cancel_requested(true);
        Statement set(db_, "UPDATE jobs SET cancel_requested = 1 WHERE seq = ?1");
        RETURN_IF_ERROR(set.Bind(1, row.seq).Run());
        RETURN_IF_ERROR(AppendEvent(id, MakeJobEvent(v1::JobEvent::STATE_CHANGED, job,
                                                     "cancellation requested"))
                            .status());
        changes.push_back({StoreChannel::kJobs, id});
      }
    } else {
      return NotCancellable(id, job.state());
    }
    result = std::move(job);
    return absl::OkStatus();
  }));
  return result;
}

absl::StatusOr<std::vector<v1::Job>> SqliteJobStore::ExpireLeases(bool all_running) {
  std::vector<v1::Job> expired;
  RETURN_IF_ERROR(Write([&](Changes& changes) -> absl::Status {
    const absl::Time now = absl::Now();
    std::string sql =
        absl::StrCat("SELECT ", kJobColumns, " FROM jobs WHERE state = ", v1::RUNNING);
    if (!all_running) absl::StrAppend(&sql, " AND lease_expires_ms < ", absl::ToUnixMillis(now));
    Statement stmt(db_, sql);
    ASSIGN_OR_RETURN(std::vector<Row> rows, ReadRows(stmt));
    for (Row& row : rows) {
      v1::Job& job = row.job;
      const bool requeued = MarkLeaseExpired(job, now);
      if (requeued) job.set_cancel_requested(false);
      RETURN_IF_ERROR(UpdateRow(row.seq, job, 0, job.cancel_requested()));
      const v1::JobEvent event =
          requeued ? MakeJobEvent(v1::JobEvent::STATE_CHANGED, job,
                                  absl::StrCat("re-queued: ", ReasonOfLastAttempt(job)))
                   : MakeJobEvent(v1::JobEvent::FINISHED, job,
                                  absl::StrCat(v1::JobState_Name(job.state()), ": ", job.error()));
      RETURN_IF_ERROR(AppendEvent(job.id(), event).status());
      changes.push_back({StoreChannel::kJobs, job.id()});
      expired.push_back(std::move(job));
    }
    return absl::OkStatus();
  }));
  return expired;
}

absl::StatusOr<std::vector<StoredEvent>> SqliteJobStore::EventsAfter(const std::string& id,
                                                                     int64_t after, int limit) {
  std::vector<StoredEvent> events;
  RETURN_IF_ERROR(Read([&]() -> absl::Status {
    Statement stmt(db_,
                   "SELECT seq, event FROM job_events WHERE job_id = ?1 AND seq > ?2 "
                   "ORDER BY seq LIMIT ?3");
    // A negative LIMIT is none.
    stmt.Bind(1, id).Bind(2, after).Bind(3, int64_t{limit > 0 ? limit : -1});
    while (true) {
      ASSIGN_OR_RETURN(const bool has_row, stmt.Step());
      if (!has_row) break;
      StoredEvent stored;
      stored.sequence = stmt.Int(0);
      const absl::string_view blob = stmt.Blob(1);
      if (!stored.event.ParseFromArray(blob.data(), static_cast<int>(blob.size()))) {
        return absl::DataLossError(absl::StrCat("job store (sqlite): event ", stored.sequence,
                                                " of job ", id, " is corrupt"));
      }
      stored.event.set_sequence(stored.sequence);
      events.push_back(std::move(stored));
    }
    if (!events.empty()) return absl::OkStatus();
    Statement exists(db_, "SELECT 1 FROM jobs WHERE id = ?1");
    ASSIGN_OR_RETURN(const bool found, exists.Bind(1, id).Step());
    return found ? absl::OkStatus() : NoSuchJob(id);
  }));
  return events;
}

absl::StatusOr<int64_t> SqliteJobStore::PublishModelChange(const std::string& name, bool loaded) {
  int64_t generation = 0;
  RETURN_IF_ERROR(Write([&](Changes& changes) -> absl::Status {
    Statement stmt(db_,
                   "INSERT INTO models(name, generation, loaded) VALUES(?1, 1, ?2) "
                   "ON CONFLICT(name) DO UPDATE SET generation = generation + 1, "
                   "loaded = excluded.loaded RETURNING generation");
    stmt.Bind(1, name).Bind(2, int64_t{loaded});
    RETURN_IF_ERROR(stmt.Run());
    generation = stmt.Int(0);
    changes.push_back({StoreChannel::kModels, name});
    return absl::OkStatus();
  }));
  return generation;
}

absl::StatusOr<std::vector<ModelRecord>> SqliteJobStore::ModelRecords() {
  std::vector<ModelRecord> records;
  RETURN_IF_ERROR(Read([&]() -> absl::Status {
    Statement stmt(db_, "SELECT name, generation, loaded FROM models ORDER BY name");
    while (true) {
      ASSIGN_OR_RETURN(const bool has_row, stmt.Step());
      if (!has_row) return absl::OkStatus();
      records.push_back({stmt.Text(0), stmt.Int(1), stmt.Int(2) != 0});
    }
  }));
  return records;
}

void SqliteJobStore::SetChangeListener(ChangeListener listener) { listener_ = std::move(listener); }

}  // namespace mantissa
