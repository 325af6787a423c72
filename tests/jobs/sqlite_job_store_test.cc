// What only the SQLite store has: the v1 schema's migration, the one-daemon
// flock, reopening after a daemon stopped; and OpenJobStore's parsing of
// --database with RedactDatabase. The shared behaviour of both stores is in
// job_store_contract_test.cc.
#include "server/jobs/sqlite_job_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "mantissa/v1/training.pb.h"
#include "server/jobs/job_store.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace mantissa {
namespace {

using ::mantissa::testing::StatusIs;
using ::mantissa::testing::TempDir;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::Pair;

v1::Job MakeJob(const std::string& id, v1::JobState state, const std::string& model = "mlp") {
  v1::Job job;
  job.set_id(id);
  job.set_state(state);
  job.mutable_spec()->set_model(model);
  job.mutable_spec()->set_dataset("synthetic");
  job.mutable_spec()->set_steps(10);
  job.set_effective_precision("32-true");
  return job;
}

std::vector<std::string> Ids(const std::vector<v1::Job>& jobs) {
  std::vector<std::string> ids;
  for (const v1::Job& job : jobs) ids.push_back(job.id());
  return ids;
}

// Direct access to the database file, as the previous daemon version (or
// an operator's sqlite3 shell) would have it.
class RawDatabase {
 public:
  explicit RawDatabase(const std::string& path) {
    EXPECT_EQ(sqlite3_open(path.c_str(), &db_), SQLITE_OK);
  }
  ~RawDatabase() { sqlite3_close(db_); }

  void Exec(const std::string& sql) {
    char* error = nullptr;
    EXPECT_EQ(sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &error), SQLITE_OK)
        << sql << ": " << (error ? error : "");
    sqlite3_free(error);
  }
  int64_t Int(const std::string& sql) {
    sqlite3_stmt* stmt = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt, nullptr), SQLITE_OK) << sql;
    EXPECT_EQ(sqlite3_step(stmt), SQLITE_ROW) << sql;
    const int64_t value = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    return value;
  }
  std::string Text(const std::string& sql) {
    sqlite3_stmt* stmt = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt, nullptr), SQLITE_OK) << sql;
    EXPECT_EQ(sqlite3_step(stmt), SQLITE_ROW) << sql;
    const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
    std::string value = text == nullptr ? "" : text;
    sqlite3_finalize(stmt);
    return value;
  }
  void InsertV1(const std::string& id, v1::JobState state, const std::string& blob) {
    sqlite3_stmt* stmt = nullptr;
    ASSERT_EQ(sqlite3_prepare_v2(db_, "INSERT INTO jobs(id, state, job) VALUES(?1, ?2, ?3)", -1,
                                 &stmt, nullptr),
              SQLITE_OK);
    sqlite3_bind_text(stmt, 1, id.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(stmt, 2, state);
    sqlite3_bind_blob(stmt, 3, blob.data(), static_cast<int>(blob.size()), SQLITE_TRANSIENT);
    EXPECT_EQ(sqlite3_step(stmt), SQLITE_DONE);
    sqlite3_finalize(stmt);
  }

 private:
  sqlite3* db_ = nullptr;
};

// The schema the previous version wrote, with jobs inserted in an order
// their ids do not sort in.
void WriteV1Database(const std::string& path, const std::string& corrupt_id = "") {
  RawDatabase db(path);
  db.Exec("CREATE TABLE jobs (id TEXT PRIMARY KEY, state INTEGER NOT NULL, job BLOB NOT NULL)");
  db.Exec("CREATE INDEX jobs_state ON jobs(state)");
  db.Exec("PRAGMA user_version=1");
  v1::Job done = MakeJob("b-done", v1::SUCCEEDED);
  done.set_principal("alice");
  db.InsertV1("b-done", v1::SUCCEEDED, done.SerializeAsString());
  db.InsertV1("a-queued", v1::QUEUED, MakeJob("a-queued", v1::QUEUED, "cnn").SerializeAsString());
  db.InsertV1("c-running", v1::RUNNING, MakeJob("c-running", v1::RUNNING).SerializeAsString());
  if (!corrupt_id.empty()) db.InsertV1(corrupt_id, v1::QUEUED, "\xff\xff\xff not a job");
}

