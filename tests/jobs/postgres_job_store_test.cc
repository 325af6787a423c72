// What only the PostgreSQL store has: concurrent schema creation, several
// processes' stores sharing one database, notifications between them, and
// coming back after the server restarts. The behaviour both stores share is
// in job_store_contract_test.cc.
#include "server/jobs/postgres_job_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/jobs/job_transitions.h"
#include "tests/testing/postgres_server.h"
#include "tests/testing/status_matchers.h"

namespace mantissa {
namespace {

using ::mantissa::testing::PostgresServer;
using ::testing::HasSubstr;
using ::testing::Not;

v1::Job QueuedJob(const std::string& id, const std::string& principal = "") {
  v1::Job job;
  job.set_id(id);
  job.set_state(v1::QUEUED);
  job.set_attempt(1);
  job.mutable_spec()->set_model("mlp");
  job.set_principal(principal);
  return job;
}

// Records notifications, and waits for one.
class Notifications {
 public:
  JobStore::ChangeListener Listener() {
    return [this](StoreChannel channel, const std::string& payload) {
      std::lock_guard<std::mutex> lock(mu_);
      seen_.emplace_back(channel, payload);
      cv_.notify_all();
    };
  }
  bool WaitFor(StoreChannel channel, const std::string& payload, absl::Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoSeconds(timeout), [&] {
      for (const auto& [c, p] : seen_) {
        if (c == channel && p == payload) return true;
      }
      return false;
    });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::pair<StoreChannel, std::string>> seen_;
};

class PostgresJobStoreTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto server = PostgresServer::Start();
    if (server.ok()) server_ = std::move(server).value().release();
    if (!server.ok()) skip_reason_ = std::string(server.status().message());
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    if (server_ == nullptr) GTEST_SKIP() << skip_reason_;
    std::string db = absl::StrCat(
        "pg_", ::testing::UnitTest::GetInstance()->current_test_info()->name(), "_", counter_++);
    for (char& c : db) c = std::tolower(static_cast<unsigned char>(c));
    ASSERT_OK(server_->CreateDatabase(db));
    db_ = db;
    uri_ = server_->uri(db);
  }

  absl::StatusOr<std::unique_ptr<PostgresJobStore>> Open() {
    return PostgresJobStore::Create({.uri = uri_, .pool_size = 4});
  }

  static PostgresServer* server_;
  static std::string skip_reason_;
  static int counter_;
  std::string db_;
  std::string uri_;
};

PostgresServer* PostgresJobStoreTest::server_ = nullptr;
std::string PostgresJobStoreTest::skip_reason_;
int PostgresJobStoreTest::counter_ = 0;

TEST_F(PostgresJobStoreTest, StoresCreatedTogetherOnAFreshDatabaseAllSucceed) {
  constexpr int kStores = 4;
  std::vector<absl::Status> results(kStores);
  std::vector<std::thread> threads;
  for (int i = 0; i < kStores; ++i) {
    threads.emplace_back([&, i] { results[i] = Open().status(); });
  }
  for (auto& t : threads) t.join();
  for (const absl::Status& s : results) EXPECT_OK(s);
  // And the schema is usable (the version row written exactly once).
  auto store = Open();
  ASSERT_OK(store.status());
  EXPECT_OK((*store)->Insert(QueuedJob("j1"), {}));
  auto counts = (*store)->Count();
  ASSERT_OK(counts.status());
  EXPECT_EQ(counts->queued, 1);
}

TEST_F(PostgresJobStoreTest, ErrorsNameTheFlagAndNeverThePassword) {
  const std::string uri =
      absl::StrCat("postgresql://postgres:s3cr%zzet@/no_such_db?host=", server_->socket_dir());
  auto malformed = PostgresJobStore::Create({.uri = uri});
  ASSERT_FALSE(malformed.ok());
  EXPECT_THAT(malformed.status().message(), HasSubstr("--database"));
  EXPECT_THAT(malformed.status().message(), Not(HasSubstr("s3cr")));

  auto missing = PostgresJobStore::Create(
      {.uri =
           absl::StrCat("postgresql://postgres:s3cret@/no_such_db?host=", server_->socket_dir())});
  EXPECT_THAT(missing.status(),
              testing::StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("--database")));
  EXPECT_THAT(missing.status().message(), HasSubstr("no_such_db"));
  EXPECT_THAT(missing.status().message(), Not(HasSubstr("s3cret")));

  auto down =
      PostgresJobStore::Create({.uri = "postgresql://postgres@/postgres?host=/nonexistent"});
  EXPECT_THAT(down.status(),
              testing::StatusIs(absl::StatusCode::kUnavailable, HasSubstr("--database")));
}

