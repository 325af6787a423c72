#include "server/jobs/postgres_job_store.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/logging.h"
#include "server/common/status_macros.h"
#include "server/jobs/job_transitions.h"
#include "server/jobs/pg_connection.h"
#include "server/jobs/pg_listener.h"

namespace mantissa {
namespace {

constexpr int kSchemaVersion = 2;

// pg_advisory_xact_lock(kLockClass, ...) keys: "mant" and what is locked.
constexpr char kMigrationLock[] = "SELECT pg_advisory_xact_lock(1835101812, 1)";
constexpr char kInsertLock[] = "SELECT pg_advisory_xact_lock(1835101812, 2)";

// Leases are timed by the database's clock, the one clock every worker shares.
constexpr char kNowMs[] = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

// Version 1: jobs with the columns that queries filter on beside the
// serialized v1::Job, their event logs, and the model repository's records.
const char* const kSchemaV1[] = {
    "CREATE TABLE jobs ("
    "  seq BIGSERIAL PRIMARY KEY,"
    "  id TEXT NOT NULL UNIQUE,"
    "  state INT NOT NULL,"
    "  model TEXT NOT NULL DEFAULT '',"
    "  precision TEXT NOT NULL DEFAULT '',"
    "  name TEXT NOT NULL DEFAULT '',"
    "  principal TEXT NOT NULL DEFAULT '',"
    "  worker TEXT NOT NULL DEFAULT '',"
    "  attempt INT NOT NULL DEFAULT 1,"
    "  lease_expires_ms BIGINT NOT NULL DEFAULT 0,"
    "  cancel_requested BOOLEAN NOT NULL DEFAULT false,"
    "  job BYTEA NOT NULL)",
    "CREATE INDEX jobs_state_seq ON jobs (state, seq)",
    "CREATE TABLE job_events ("
    "  seq BIGSERIAL PRIMARY KEY,"
    "  job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,"
    "  event BYTEA NOT NULL)",
    "CREATE INDEX job_events_job_seq ON job_events (job_id, seq)",
    "CREATE TABLE models ("
    "  name TEXT PRIMARY KEY,"
    "  generation BIGINT NOT NULL,"
    "  loaded BOOLEAN NOT NULL)",
};

// Version 2: jobs over several nodes. Each job's node count as a column (a
// claim passes over gangs it cannot place), the workers' announced free
// slots, and the nodes of each multi-node attempt with node 0's rendezvous
// address.
const char* const kSchemaV2[] = {
    "ALTER TABLE jobs ADD COLUMN num_nodes INT NOT NULL DEFAULT 1",
    "CREATE TABLE workers ("
    "  worker TEXT PRIMARY KEY,"
    "  free_slots INT NOT NULL,"
    "  announced_until_ms BIGINT NOT NULL)",
    "CREATE TABLE job_nodes ("
    "  job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,"
    "  attempt INT NOT NULL,"
    "  node_rank INT NOT NULL,"
    "  worker TEXT NOT NULL,"
    "  taken BOOLEAN NOT NULL DEFAULT false,"
    "  rendezvous TEXT NOT NULL DEFAULT '',"
    "  PRIMARY KEY (job_id, attempt, node_rank))",
    "CREATE INDEX job_nodes_untaken ON job_nodes (worker) WHERE NOT taken",
};

// The schema versions in order: a database at version v runs the steps of
// every later one.
struct SchemaStep {
  const char* const* statements;
  size_t count;
};
constexpr SchemaStep kSchemaSteps[] = {
    {kSchemaV1, sizeof(kSchemaV1) / sizeof(kSchemaV1[0])},
    {kSchemaV2, sizeof(kSchemaV2) / sizeof(kSchemaV2[0])},
};
static_assert(sizeof(kSchemaSteps) / sizeof(kSchemaSteps[0]) == kSchemaVersion);

// Every read of a job selects these, in this order (see ReadJob).
constexpr char kJobColumns[] = "seq, id, state, attempt, worker, cancel_requested, job";
constexpr int kJobColumnCount = 7;

// Every write of a job sets these from the blob: $1 is the id (see
// JobParams); a statement's own parameters start at $10.
constexpr char kSetJobColumns[] =
    "state = $2::int, model = $3, precision = $4, name = $5, principal = $6, worker = $7, "
    "attempt = $8, job = $9";

PgParams JobParams(const v1::Job& job) {
  PgParams params;
  params.Text(job.id())
      .Int(job.state())
      .Text(job.spec().model())
      .Text(job.effective_precision())
      .Text(job.spec().name())
      .Text(job.principal())
      .Text(job.worker())
      .Int(job.attempt())
      .Bytes(job.SerializeAsString());
  return params;
}

struct JobRow {
  int64_t seq = 0;
  v1::Job job;
};

// The job of row `row` (columns kJobColumns), with the columns' values of
// state, attempt, worker and cancel_requested laid over the blob's.
absl::StatusOr<JobRow> ReadJob(const PGresult* result, int row) {
  JobRow out;
  out.seq = PgInt(result, row, 0);
  if (!out.job.ParseFromString(PgBytes(result, row, 6))) {
    return absl::DataLossError(
        absl::StrCat("job store: the record of job ", PgBytes(result, row, 1), " is corrupt"));
  }
  out.job.set_state(static_cast<v1::JobState>(PgInt(result, row, 2)));
  out.job.set_attempt(static_cast<int32_t>(PgInt(result, row, 3)));
  out.job.set_worker(PgBytes(result, row, 4));
  out.job.set_cancel_requested(PgBool(result, row, 5));
  return out;
}

absl::Status NoSuchJob(const std::string& id) {
  return absl::NotFoundError(absl::StrCat("job_id: no job '", id, "'"));
}

int64_t Millis(absl::Duration d) { return absl::ToInt64Milliseconds(d); }

int NumNodes(const v1::Job& job) { return std::max(1, job.spec().num_nodes()); }

// Appends `event` to job `id`'s log and notifies mantissa_jobs, in the
// caller's transaction; returns the event's sequence.
absl::StatusOr<int64_t> AppendEvent(PgConnection& conn, const std::string& id,
                                    const v1::JobEvent& event) {
  ASSIGN_OR_RETURN(
      PgResult result,
      conn.Exec("WITH e AS (INSERT INTO job_events (job_id, event) VALUES ($1, $2) RETURNING seq) "
                "SELECT e.seq FROM e, pg_notify('mantissa_jobs', $1)",
                PgParams().Text(id).Bytes(event.SerializeAsString())));
  return PgInt(result.get(), 0, 0);
}

absl::Status NotifyJob(PgConnection& conn, const std::string& id) {
  return conn.Run("SELECT pg_notify('mantissa_jobs', $1)", PgParams().Text(id));
}

// The reason the latest attempt ended, for the expiry event.
std::string LastReason(const v1::Job& job) {
  return job.attempts().empty() ? "" : job.attempts(job.attempts_size() - 1).reason();
}

// Other workers than $1 whose announcement holds with a slot free.
std::string OtherFreeWorkers() {
  return absl::StrCat("worker <> $1 AND free_slots > 0 AND announced_until_ms > ", kNowMs);
}

// A PostgreSQL text[] literal of `values`, each quoted.
std::string TextArray(const std::vector<std::string>& values) {
  std::string out = "{";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out += ',';
    out += '"';
    for (char c : values[i]) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  return out + "}";
}

// "w1", or "w1 (nodes w1, w2, w3)" for a job over several nodes.
std::string NodesText(const v1::Job& job) {
  if (job.nodes_size() == 0) return job.worker();
  return absl::StrCat(job.worker(), " (nodes ", absl::StrJoin(job.nodes(), ", "), ")");
}

// The oldest QUEUED job after sequence `after` over at most `others_free` + 1
// nodes (unset: as many other workers as are free now), locked (SKIP
// LOCKED: workers claiming together each take a different job instead of
// queueing behind one another's row lock).
absl::StatusOr<std::optional<JobRow>> NextQueued(PgConnection& conn, const std::string& worker,
                                                 std::optional<int64_t> others_free,
                                                 int64_t after) {
  PgParams params;
  params.Text(worker).Int(after);
  if (others_free.has_value()) {
    params.Int(*others_free);
  } else {
    params.Null();
  }
  ASSIGN_OR_RETURN(
      PgResult result,
      conn.Exec(absl::StrCat("SELECT ", kJobColumns,
                             " FROM jobs WHERE state = 1 AND seq > $2 AND num_nodes <= 1 + "
                             "coalesce($3::bigint, (SELECT count(*) FROM workers WHERE ",
                             OtherFreeWorkers(), ")) ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED"),
                params));
  if (PQntuples(result.get()) == 0) return std::optional<JobRow>();
  ASSIGN_OR_RETURN(JobRow row, ReadJob(result.get(), 0));
  return std::optional<JobRow>(std::move(row));
}

// Up to `n` other workers with a free slot, locked until the transaction
// ends; those locked by other claims are passed over.
absl::StatusOr<std::vector<std::string>> LockFreeWorkers(PgConnection& conn,
                                                         const std::string& worker, int n) {
  ASSIGN_OR_RETURN(PgResult result,
                   conn.Exec(absl::StrCat("SELECT worker FROM workers WHERE ", OtherFreeWorkers(),
                                          " ORDER BY worker LIMIT $2 FOR UPDATE SKIP LOCKED"),
                             PgParams().Text(worker).Int(n)));
  std::vector<std::string> workers(PQntuples(result.get()));
  for (int i = 0; i < static_cast<int>(workers.size()); ++i) {
    workers[i] = PgBytes(result.get(), i, 0);
  }
  return workers;
}

// Takes a slot of each of `job`'s other nodes and records one assignment
// per node of its attempt (node 0, the claimer's, taken already).
absl::Status PlaceNodes(PgConnection& conn, const v1::Job& job) {
  const std::vector<std::string> nodes(job.nodes().begin(), job.nodes().end());
  const std::vector<std::string> others(nodes.begin() + 1, nodes.end());
  RETURN_IF_ERROR(
      conn.Run("UPDATE workers SET free_slots = free_slots - 1 "
               "WHERE worker = ANY($1::text[])",
               PgParams().Text(TextArray(others))));
  return conn.Run(
      "INSERT INTO job_nodes (job_id, attempt, node_rank, worker, taken) "
      "SELECT $1, $2::int, (t.n - 1)::int, t.w, t.n = 1 "
      "FROM unnest($3::text[]) WITH ORDINALITY AS t(w, n)",
      PgParams().Text(job.id()).Int(job.attempt()).Text(TextArray(nodes)));
}

// A job over several nodes left RUNNING: its assignments and rendezvous go.
absl::Status ForgetNodes(PgConnection& conn, const v1::Job& job) {
  if (NumNodes(job) <= 1 || job.state() == v1::RUNNING) return absl::OkStatus();
  return conn.Run("DELETE FROM job_nodes WHERE job_id = $1", PgParams().Text(job.id()));
}

// NOT_FOUND for an unknown job, ABORTED once `attempt` no longer runs,
// FAILED_PRECONDITION for an attempt on one node.
absl::Status AttemptGone(PgConnection& conn, const std::string& id, int32_t attempt) {
  ASSIGN_OR_RETURN(PgResult found,
                   conn.Exec("SELECT state, attempt FROM jobs WHERE id = $1", PgParams().Text(id)));
  if (PQntuples(found.get()) == 0) return NoSuchJob(id);
  if (PgInt(found.get(), 0, 0) == v1::RUNNING && PgInt(found.get(), 0, 1) == attempt) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", id, ": attempt ", attempt, " runs on one node; it has no rendezvous"));
  }
  return absl::AbortedError(
      absl::StrCat("job ", id, ": attempt ", attempt, " no longer runs (the job is ",
                   v1::JobState_Name(static_cast<v1::JobState>(PgInt(found.get(), 0, 0))),
                   " at attempt ", PgInt(found.get(), 0, 1), ")"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<PostgresJobStore>> PostgresJobStore::Create(Options options) {
  ASSIGN_OR_RETURN(std::unique_ptr<PgConnectionPool> pool,
                   PgConnectionPool::Create(std::move(options.uri), options.pool_size));
  std::unique_ptr<PostgresJobStore> store(new PostgresJobStore(std::move(pool)));
  if (absl::Status s = store->Migrate(); !s.ok()) {
    // Beyond an outage, a failure here is the database's setup (privileges,
    // a foreign "jobs" table): nothing a retry mends.
    const absl::StatusCode code =
        absl::IsUnavailable(s) ? s.code() : absl::StatusCode::kFailedPrecondition;
    return absl::Status(code, absl::StrCat("--database: ", store->pool_->connector().redacted_uri(),
                                           ": creating the job store's tables: ", s.message()));
  }
  return store;
}

PostgresJobStore::PostgresJobStore(std::unique_ptr<PgConnectionPool> pool)
    : pool_(std::move(pool)) {}

// Stops the listener before the pool its connector belongs to goes.
PostgresJobStore::~PostgresJobStore() { listener_.reset(); }

absl::Status PostgresJobStore::Migrate() {
  ASSIGN_OR_RETURN(PgConnectionPool::Borrowed conn, pool_->Borrow());
  ASSIGN_OR_RETURN(std::unique_ptr<PgTransaction> tx, PgTransaction::Begin(*conn));
  // Serializes the whole check-and-create across processes starting together
  // (CREATE TABLE IF NOT EXISTS alone is not safe against concurrent runs).
  RETURN_IF_ERROR(conn->Run(kMigrationLock));
  RETURN_IF_ERROR(conn->Run("CREATE TABLE IF NOT EXISTS mantissa_schema (version INT NOT NULL)"));
  ASSIGN_OR_RETURN(PgResult result,
                   conn->Exec("SELECT coalesce(max(version), 0) FROM mantissa_schema"));
  const int64_t version = PgInt(result.get(), 0, 0);
  if (version > kSchemaVersion) {
    return absl::FailedPreconditionError(absl::StrCat("the schema is at version ", version,
                                                      ", newer than this mantissad's (",
                                                      kSchemaVersion, "); upgrade mantissad"));
  }
  if (version == kSchemaVersion) return tx->Commit();
  for (int64_t v = version; v < kSchemaVersion; ++v) {
    const SchemaStep& step = kSchemaSteps[v];
    for (size_t i = 0; i < step.count; ++i) RETURN_IF_ERROR(conn->Run(step.statements[i]));
  }
  RETURN_IF_ERROR(conn->Run("DELETE FROM mantissa_schema"));
  RETURN_IF_ERROR(conn->Run("INSERT INTO mantissa_schema (version) VALUES ($1::int)",
                            PgParams().Int(kSchemaVersion)));
  return tx->Commit();
}

absl::Status PostgresJobStore::Insert(const v1::Job& submitted, const QueueCaps& caps) {
  v1::Job job = submitted;
  job.set_state(v1::QUEUED);
  if (job.attempt() < 1) job.set_attempt(1);
  job.clear_worker();
  job.set_cancel_requested(false);
  const v1::JobEvent event = MakeJobEvent(v1::JobEvent::STATE_CHANGED, job, "queued");

  ASSIGN_OR_RETURN(PgConnectionPool::Borrowed conn, pool_->Borrow());
  ASSIGN_OR_RETURN(std::unique_ptr<PgTransaction> tx, PgTransaction::Begin(*conn));
  if (caps.max_queued > 0 || caps.max_queued_per_principal > 0) {
    // Without the lock two workers could both count one below the cap.
    RETURN_IF_ERROR(conn->Run(kInsertLock));
    ASSIGN_OR_RETURN(PgResult counts,
                     conn->Exec("SELECT count(*), count(*) FILTER (WHERE principal = $1) "
                                "FROM jobs WHERE state = 1",
                                PgParams().Text(job.principal())));
    RETURN_IF_ERROR(CheckQueueCaps(caps, PgInt(counts.get(), 0, 0), PgInt(counts.get(), 0, 1),
                                   job.principal()));
  }
  ASSIGN_OR_RETURN(PgResult inserted,
                   conn->Exec("INSERT INTO jobs (id, state, model, precision, name, principal, "
                              "worker, attempt, job, num_nodes) "
                              "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::int) "
                              "ON CONFLICT (id) DO NOTHING RETURNING seq",
                              JobParams(job).Int(NumNodes(job))));
  if (PQntuples(inserted.get()) == 0) {
    return absl::AlreadyExistsError(absl::StrCat("job_id: a job '", job.id(), "' already exists"));
  }
  RETURN_IF_ERROR(AppendEvent(*conn, job.id(), event).status());
  return tx->Commit();
}

absl::StatusOr<v1::Job> PostgresJobStore::Get(const std::string& id) {
  ASSIGN_OR_RETURN(PgConnectionPool::Borrowed conn, pool_->Borrow());
  ASSIGN_OR_RETURN(PgResult result,
                   conn->Exec(absl::StrCat("SELECT ", kJobColumns, " FROM jobs WHERE id = $1"),
                              PgParams().Text(id)));
  if (PQntuples(result.get()) == 0) return NoSuchJob(id);
  ASSIGN_OR_RETURN(JobRow row, ReadJob(result.get(), 0));
  return std::move(row.job);
}

absl::StatusOr<JobSnapshot> PostgresJobStore::Snapshot(const std::string& id) {
  ASSIGN_OR_RETURN(PgConnectionPool::Borrowed conn, pool_->Borrow());
  // One statement reads both as of one instant.
  ASSIGN_OR_RETURN(
      PgResult result,
      conn->Exec(absl::StrCat("SELECT ", kJobColumns,
                              ", (SELECT coalesce(max(seq), 0) FROM job_events WHERE job_id = $1) "
                              "FROM jobs WHERE id = $1"),
                 PgParams().Text(id)));
  if (PQntuples(result.get()) == 0) return NoSuchJob(id);
  ASSIGN_OR_RETURN(JobRow row, ReadJob(result.get(), 0));
  JobSnapshot snapshot;
  snapshot.job = std::move(row.job);
  snapshot.last_event_seq = PgInt(result.get(), 0, kJobColumnCount);
  return snapshot;
}

absl::StatusOr<JobPage> PostgresJobStore::List(const JobQuery& query) {
  std::string sql = absl::StrCat("SELECT ", kJobColumns, " FROM jobs WHERE true");
  PgParams params;
  auto filter = [&](const std::string& condition, const std::string& value) {
    params.Text(value);
    absl::StrAppend(&sql, " AND ", condition, " $", params.size());
  };
  if (!query.states.empty()) {
    params.Text(absl::StrCat("{", absl::StrJoin(query.states, ","), "}"));
    absl::StrAppend(&sql, " AND state = ANY ($", params.size(), "::int[])");
  }
  if (!query.model.empty()) filter("model =", query.model);
  if (!query.precision.empty()) filter("precision =", query.precision);
  if (!query.name.empty()) filter("name =", query.name);
  if (query.principal.has_value()) filter("principal =", *query.principal);
  if (query.before_seq > 0) filter("seq <", std::to_string(query.before_seq));
  absl::StrAppend(&sql, " ORDER BY seq DESC");
  // One more than asked tells whether an older page exists.
  if (query.limit > 0) absl::StrAppend(&sql, " LIMIT ", query.limit + 1);

  ASSIGN_OR_RETURN(PgConnectionPool::Borrowed conn, pool_->Borrow());
  ASSIGN_OR_RETURN(PgResult result, conn->Exec(sql, params));
  const int rows = PQntuples(result.get());
  JobPage page;
  for (int i = 0; i < rows; ++i) {
    if (query.limit > 0 && i == query.limit) {
      page.next_before_seq = PgInt(result.get(), i - 1, 0);
      break;
    }
    ASSIGN_OR_RETURN(JobRow row, ReadJob(result.get(), i));
    page.jobs.push_back(std::move(row.job));
  }
  return page;
}

absl::Status PostgresJobStore::Delete(const std::string& id) {
  ASSIGN_OR_RETURN(PgConnectionPool::Borrowed conn, pool_->Borrow());
  ASSIGN_OR_RETURN(std::unique_ptr<PgTransaction> tx, PgTransaction::Begin(*conn));
  ASSIGN_OR_RETURN(PgResult result, conn->Exec("SELECT state FROM jobs WHERE id = $1 FOR UPDATE",
                                               PgParams().Text(id)));
  if (PQntuples(result.get()) == 0) return NoSuchJob(id);
  const auto state = static_cast<v1::JobState>(PgInt(result.get(), 0, 0));
  if (!IsTerminal(state)) {
    return NotDeletable(id, state);
  }
  // Its events go with it (ON DELETE CASCADE).
  RETURN_IF_ERROR(conn->Run("DELETE FROM jobs WHERE id = $1", PgParams().Text(id)));
  RETURN_IF_ERROR(NotifyJob(*conn, id));
  return tx->Commit();
}

absl::StatusOr<JobCounts> PostgresJobStore::Count() {
  ASSIGN_OR_RETURN(PgConnectionPool::Borrowed conn, pool_->Borrow());
  ASSIGN_OR_RETURN(PgResult result,
                   conn->Exec("SELECT count(*) FILTER (WHERE state = 1), "
                              "count(*) FILTER (WHERE state = 2) FROM jobs WHERE state IN (1, 2)"));
  JobCounts counts;
  counts.queued = PgInt(result.get(), 0, 0);
  counts.running = PgInt(result.get(), 0, 1);
  return counts;
}

absl::StatusOr<std::optional<v1::Job>> PostgresJobStore::Claim(const std::string& worker,
                                                               absl::Duration lease) {
  ASSIGN_OR_RETURN(PgConnectionPool::Borrowed conn, pool_->Borrow());
  // Uncommitted (rolled back) unless a job is claimed.
  ASSIGN_OR_RETURN(std::unique_ptr<PgTransaction> tx, PgTransaction::Begin(*conn));
  // A queued job over more nodes than there are other free workers is passed
  // over, so that a gang never holds up the jobs queued behind it.
  ASSIGN_OR_RETURN(std::optional<JobRow> row, NextQueued(*conn, worker, std::nullopt, 0));
  if (!row.has_value()) return std::optional<v1::Job>();
  // This worker's own announced slot goes first: locks are taken in the
  // order own row, then others' rows with SKIP LOCKED, so that two workers
  // placing gangs on each other never wait for one another in a cycle.
  ASSIGN_OR_RETURN(PgResult own,
                   conn->Exec(absl::StrCat("UPDATE workers SET free_slots = free_slots - 1 "
                                           "WHERE worker = $1 AND announced_until_ms > ",
                                           kNowMs, " RETURNING free_slots"),
                              PgParams().Text(worker)));
  if (PQntuples(own.get()) > 0 && PgInt(own.get(), 0, 0) < 0) {
    // Its free slot went to another worker's gang, whose node it must run
    // first (TakeAssignments).
    return std::optional<v1::Job>();
  }
  std::vector<std::string> others;
  while (NumNodes(row->job) > 1) {
    ASSIGN_OR_RETURN(others, LockFreeWorkers(*conn, worker, NumNodes(row->job) - 1));
    if (static_cast<int>(others.size()) == NumNodes(row->job) - 1) break;
    // Taken meanwhile by other claims: a smaller job may still fit.
    ASSIGN_OR_RETURN(row, NextQueued(*conn, worker, static_cast<int64_t>(others.size()), row->seq));
    if (!row.has_value()) return std::optional<v1::Job>();
    others.clear();
  }
  v1::Job& job = row->job;
  MarkClaimed(job, worker, absl::Now());
  if (!others.empty()) {
    job.add_nodes(worker);
    for (const std::string& other : others) job.add_nodes(other);
    RETURN_IF_ERROR(PlaceNodes(*conn, job));
  }
  RETURN_IF_ERROR(conn->Run(absl::StrCat("UPDATE jobs SET ", kSetJobColumns,
                                         ", lease_expires_ms = ", kNowMs, " + $10 WHERE id = $1"),
                            JobParams(job).Int(Millis(lease))));
  RETURN_IF_ERROR(AppendEvent(*conn, job.id(),
                              MakeJobEvent(v1::JobEvent::STATE_CHANGED, job,
                                           absl::StrCat("running on ", NodesText(job))))
                      .status());
  RETURN_IF_ERROR(tx->Commit());
  return std::optional<v1::Job>(std::move(job));
}

absl::StatusOr<int64_t> PostgresJobStore::Update(const v1::Job& job, const Lease& lease,
                                                 const v1::JobEvent* event) {
  ASSIGN_OR_RETURN(PgConnectionPool::Borrowed conn, pool_->Borrow());
  ASSIGN_OR_RETURN(std::unique_ptr<PgTransaction> tx, PgTransaction::Begin(*conn));
  // Leaving RUNNING ends the lease. A cancellation request stays: a job
  // released with one is cancelled as soon as a worker claims it.
  ASSIGN_OR_RETURN(
      PgResult result,
      conn->Exec(absl::StrCat("UPDATE jobs SET ", kSetJobColumns,
                              ", lease_expires_ms = CASE WHEN $2::int = 2 THEN lease_expires_ms "
                              "ELSE 0 END "
                              "WHERE id = $1 AND worker = $10 AND attempt = $11::int AND state = 2 "
                              "RETURNING seq"),
                 JobParams(job).Text(lease.worker).Int(lease.attempt)));
  if (PQntuples(result.get()) == 0) {
    return absl::AbortedError(absl::StrCat("job ", job.id(), ": lease of attempt ", lease.attempt,
                                           " on ", lease.worker, " no longer held"));
  }
  RETURN_IF_ERROR(ForgetNodes(*conn, job));
  int64_t sequence = 0;
  if (event != nullptr) {
    ASSIGN_OR_RETURN(sequence, AppendEvent(*conn, job.id(), *event));
  } else if (job.state() != v1::RUNNING) {
    RETURN_IF_ERROR(NotifyJob(*conn, job.id()));
  }
  RETURN_IF_ERROR(tx->Commit());
  return sequence;
}

absl::StatusOr<std::vector<HeldLease>> PostgresJobStore::Renew(
    const std::string& worker, absl::Duration lease, const std::vector<std::string>& job_ids) {
  if (job_ids.empty()) return std::vector<HeldLease>();
  ASSIGN_OR_RETURN(PgConnectionPool::Borrowed conn, pool_->Borrow());
  // Ids are hex digits; the list travels as one comma-separated parameter.
  ASSIGN_OR_RETURN(
      PgResult result,
      conn->Exec(absl::StrCat("UPDATE jobs SET lease_expires_ms = ", kNowMs,
                              " + $2 WHERE worker = $1 AND state = 2 "
                              "AND id = ANY(string_to_array($3, ',')) "
                              "RETURNING id, attempt, cancel_requested"),
                 PgParams().Text(worker).Int(Millis(lease)).Text(absl::StrJoin(job_ids, ","))));
  std::vector<HeldLease> held(PQntuples(result.get()));
  for (int i = 0; i < static_cast<int>(held.size()); ++i) {
    held[i].job_id = PgBytes(result.get(), i, 0);
    held[i].attempt = static_cast<int32_t>(PgInt(result.get(), i, 1));
    held[i].cancel_requested = PgBool(result.get(), i, 2);
  }
  return held;
}

absl::StatusOr<v1::Job> PostgresJobStore::RequestCancel(const std::string& id) {
  ASSIGN_OR_RETURN(PgConnectionPool::Borrowed conn, pool_->Borrow());
  ASSIGN_OR_RETURN(std::unique_ptr<PgTransaction> tx, PgTransaction::Begin(*conn));
  ASSIGN_OR_RETURN(PgResult result, conn->Exec(absl::StrCat("SELECT ", kJobColumns,
                                                            " FROM jobs WHERE id = $1 FOR UPDATE"),
                                               PgParams().Text(id)));
  if (PQntuples(result.get()) == 0) return NoSuchJob(id);
  ASSIGN_OR_RETURN(JobRow row, ReadJob(result.get(), 0));
  v1::Job& job = row.job;
  v1::JobEvent event;
  if (job.state() == v1::QUEUED) {
    MarkFinished(job, v1::CANCELLED, "", absl::Now());
    RETURN_IF_ERROR(conn->Run(
        absl::StrCat("UPDATE jobs SET ", kSetJobColumns, ", lease_expires_ms = 0 WHERE id = $1"),
        JobParams(job)));
    event = MakeJobEvent(v1::JobEvent::FINISHED, job, "CANCELLED");
  } else if (job.state() == v1::RUNNING) {
    // Asked already: the worker will see it at its next renewal.
    if (job.cancel_requested()) return job;
    job.set_cancel_requested(true);
    RETURN_IF_ERROR(conn->Run(
        absl::StrCat("UPDATE jobs SET ", kSetJobColumns, ", cancel_requested = true WHERE id = $1"),
        JobParams(job)));
    event = MakeJobEvent(v1::JobEvent::STATE_CHANGED, job, "cancellation requested");
  } else {
    return NotCancellable(id, job.state());
  }
  RETURN_IF_ERROR(AppendEvent(*conn, id, event).status());
  RETURN_IF_ERROR(tx->Commit());
  return job;
}

absl::StatusOr<std::vector<v1::Job>> PostgresJobStore::ExpireLeases(bool all_running) {
  ASSIGN_OR_RETURN(PgConnectionPool::Borrowed conn, pool_->Borrow());
  ASSIGN_OR_RETURN(std::unique_ptr<PgTransaction> tx, PgTransaction::Begin(*conn));
  // SKIP LOCKED: a row locked now is being renewed or written by its worker,
  // or expired by another worker's sweep.
  ASSIGN_OR_RETURN(PgResult result,
                   conn->Exec(absl::StrCat("SELECT ", kJobColumns,
                                           " FROM jobs WHERE state = 2 AND ($1::boolean OR "
                                           "lease_expires_ms < ",
                                           kNowMs, ") ORDER BY seq FOR UPDATE SKIP LOCKED"),
                              PgParams().Bool(all_running)));
  std::vector<v1::Job> changed;
  const absl::Time now = absl::Now();
  for (int i = 0; i < PQntuples(result.get()); ++i) {
    ASSIGN_OR_RETURN(JobRow row, ReadJob(result.get(), i));
    v1::Job& job = row.job;
    const bool requeued = MarkLeaseExpired(job, now);
    if (requeued) job.set_cancel_requested(false);
    RETURN_IF_ERROR(conn->Run(absl::StrCat("UPDATE jobs SET ", kSetJobColumns,
                                           ", lease_expires_ms = 0, cancel_requested = $10 "
                                           "WHERE id = $1"),
                              JobParams(job).Bool(job.cancel_requested())));
    RETURN_IF_ERROR(ForgetNodes(*conn, job));
    const v1::JobEvent event =
        requeued ? MakeJobEvent(v1::JobEvent::STATE_CHANGED, job,
                                absl::StrCat("re-queued: ", LastReason(job)))
                 : MakeJobEvent(v1::JobEvent::FINISHED, job,
                                absl::StrCat(v1::JobState_Name(job.state()), ": ", job.error()));
    RETURN_IF_ERROR(AppendEvent(*conn, job.id(), event).status());
    changed.push_back(std::move(job));
  }
  RETURN_IF_ERROR(tx->Commit());
  return changed;
}

absl::Status PostgresJobStore::AnnounceWorker(const std::string& worker, int free_slots,
                                              absl::Duration ttl) {
  ASSIGN_OR_RETURN(PgConnectionPool::Borrowed conn, pool_->Borrow());
  ASSIGN_OR_RETURN(std::unique_ptr<PgTransaction> tx, PgTransaction::Begin(*conn));
  // The worker's row is locked first: a claim placing a node here holds it
  // until it commits, and the count below, a statement of its own, then
  // sees that node (one statement would count from before the claim and
  // hand its slot out again).
  RETURN_IF_ERROR(
      conn->Run("INSERT INTO workers (worker, free_slots, announced_until_ms) VALUES ($1, 0, 0) "
                "ON CONFLICT (worker) DO NOTHING",
                PgParams().Text(worker)));
  RETURN_IF_ERROR(
      conn->Run("SELECT 1 FROM workers WHERE worker = $1 FOR UPDATE", PgParams().Text(worker)));
  // Nodes placed on the worker that it has not taken yet hold slots its own
  // count does not know of.
  RETURN_IF_ERROR(conn->Run(
      absl::StrCat("INSERT INTO workers (worker, free_slots, announced_until_ms) "
                   "SELECT $1, $2::int - count(*), ",
                   kNowMs,
                   " + $3 FROM job_nodes n JOIN jobs j ON j.id = n.job_id "
                   "WHERE n.worker = $1 AND NOT n.taken AND j.state = 2 AND j.attempt = n.attempt "
                   "ON CONFLICT (worker) DO UPDATE SET free_slots = excluded.free_slots, "
                   "announced_until_ms = excluded.announced_until_ms"),
      PgParams().Text(worker).Int(free_slots).Int(Millis(ttl))));
  return tx->Commit();
}

absl::StatusOr<std::vector<NodeAssignment>> PostgresJobStore::TakeAssignments(
    const std::string& worker) {
  ASSIGN_OR_RETURN(PgConnectionPool::Borrowed conn, pool_->Borrow());
  // One statement: each assignment is marked taken as it is returned, once.
  ASSIGN_OR_RETURN(
      PgResult result,
      conn->Exec("UPDATE job_nodes n SET taken = true FROM jobs j "
                 "WHERE n.worker = $1 AND NOT n.taken AND n.node_rank > 0 AND j.id = n.job_id "
                 "AND j.state = 2 AND j.attempt = n.attempt "
                 "RETURNING j.seq, j.id, j.state, j.attempt, j.worker, j.cancel_requested, j.job, "
                 "n.node_rank",
                 PgParams().Text(worker)));
  std::vector<NodeAssignment> assignments;
  for (int i = 0; i < PQntuples(result.get()); ++i) {
    ASSIGN_OR_RETURN(JobRow row, ReadJob(result.get(), i));
    assignments.push_back(
        {std::move(row.job), static_cast<int>(PgInt(result.get(), i, kJobColumnCount))});
  }
  return assignments;
}

absl::Status PostgresJobStore::PublishRendezvous(const std::string& id, int32_t attempt,
                                                 const std::string& address) {
  ASSIGN_OR_RETURN(PgConnectionPool::Borrowed conn, pool_->Borrow());
  ASSIGN_OR_RETURN(PgResult result,
                   conn->Exec("UPDATE job_nodes n SET rendezvous = $3 FROM jobs j "
                              "WHERE n.job_id = $1 AND n.attempt = $2::int AND n.node_rank = 0 "
                              "AND j.id = n.job_id AND j.state = 2 AND j.attempt = $2::int "
                              "RETURNING 1",
                              PgParams().Text(id).Int(attempt).Text(address)));
  if (PQntuples(result.get()) > 0) return absl::OkStatus();
  return AttemptGone(*conn, id, attempt);
}

absl::StatusOr<std::string> PostgresJobStore::Rendezvous(const std::string& id, int32_t attempt) {
  ASSIGN_OR_RETURN(PgConnectionPool::Borrowed conn, pool_->Borrow());
  ASSIGN_OR_RETURN(PgResult result,
                   conn->Exec("SELECT coalesce(n.rendezvous, '') FROM jobs j LEFT JOIN job_nodes n "
                              "ON n.job_id = j.id AND n.attempt = j.attempt AND n.node_rank = 0 "
                              "WHERE j.id = $1 AND j.state = 2 AND j.attempt = $2::int",
                              PgParams().Text(id).Int(attempt)));
  if (PQntuples(result.get()) > 0) return PgBytes(result.get(), 0, 0);
  return AttemptGone(*conn, id, attempt);
}

absl::StatusOr<std::vector<StoredEvent>> PostgresJobStore::EventsAfter(const std::string& id,
                                                                       int64_t after, int limit) {
  PgParams params;
  params.Text(id).Int(after);
  if (limit > 0) {
    params.Int(limit);
  } else {
    params.Null();  // LIMIT NULL: all
  }
  ASSIGN_OR_RETURN(PgConnectionPool::Borrowed conn, pool_->Borrow());
  ASSIGN_OR_RETURN(PgResult result,
                   conn->Exec("SELECT seq, event FROM job_events WHERE job_id = $1 AND seq > $2 "
                              "ORDER BY seq LIMIT $3",
                              params));
  std::vector<StoredEvent> events(PQntuples(result.get()));
  if (events.empty()) {
    // Only then does it matter whether the job is gone (a follower stops).
    ASSIGN_OR_RETURN(PgResult found,
                     conn->Exec("SELECT 1 FROM jobs WHERE id = $1", PgParams().Text(id)));
    if (PQntuples(found.get()) == 0) return NoSuchJob(id);
  }
  for (int i = 0; i < static_cast<int>(events.size()); ++i) {
    events[i].sequence = PgInt(result.get(), i, 0);
    if (!events[i].event.ParseFromString(PgBytes(result.get(), i, 1))) {
      return absl::DataLossError(
          absl::StrCat("job store: event ", events[i].sequence, " of job ", id, " is corrupt"));
    }
    events[i].event.set_sequence(events[i].sequence);
  }
  return events;
}

absl::StatusOr<int64_t> PostgresJobStore::PublishModelChange(const std::string& name, bool loaded) {
  ASSIGN_OR_RETURN(PgConnectionPool::Borrowed conn, pool_->Borrow());
  // One statement, so one implicit transaction with its notification.
  ASSIGN_OR_RETURN(PgResult result,
                   conn->Exec("WITH m AS (INSERT INTO models (name, generation, loaded) "
                              "VALUES ($1, 1, $2::boolean) ON CONFLICT (name) DO UPDATE "
                              "SET generation = models.generation + 1, loaded = excluded.loaded "
                              "RETURNING generation) "
                              "SELECT m.generation FROM m, pg_notify('mantissa_models', $1)",
                              PgParams().Text(name).Bool(loaded)));
  return PgInt(result.get(), 0, 0);
}

absl::StatusOr<std::vector<ModelRecord>> PostgresJobStore::ModelRecords() {
  ASSIGN_OR_RETURN(PgConnectionPool::Borrowed conn, pool_->Borrow());
  ASSIGN_OR_RETURN(PgResult result,
                   conn->Exec("SELECT name, generation, loaded FROM models ORDER BY name"));
  std::vector<ModelRecord> records(PQntuples(result.get()));
  for (int i = 0; i < static_cast<int>(records.size()); ++i) {
    records[i].name = PgBytes(result.get(), i, 0);
    records[i].generation = PgInt(result.get(), i, 1);
    records[i].loaded = PgBool(result.get(), i, 2);
  }
  return records;
}

void PostgresJobStore::SetChangeListener(ChangeListener listener) {
  std::call_once(listen_once_, [&] {
    PgListener::Options options;
    options.connector = &pool_->connector();
    options.channels = {"mantissa_jobs", "mantissa_models"};
    options.on_notify = [listener](const std::string& channel, const std::string& payload) {
      listener(channel == "mantissa_models" ? StoreChannel::kModels : StoreChannel::kJobs, payload);
    };
    // Notifications sent while disconnected are lost: have followers look.
    options.on_reconnect = [listener] { listener(StoreChannel::kJobs, ""); };
    listener_ = PgListener::Start(std::move(options));
  });
}

}  // namespace mantissa