absl::StatusOr<std::unique_ptr<SqliteJobStore>> Open(const std::string& path) {
  SqliteJobStore::Options options;
  options.path = path;
  return SqliteJobStore::Create(options);
}

TEST(SqliteJobStoreMigrationTest, V1JobsKeepTheirOrderAndGainColumns) {
  TempDir dir;
  const std::string path = dir.File("jobs.db");
  WriteV1Database(path);
  {
    auto store = Open(path);
    ASSERT_OK(store);
    auto all = (*store)->List({});
    ASSERT_OK(all);
    EXPECT_THAT(Ids(all->jobs), ElementsAre("c-running", "a-queued", "b-done"));
    for (const v1::Job& job : all->jobs) EXPECT_EQ(job.attempt(), 1) << job.id();

    JobQuery by_model;
    by_model.model = "cnn";
    EXPECT_THAT(Ids((*store)->List(by_model)->jobs), ElementsAre("a-queued"));
    JobQuery by_principal;
    by_principal.principal = "alice";
    EXPECT_THAT(Ids((*store)->List(by_principal)->jobs), ElementsAre("b-done"));
    auto counts = (*store)->Count();
    ASSERT_OK(counts);
    EXPECT_EQ(counts->queued, 1);
    EXPECT_EQ(counts->running, 1);

    // A job submitted after the migration is the newest.
    ASSERT_OK((*store)->Insert(MakeJob("d-new", v1::QUEUED), QueueCaps{}));
    EXPECT_THAT(Ids((*store)->List({})->jobs),
                ElementsAre("d-new", "c-running", "a-queued", "b-done"));
    // The running job of the stopped daemon goes back to the queue, behind
    // the one queued before it.
    auto expired = (*store)->ExpireLeases(/*all_running=*/true);
    ASSERT_OK(expired);
    EXPECT_THAT(Ids(*expired), ElementsAre("c-running"));
    auto claimed = (*store)->Claim("w1", absl::Seconds(30));
    ASSERT_OK(claimed);
    ASSERT_TRUE(claimed->has_value());
    EXPECT_EQ((*claimed)->id(), "a-queued");
  }
  RawDatabase db(path);
  EXPECT_EQ(db.Int("PRAGMA user_version"), 2);
  EXPECT_EQ(db.Int("SELECT COUNT(*) FROM sqlite_master WHERE name = 'jobs_v1'"), 0);
}

TEST(SqliteJobStoreMigrationTest, ACorruptRecordLeavesTheV1DatabaseAsItWas) {
  TempDir dir;
  const std::string path = dir.File("jobs.db");
  WriteV1Database(path, "z-corrupt");
  EXPECT_THAT(Open(path), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("z-corrupt")));
  RawDatabase db(path);
  EXPECT_EQ(db.Int("PRAGMA user_version"), 1);
  EXPECT_EQ(db.Int("SELECT COUNT(*) FROM jobs"), 4);
  EXPECT_EQ(db.Int("SELECT COUNT(*) FROM sqlite_master WHERE name = 'jobs_v1'"), 0);
}

TEST(SqliteJobStoreMigrationTest, ANewerSchemaIsRefused) {
  TempDir dir;
  const std::string path = dir.File("jobs.db");
  RawDatabase(path).Exec("PRAGMA user_version=7");
  EXPECT_THAT(Open(path), StatusIs(absl::StatusCode::kFailedPrecondition,
                                   AllOf(HasSubstr("--database"), HasSubstr("version 7"))));
}

TEST(SqliteJobStoreTest, AFreshDatabaseIsAtVersion2) {
  TempDir dir;
  const std::string path = dir.File("jobs.db");
  ASSERT_OK(Open(path));
  RawDatabase db(path);
  EXPECT_EQ(db.Int("PRAGMA user_version"), 2);
  EXPECT_EQ(db.Text("PRAGMA journal_mode"), "wal");
}