TEST_F(PostgresJobStoreTest, ADatabaseItCannotSetUpIsAFailedPrecondition) {
  ASSERT_OK(server_->Execute(db_, "CREATE TABLE jobs (x int)"));
  EXPECT_THAT(Open().status(),
              testing::StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("--database")));

  ASSERT_OK(server_->Execute(db_,
                             "DROP TABLE jobs; CREATE TABLE mantissa_schema (version int); "
                             "INSERT INTO mantissa_schema VALUES (99)"));
  EXPECT_THAT(Open().status(), testing::StatusIs(absl::StatusCode::kFailedPrecondition,
                                                 HasSubstr("upgrade mantissad")));
}

// A database of the first schema (before jobs over several nodes) is
// migrated in place: its jobs stay and run, and the new tables work.
TEST_F(PostgresJobStoreTest, AVersion1DatabaseIsMigratedKeepingItsJobs) {
  std::string blob_hex;
  for (unsigned char c : QueuedJob("old").SerializeAsString()) {
    absl::StrAppend(&blob_hex, absl::Hex(c, absl::kZeroPad2));
  }
  ASSERT_OK(server_->Execute(
      db_, absl::StrCat(
               "CREATE TABLE mantissa_schema (version INT NOT NULL);"
               "INSERT INTO mantissa_schema VALUES (1);"
               "CREATE TABLE jobs (seq BIGSERIAL PRIMARY KEY, id TEXT NOT NULL UNIQUE, "
               "state INT NOT NULL, model TEXT NOT NULL DEFAULT '', precision TEXT NOT NULL "
               "DEFAULT '', name TEXT NOT NULL DEFAULT '', principal TEXT NOT NULL DEFAULT '', "
               "worker TEXT NOT NULL DEFAULT '', attempt INT NOT NULL DEFAULT 1, "
               "lease_expires_ms BIGINT NOT NULL DEFAULT 0, cancel_requested BOOLEAN NOT NULL "
               "DEFAULT false, job BYTEA NOT NULL);"
               "CREATE INDEX jobs_state_seq ON jobs (state, seq);"
               "CREATE TABLE job_events (seq BIGSERIAL PRIMARY KEY, job_id TEXT NOT NULL "
               "REFERENCES jobs (id) ON DELETE CASCADE, event BYTEA NOT NULL);"
               "CREATE INDEX job_events_job_seq ON job_events (job_id, seq);"
               "CREATE TABLE models (name TEXT PRIMARY KEY, generation BIGINT NOT NULL, "
               "loaded BOOLEAN NOT NULL);"
               "INSERT INTO jobs (id, state, model, attempt, job) VALUES ('old', 1, 'mlp', 1, '\\x",
               blob_hex, "');")));
  auto store = Open();
  ASSERT_OK(store.status());
  auto old = (*store)->Get("old");
  ASSERT_OK(old.status());
  EXPECT_EQ(old->state(), v1::QUEUED);
  ASSERT_OK((*store)->AnnounceWorker("w1", 1, absl::Seconds(60)));
  auto claimed = (*store)->Claim("w0", absl::Seconds(60));
  ASSERT_OK(claimed.status());
  ASSERT_TRUE(claimed->has_value());
  EXPECT_EQ((*claimed)->id(), "old");
  EXPECT_EQ((*claimed)->nodes_size(), 0);  // one node: no gang
  // Reopening finds the current version: nothing runs twice.
  auto again = Open();
  ASSERT_OK(again.status());
}