TEST(SqliteJobStoreTest, ASecondStoreOnTheSameFileIsRefusedUntilTheFirstCloses) {
  TempDir dir;
  const std::string path = dir.File("jobs.db");
  auto first = Open(path);
  ASSERT_OK(first);
  EXPECT_THAT(Open(path), StatusIs(absl::StatusCode::kFailedPrecondition,
                                   AllOf(HasSubstr("--database"), HasSubstr(path),
                                         HasSubstr("another mantissad"),
                                         HasSubstr(absl::StrCat("pid ", getpid())))));
  first->reset();
  auto second = Open(path);
  ASSERT_OK(second);
  EXPECT_OK((*second)->Count());
}

TEST(SqliteJobStoreTest, ARunningJobOfAStoppedDaemonIsRequeuedAtItsNextStart) {
  TempDir dir;
  const std::string path = dir.File("jobs.db");
  {
    auto store = Open(path);
    ASSERT_OK(store);
    ASSERT_OK((*store)->Insert(MakeJob("j1", v1::QUEUED), QueueCaps{}));
    auto claimed = (*store)->Claim("w1", absl::Hours(1));
    ASSERT_OK(claimed);
    ASSERT_TRUE(claimed->has_value());
  }
  auto store = Open(path);
  ASSERT_OK(store);
  // Its lease is still an hour away: only the start-up sweep re-queues it.
  EXPECT_THAT(Ids(*(*store)->ExpireLeases(false)), ::testing::IsEmpty());
  auto expired = (*store)->ExpireLeases(/*all_running=*/true);
  ASSERT_OK(expired);
  ASSERT_EQ(expired->size(), 1u);
  auto job = (*store)->Get("j1");
  ASSERT_OK(job);
  EXPECT_EQ(job->state(), v1::QUEUED);
  EXPECT_EQ(job->attempt(), 2);
  EXPECT_EQ(job->worker(), "");
  ASSERT_EQ(job->attempts_size(), 1);
  EXPECT_EQ(job->attempts(0).end(), v1::Attempt::LEASE_EXPIRED);
}

TEST(SqliteJobStoreTest, TheListenerHearsCommittedChanges) {
  TempDir dir;
  auto store = Open(dir.File("jobs.db"));
  ASSERT_OK(store);
  std::vector<std::pair<StoreChannel, std::string>> heard;
  (*store)->SetChangeListener(
      [&](StoreChannel channel, const std::string& what) { heard.emplace_back(channel, what); });
  ASSERT_OK((*store)->Insert(MakeJob("j1", v1::QUEUED), QueueCaps{}));
  EXPECT_THAT((*store)->Insert(MakeJob("j1", v1::QUEUED), QueueCaps{}),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("j1")));
  auto claimed = (*store)->Claim("w1", absl::Seconds(30));
  ASSERT_OK(claimed);
  ASSERT_TRUE(claimed->has_value());
  // Progress without an event changes no state: nobody needs waking.
  v1::Job progress = **claimed;
  progress.mutable_progress()->set_step(5);
  ASSERT_OK((*store)->Update(progress, Lease{"w1", 1}, nullptr));
  ASSERT_OK((*store)->PublishModelChange("mnist", true));
  EXPECT_THAT(heard, ElementsAre(Pair(StoreChannel::kJobs, "j1"), Pair(StoreChannel::kJobs, "j1"),
                                 Pair(StoreChannel::kModels, "mnist")));
}

TEST(OpenJobStoreTest, EmptyDatabaseIsSqliteInTheStateDir) {
  TempDir dir;
  JobStoreOptions options;
  options.state_dir = dir.path();
  auto store = OpenJobStore(options);
  ASSERT_OK(store);
  EXPECT_EQ((*store)->kind(), "sqlite");
  EXPECT_TRUE(std::filesystem::exists(dir.File("jobs.db")));
  EXPECT_TRUE(std::filesystem::exists(dir.File("jobs.db.lock")));
}

TEST(OpenJobStoreTest, SqlitePathIsOpened) {
  TempDir dir;
  JobStoreOptions options;
  options.database = "sqlite:" + dir.File("other.db");
  options.state_dir = "/nonexistent";
  auto store = OpenJobStore(options);
  ASSERT_OK(store);
  EXPECT_EQ((*store)->kind(), "sqlite");
  EXPECT_TRUE(std::filesystem::exists(dir.File("other.db")));
}

TEST(OpenJobStoreTest, BadValuesAreRefusedWithoutTheirPassword) {
  JobStoreOptions options;
  options.database = "mysql://root:hunter2@db:3306/jobs";
  EXPECT_THAT(OpenJobStore(options),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("--database: expected sqlite:PATH or postgresql://"),
                             HasSubstr("mysql://root:***@db"), Not(HasSubstr("hunter2")))));
  options.database = "sqlite:";
  EXPECT_THAT(OpenJobStore(options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--database")));
  options.database = "/var/lib/jobs.db";
  EXPECT_THAT(OpenJobStore(options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("/var/lib/jobs.db")));
}

TEST(OpenJobStoreTest, SqliteInAMissingDirectoryNamesTheFlag) {
  JobStoreOptions options;
  options.database = "sqlite:/nonexistent/dir/jobs.db";
  EXPECT_THAT(OpenJobStore(options),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("--database")));
}

TEST(OpenJobStoreTest, PostgresUriGoesToPostgresAndItsPasswordStaysOutOfErrors) {
  JobStoreOptions options;
  // Nothing listens on port 1: the PostgreSQL store is tried and fails.
  options.database = "postgresql://mantissa:hunter2@127.0.0.1:1/jobs?connect_timeout=2";
  auto store = OpenJobStore(options);
  ASSERT_FALSE(store.ok());
  EXPECT_THAT(std::string(store.status().message()), Not(HasSubstr("hunter2")));
  EXPECT_THAT(std::string(store.status().message()), Not(HasSubstr("expected sqlite:PATH")));
}

TEST(RedactDatabaseTest, HidesPasswords) {
  EXPECT_EQ(RedactDatabase("postgresql://mantissa:s3cret@db.example:5432/jobs?sslmode=require"),
            "postgresql://mantissa:***@db.example:5432/jobs?sslmode=require");
  EXPECT_EQ(RedactDatabase("postgres://u:p@ss/w@host/db"), "postgres://u:***@host/db");
  EXPECT_EQ(RedactDatabase("postgresql://u:p?w@host/db"), "postgresql://u:***@host/db");
  EXPECT_EQ(RedactDatabase("postgresql://u:pw@host"), "postgresql://u:***@host");
  EXPECT_EQ(RedactDatabase("postgresql:///jobs?host=/run/pg&user=u&password=s3cret&sslmode=off"),
            "postgresql:///jobs?host=/run/pg&user=u&password=***&sslmode=off");
  EXPECT_EQ(RedactDatabase("postgresql://u@host/db?password=s3cret"),
            "postgresql://u@host/db?password=***");
}

TEST(RedactDatabaseTest, LeavesTheRestAlone) {
  EXPECT_EQ(RedactDatabase("sqlite:/var/lib/mantissa/jobs.db"), "sqlite:/var/lib/mantissa/jobs.db");
  EXPECT_EQ(RedactDatabase("postgresql://mantissa@db:5432/jobs"),
            "postgresql://mantissa@db:5432/jobs");
  EXPECT_EQ(RedactDatabase("postgresql://db:5432/jobs?user=a@b.c"),
            "postgresql://db:5432/jobs?user=a@b.c");
  EXPECT_EQ(RedactDatabase("postgresql:///jobs?host=/run/pg"), "postgresql:///jobs?host=/run/pg");
  EXPECT_EQ(RedactDatabase("postgresql://db/jobs?old_password=x"),
            "postgresql://db/jobs?old_password=x");
}

}  // namespace
}  // namespace mantissa