TEST_F(PostgresJobStoreTest, WorkersClaimingTogetherEachGetADifferentJob) {
  constexpr int kJobs = 40;
  constexpr int kWorkers = 4;
  std::vector<std::unique_ptr<PostgresJobStore>> stores;
  for (int i = 0; i < kWorkers; ++i) {
    auto store = Open();
    ASSERT_OK(store.status());
    stores.push_back(*std::move(store));
  }
  for (int i = 0; i < kJobs; ++i) ASSERT_OK(stores[0]->Insert(QueuedJob(absl::StrCat("j", i)), {}));
  std::mutex mu;
  std::multiset<std::string> claimed;
  std::vector<std::thread> threads;
  for (int w = 0; w < kWorkers; ++w) {
    threads.emplace_back([&, w] {
      for (;;) {
        auto job = stores[w]->Claim(absl::StrCat("w", w), absl::Seconds(30));
        ASSERT_OK(job.status());
        if (!job->has_value()) return;
        std::lock_guard<std::mutex> lock(mu);
        claimed.insert((*job)->id());
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(claimed.size(), kJobs);
  EXPECT_EQ(std::set<std::string>(claimed.begin(), claimed.end()).size(), kJobs);
}

TEST_F(PostgresJobStoreTest, QueueCapHoldsAcrossStoresInsertingTogether) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 5;
  const QueueCaps caps{.max_queued = 7};
  std::vector<std::unique_ptr<PostgresJobStore>> stores;
  for (int i = 0; i < kThreads; ++i) {
    auto store = Open();
    ASSERT_OK(store.status());
    stores.push_back(*std::move(store));
  }
  std::atomic<int> accepted{0};
  std::atomic<int> refused{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        absl::Status s = stores[t]->Insert(QueuedJob(absl::StrCat("t", t, "-", i)), caps);
        if (s.ok()) ++accepted;
        if (absl::IsResourceExhausted(s)) ++refused;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(accepted.load(), 7);
  EXPECT_EQ(refused.load(), kThreads * kPerThread - 7);
}

TEST_F(PostgresJobStoreTest, AnotherStoresWritesAreNotified) {
  auto watcher = Open();
  auto writer = Open();
  ASSERT_OK(watcher.status());
  ASSERT_OK(writer.status());
  Notifications notifications;
  (*watcher)->SetChangeListener(notifications.Listener());

  ASSERT_OK((*writer)->Insert(QueuedJob("j1"), {}));
  EXPECT_TRUE(notifications.WaitFor(StoreChannel::kJobs, "j1", absl::Seconds(10)));
  ASSERT_OK((*writer)->PublishModelChange("mlp-v1", true).status());
  EXPECT_TRUE(notifications.WaitFor(StoreChannel::kModels, "mlp-v1", absl::Seconds(10)));
}

TEST_F(PostgresJobStoreTest, WorksAgainAfterTheServerRestarts) {
  auto store = Open();
  ASSERT_OK(store.status());
  Notifications notifications;
  (*store)->SetChangeListener(notifications.Listener());
  ASSERT_OK((*store)->Insert(QueuedJob("before"), {}));

  ASSERT_OK(server_->Restart());
  // Calls may fail with UNAVAILABLE a few times while the pool replaces its
  // connections; then they work, in this same store.
  absl::Status status;
  int unavailable = 0;
  for (int i = 0; i < 100; ++i) {
    status = (*store)->Insert(QueuedJob("after"), {});
    if (!absl::IsUnavailable(status)) break;
    ++unavailable;
    EXPECT_THAT(status.message(), HasSubstr("PostgreSQL unreachable"));
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_OK(status);
  std::printf("calls failing UNAVAILABLE after the restart: %d\n", unavailable);
  auto job = (*store)->Get("before");
  EXPECT_OK(job.status());
  // The listener reconnected and told followers to look again.
  EXPECT_TRUE(notifications.WaitFor(StoreChannel::kJobs, "", absl::Seconds(20)));
}

TEST_F(PostgresJobStoreTest, UnreachableServerFailsFastThenRecovers) {
  auto store = Open();
  ASSERT_OK(store.status());
  ASSERT_OK(server_->Stop());
  int unavailable = 0;
  const absl::Time start = absl::Now();
  for (int i = 0; i < 20; ++i) {
    auto counts = (*store)->Count();
    EXPECT_THAT(counts.status(), testing::StatusIs(absl::StatusCode::kUnavailable,
                                                   HasSubstr("PostgreSQL unreachable")));
    unavailable += absl::IsUnavailable(counts.status());
  }
  std::printf("20 calls against a stopped server took %s\n",
              absl::FormatDuration(absl::Now() - start).c_str());
  EXPECT_EQ(unavailable, 20);
  ASSERT_OK(server_->Restart());
  absl::Status status;
  for (int i = 0; i < 100; ++i) {
    status = (*store)->Count().status();
    if (status.ok()) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_OK(status);
}

}  // namespace
}  // namespace mantissa
