// The JobStore contract (server/jobs/job_store.h), run against both stores:
// SQLite on a fresh file per test, PostgreSQL on a fresh database per test of
// one real server per suite.

#include <gmock/gmock.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "mantissa/v1/training.pb.h"
#include "server/jobs/job_store.h"
#include "server/jobs/job_transitions.h"
#include "server/jobs/postgres_job_store.h"
#include "server/jobs/sqlite_job_store.h"
#include "tests/testing/postgres_server.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace mantissa {
namespace {

using ::mantissa::testing::PostgresServer;
using ::mantissa::testing::StatusIs;
using ::mantissa::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::Gt;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using ::testing::UnorderedElementsAre;

constexpr absl::Duration kLongLease = absl::Seconds(60);

v1::Job MakeJob(const std::string& id, const std::string& model = "mlp",
                const std::string& precision = "32-true") {
  v1::Job job;
  job.set_id(id);
  job.set_state(v1::QUEUED);
  job.set_attempt(1);
  job.mutable_spec()->set_model(model);
  job.mutable_spec()->set_dataset("synthetic");
  job.mutable_spec()->set_steps(10);
  job.set_effective_precision(precision);
  job.mutable_create_time()->set_seconds(1700000000);
  return job;
}

// A job over `num_nodes` nodes (JobSpec.num_nodes).
v1::Job GangJob(const std::string& id, int32_t num_nodes) {
  v1::Job job = MakeJob(id);
  job.mutable_spec()->set_num_nodes(num_nodes);
  return job;
}

std::vector<std::string> Nodes(const v1::Job& job) {
  return std::vector<std::string>(job.nodes().begin(), job.nodes().end());
}

v1::Job WithMaxAttempts(v1::Job job, int32_t max_attempts) {
  job.mutable_spec()->set_max_attempts(max_attempts);
  return job;
}

std::vector<std::string> Ids(const std::vector<v1::Job>& jobs) {
  std::vector<std::string> ids;
  for (const v1::Job& job : jobs) ids.push_back(job.id());
  return ids;
}

std::vector<v1::JobEvent::Type> Types(const std::vector<StoredEvent>& events) {
  std::vector<v1::JobEvent::Type> types;
  for (const StoredEvent& e : events) types.push_back(e.event.type());
  return types;
}

Lease LeaseOf(const v1::Job& running) { return {running.worker(), running.attempt()}; }

std::string Lower(absl::string_view text) { return absl::AsciiStrToLower(text); }

enum class Backend { kSqlite, kPostgres };

void PrintTo(Backend backend, std::ostream* os) {
  *os << (backend == Backend::kSqlite ? "sqlite" : "postgresql");
}

// Records listener calls; waits for one.
class ChangeRecorder {
 public:
  JobStore::ChangeListener Listener() {
    return [this](StoreChannel channel, const std::string& payload) {
      std::lock_guard<std::mutex> lock(mu_);
      seen_.emplace(channel, payload);
      cv_.notify_all();
    };
  }
  bool WaitFor(StoreChannel channel, const std::string& payload) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] {
      return seen_.count({channel, payload}) > 0;
    });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::set<std::pair<StoreChannel, std::string>> seen_;
};

class JobStoreContractTest : public ::testing::TestWithParam<Backend> {
 protected:
  static void TearDownTestSuite() {
    server_.reset();
    server_status_ = absl::OkStatus();
  }

  void SetUp() override {
    if (GetParam() == Backend::kPostgres) {
      // One server for the suite: starting one takes about a second.
      if (server_ == nullptr && server_status_.ok()) {
        absl::StatusOr<std::unique_ptr<PostgresServer>> server = PostgresServer::Start();
        server_status_ = server.status();
        if (server.ok()) server_ = std::move(*server);
      }
      // Only missing binaries are a reason to skip; anything else fails.
      if (absl::IsNotFound(server_status_)) GTEST_SKIP() << server_status_;
      ASSERT_OK(server_status_);
      database_ = absl::StrCat("contract_", ++databases_);
      ASSERT_OK(server_->CreateDatabase(database_));
    }
    absl::StatusOr<std::unique_ptr<JobStore>> store = Open();
    ASSERT_OK(store);
    store_ = std::move(*store);
  }

  // Another store on this test's database (SQLite: only once the first is
  // closed, as its file lock allows one at a time).
  absl::StatusOr<std::unique_ptr<JobStore>> Open() {
    if (GetParam() == Backend::kSqlite) {
      absl::StatusOr<std::unique_ptr<SqliteJobStore>> store =
          SqliteJobStore::Create({.path = dir_.File("jobs.db")});
      if (!store.ok()) return store.status();
      return std::unique_ptr<JobStore>(std::move(*store));
    }
    absl::StatusOr<std::unique_ptr<PostgresJobStore>> store =
        PostgresJobStore::Create({.uri = server_->uri(database_)});
    if (!store.ok()) return store.status();
    return std::unique_ptr<JobStore>(std::move(*store));
  }

  // Whether several store instances may share the database at once.
  bool SharedByInstances() const { return GetParam() == Backend::kPostgres; }

  // The oldest queued job, claimed by `worker`; NOT_FOUND when none.
  absl::StatusOr<v1::Job> ClaimOne(const std::string& worker, absl::Duration lease = kLongLease) {
    absl::StatusOr<std::optional<v1::Job>> claimed = store_->Claim(worker, lease);
    if (!claimed.ok()) return claimed.status();
    if (!claimed->has_value()) return absl::NotFoundError("nothing was claimed");
    return **claimed;
  }

  // Ends the running job `running` as its worker does.
  absl::Status Finish(v1::Job running, v1::JobState state) {
    const Lease lease = LeaseOf(running);
    MarkFinished(running, state, state == v1::FAILED ? "boom" : "", absl::Now());
    const v1::JobEvent event = MakeJobEvent(v1::JobEvent::FINISHED, running, "finished");
    return store_->Update(running, lease, &event).status();
  }

  // Inserts `job` and runs it to `state` (it must be the oldest queued).
  absl::Status InsertEnded(const v1::Job& job, v1::JobState state) {
    if (absl::Status s = store_->Insert(job, {}); !s.ok()) return s;
    absl::StatusOr<v1::Job> running = ClaimOne("w-end");
    if (!running.ok()) return running.status();
    if (running->id() != job.id()) return absl::InternalError("claimed another job");
    return Finish(*running, state);
  }

  absl::StatusOr<std::vector<StoredEvent>> AllEvents(const std::string& id) {
    return store_->EventsAfter(id, 0, 1000);
  }

  static std::unique_ptr<PostgresServer> server_;
  static absl::Status server_status_;
  static int databases_;

  TempDir dir_;
  std::string database_;
  std::unique_ptr<JobStore> store_;
};

std::unique_ptr<PostgresServer> JobStoreContractTest::server_;
absl::Status JobStoreContractTest::server_status_;
int JobStoreContractTest::databases_ = 0;

// ---- Insert, Get, List ----

TEST_P(JobStoreContractTest, KindNamesTheDatabase) {
  EXPECT_EQ(store_->kind(), GetParam() == Backend::kSqlite ? "sqlite" : "postgresql");
}

TEST_P(JobStoreContractTest, InsertThenGetRoundTrips) {
  v1::Job job = MakeJob("a1");
  (*job.mutable_spec()->mutable_model_options())["hidden"] = "128,64";
  job.mutable_spec()->set_lr(0.01);
  job.mutable_spec()->set_name("first run");
  job.add_warnings("precision alias");
  job.set_principal("alice");
  ASSERT_OK(store_->Insert(job, {}));

  absl::StatusOr<v1::Job> got = store_->Get("a1");
  ASSERT_OK(got);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*got, job)) << got->DebugString();
  EXPECT_EQ(got->state(), v1::QUEUED);
  EXPECT_EQ(got->attempt(), 1);
  EXPECT_EQ(got->worker(), "");
  EXPECT_FALSE(got->cancel_requested());
}

TEST_P(JobStoreContractTest, UnknownIdsAreNotFoundNamingTheId) {
  ASSERT_OK(store_->Insert(MakeJob("a1"), {}));
  EXPECT_THAT(store_->Get("nope42"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope42")));
  EXPECT_THAT(store_->Snapshot("nope42"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope42")));
  EXPECT_THAT(store_->Delete("nope42"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope42")));
  EXPECT_THAT(store_->RequestCancel("nope42"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope42")));
  // A follower of a deleted job learns to stop.
  EXPECT_THAT(store_->EventsAfter("nope42", 0, 10),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope42")));
}

TEST_P(JobStoreContractTest, InsertOfATakenIdIsAlreadyExists) {
  ASSERT_OK(store_->Insert(MakeJob("a1", "mlp"), {}));
  EXPECT_THAT(store_->Insert(MakeJob("a1", "cnn"), {}),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("a1")));
  absl::StatusOr<v1::Job> got = store_->Get("a1");
  ASSERT_OK(got);
  EXPECT_EQ(got->spec().model(), "mlp");
}

TEST_P(JobStoreContractTest, ListOfAnEmptyStoreIsEmpty) {
  absl::StatusOr<JobPage> page = store_->List({});
  ASSERT_OK(page);
  EXPECT_THAT(page->jobs, IsEmpty());
  EXPECT_EQ(page->next_before_seq, 0);
}

TEST_P(JobStoreContractTest, ListIsNewestFirstByInsertionAndUpdatesDoNotReorder) {
  // Ids deliberately not in lexical order.
  for (const char* id : {"c", "a", "b"}) ASSERT_OK(store_->Insert(MakeJob(id), {}));
  absl::StatusOr<JobPage> page = store_->List({});
  ASSERT_OK(page);
  EXPECT_THAT(Ids(page->jobs), ElementsAre("b", "a", "c"));
  EXPECT_EQ(page->next_before_seq, 0);

  // Running and ending the oldest job leaves it last.
  absl::StatusOr<v1::Job> c = ClaimOne("w1");
  ASSERT_OK(c);
  ASSERT_OK(Finish(*c, v1::SUCCEEDED));
  page = store_->List({});
  ASSERT_OK(page);
  EXPECT_THAT(Ids(page->jobs), ElementsAre("b", "a", "c"));
  EXPECT_EQ(page->jobs.back().state(), v1::SUCCEEDED);
}

TEST_P(JobStoreContractTest, ListFiltersByState) {
  ASSERT_OK(InsertEnded(MakeJob("s1"), v1::SUCCEEDED));
  ASSERT_OK(InsertEnded(MakeJob("f1"), v1::FAILED));
  ASSERT_OK(store_->Insert(MakeJob("r1"), {}));
  ASSERT_OK(ClaimOne("w1"));
  ASSERT_OK(store_->Insert(MakeJob("q1"), {}));
  ASSERT_OK(store_->Insert(MakeJob("q2"), {}));

  absl::StatusOr<JobPage> queued = store_->List({.states = {v1::QUEUED}});
  ASSERT_OK(queued);
  EXPECT_THAT(Ids(queued->jobs), ElementsAre("q2", "q1"));
  absl::StatusOr<JobPage> live = store_->List({.states = {v1::QUEUED, v1::RUNNING}});
  ASSERT_OK(live);
  EXPECT_THAT(Ids(live->jobs), ElementsAre("q2", "q1", "r1"));
  absl::StatusOr<JobPage> ended = store_->List({.states = {v1::SUCCEEDED, v1::FAILED}});
  ASSERT_OK(ended);
  EXPECT_THAT(Ids(ended->jobs), ElementsAre("f1", "s1"));
  absl::StatusOr<JobPage> cancelled = store_->List({.states = {v1::CANCELLED}});
  ASSERT_OK(cancelled);
  EXPECT_THAT(cancelled->jobs, IsEmpty());
}

TEST_P(JobStoreContractTest, ListFiltersByModelPrecisionNameAndPrincipal) {
  v1::Job a = MakeJob("a", "mlp", "32-true");
  a.mutable_spec()->set_name("sweep");
  a.set_principal("alice");
  v1::Job b = MakeJob("b", "cnn", "bf16-mixed");
  b.mutable_spec()->set_name("sweep");
  b.set_principal("bob");
  v1::Job c = MakeJob("c", "mlp", "bf16-mixed");
  c.mutable_spec()->set_name("other");
  for (const v1::Job& job : {a, b, c}) ASSERT_OK(store_->Insert(job, {}));

  auto ids = [&](const JobQuery& query) {
    absl::StatusOr<JobPage> page = store_->List(query);
    EXPECT_OK(page);
    return page.ok() ? Ids(page->jobs) : std::vector<std::string>{};
  };
  EXPECT_THAT(ids({.model = "mlp"}), ElementsAre("c", "a"));
  EXPECT_THAT(ids({.precision = "bf16-mixed"}), ElementsAre("c", "b"));
  EXPECT_THAT(ids({.name = "sweep"}), ElementsAre("b", "a"));
  EXPECT_THAT(ids({.principal = "alice"}), ElementsAre("a"));
  EXPECT_THAT(ids({.principal = ""}), ElementsAre("c"));
  EXPECT_THAT(ids({.model = "mlp", .precision = "bf16-mixed"}), ElementsAre("c"));
  EXPECT_THAT(ids({.states = {v1::RUNNING}, .model = "mlp"}), IsEmpty());
  EXPECT_THAT(ids({.model = "gpt"}), IsEmpty());
}

TEST_P(JobStoreContractTest, ListPagesOlderWithBeforeSeq) {
  for (const char* id : {"j1", "j2", "j3", "j4", "j5"}) ASSERT_OK(store_->Insert(MakeJob(id), {}));
  absl::StatusOr<JobPage> first = store_->List({.limit = 2});
  ASSERT_OK(first);
  EXPECT_THAT(Ids(first->jobs), ElementsAre("j5", "j4"));
  ASSERT_NE(first->next_before_seq, 0);

  // A job inserted meanwhile does not shift the later pages.
  ASSERT_OK(store_->Insert(MakeJob("j6"), {}));
  absl::StatusOr<JobPage> second = store_->List({.limit = 2, .before_seq = first->next_before_seq});
  ASSERT_OK(second);
  EXPECT_THAT(Ids(second->jobs), ElementsAre("j3", "j2"));
  ASSERT_NE(second->next_before_seq, 0);
  absl::StatusOr<JobPage> last = store_->List({.limit = 2, .before_seq = second->next_before_seq});
  ASSERT_OK(last);
  EXPECT_THAT(Ids(last->jobs), ElementsAre("j1"));
  EXPECT_EQ(last->next_before_seq, 0);

  absl::StatusOr<JobPage> all = store_->List({.limit = 0});
  ASSERT_OK(all);
  EXPECT_THAT(all->jobs, SizeIs(6));
  EXPECT_EQ(all->next_before_seq, 0);
}

TEST_P(JobStoreContractTest, PagingAppliesAfterTheFilters) {
  for (const char* id : {"q1", "x1", "q2", "x2", "q3", "x3"}) {
    ASSERT_OK(store_->Insert(MakeJob(id, id[0] == 'q' ? "mlp" : "cnn"), {}));
  }
  std::vector<std::string> seen;
  JobQuery query{.model = "mlp", .limit = 1};
  for (int page_count = 0; page_count < 10; ++page_count) {
    absl::StatusOr<JobPage> page = store_->List(query);
    ASSERT_OK(page);
    ASSERT_THAT(page->jobs, SizeIs(::testing::Le(1)));
    for (const v1::Job& job : page->jobs) seen.push_back(job.id());
    if (page->next_before_seq == 0) break;
    query.before_seq = page->next_before_seq;
  }
  EXPECT_THAT(seen, ElementsAre("q3", "q2", "q1"));
}

// ---- Caps, Delete, Count ----

TEST_P(JobStoreContractTest, InsertBeyondMaxQueuedIsResourceExhausted) {
  const QueueCaps caps{.max_queued = 2};
  ASSERT_OK(store_->Insert(MakeJob("a"), caps));
  ASSERT_OK(store_->Insert(MakeJob("b"), caps));
  EXPECT_THAT(store_->Insert(MakeJob("c"), caps),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("--max_queued_jobs")));
  EXPECT_THAT(store_->Get("c"), StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  // Only queued jobs count: once one runs, there is room again.
  ASSERT_OK(ClaimOne("w1"));
  EXPECT_OK(store_->Insert(MakeJob("c"), caps));
}

TEST_P(JobStoreContractTest, InsertBeyondThePrincipalsCapIsResourceExhausted) {
  const QueueCaps caps{.max_queued_per_principal = 1};
  v1::Job alice1 = MakeJob("alice1");
  alice1.set_principal("alice");
  v1::Job alice2 = MakeJob("alice2");
  alice2.set_principal("alice");
  v1::Job bob1 = MakeJob("bob1");
  bob1.set_principal("bob");
  ASSERT_OK(store_->Insert(alice1, caps));
  EXPECT_THAT(store_->Insert(alice2, caps), StatusIs(absl::StatusCode::kResourceExhausted,
                                                     HasSubstr("--max_queued_jobs_per_principal")));
  EXPECT_OK(store_->Insert(bob1, caps));
  EXPECT_THAT(store_->Get("alice2"), StatusIs(absl::StatusCode::kNotFound, ::testing::_));
}

TEST_P(JobStoreContractTest, DeleteRemovesAnEndedJobAndItsEvents) {
  ASSERT_OK(InsertEnded(MakeJob("done"), v1::SUCCEEDED));
  ASSERT_OK(store_->Insert(MakeJob("kept"), {}));
  ASSERT_OK(store_->Delete("done"));
  EXPECT_THAT(store_->Get("done"), StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  EXPECT_THAT(AllEvents("done"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("done")));
  absl::StatusOr<JobPage> page = store_->List({});
  ASSERT_OK(page);
  EXPECT_THAT(Ids(page->jobs), ElementsAre("kept"));
  absl::StatusOr<std::vector<StoredEvent>> kept_events = AllEvents("kept");
  ASSERT_OK(kept_events);
  EXPECT_THAT(*kept_events, SizeIs(1));
}

TEST_P(JobStoreContractTest, DeleteOfAQueuedOrRunningJobIsFailedPrecondition) {
  ASSERT_OK(store_->Insert(MakeJob("running"), {}));
  ASSERT_OK(store_->Insert(MakeJob("queued"), {}));
  ASSERT_OK(ClaimOne("w1"));
  EXPECT_THAT(store_->Delete("queued"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("queued")));
  EXPECT_THAT(store_->Delete("running"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("running")));
  EXPECT_OK(store_->Get("queued"));
  EXPECT_OK(store_->Get("running"));
}

TEST_P(JobStoreContractTest, CountCountsQueuedAndRunning) {
  ASSERT_OK(InsertEnded(MakeJob("done"), v1::SUCCEEDED));
  for (const char* id : {"r1", "r2", "q1"}) ASSERT_OK(store_->Insert(MakeJob(id), {}));
  ASSERT_OK(ClaimOne("w1"));
  ASSERT_OK(ClaimOne("w2"));
  absl::StatusOr<JobCounts> counts = store_->Count();
  ASSERT_OK(counts);
  EXPECT_EQ(counts->queued, 1);
  EXPECT_EQ(counts->running, 2);
}

// ---- Claim ----

TEST_P(JobStoreContractTest, ClaimTakesTheOldestQueuedJob) {
  for (const char* id : {"c", "a", "b"}) ASSERT_OK(store_->Insert(MakeJob(id), {}));
  absl::StatusOr<v1::Job> first = ClaimOne("w1");
  ASSERT_OK(first);
  EXPECT_EQ(first->id(), "c");
  EXPECT_EQ(first->state(), v1::RUNNING);
  EXPECT_EQ(first->worker(), "w1");
  EXPECT_EQ(first->attempt(), 1);
  EXPECT_TRUE(first->has_start_time());
  ASSERT_THAT(first->attempts(), SizeIs(1));
  EXPECT_EQ(first->attempts(0).number(), 1);
  EXPECT_EQ(first->attempts(0).worker(), "w1");
  EXPECT_EQ(first->attempts(0).end(), v1::Attempt::END_UNSPECIFIED);

  absl::StatusOr<v1::Job> stored = store_->Get("c");
  ASSERT_OK(stored);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*stored, *first));

  absl::StatusOr<v1::Job> second = ClaimOne("w2");
  ASSERT_OK(second);
  EXPECT_EQ(second->id(), "a");
  absl::StatusOr<v1::Job> third = ClaimOne("w1");
  ASSERT_OK(third);
  EXPECT_EQ(third->id(), "b");
  absl::StatusOr<std::optional<v1::Job>> none = store_->Claim("w1", kLongLease);
  ASSERT_OK(none);
  EXPECT_FALSE(none->has_value());
}

TEST_P(JobStoreContractTest, ClaimOfAnEmptyQueueReturnsNothing) {
  absl::StatusOr<std::optional<v1::Job>> none = store_->Claim("w1", kLongLease);
  ASSERT_OK(none);
  EXPECT_FALSE(none->has_value());
  ASSERT_OK(InsertEnded(MakeJob("done"), v1::SUCCEEDED));
  none = store_->Claim("w1", kLongLease);
  ASSERT_OK(none);
  EXPECT_FALSE(none->has_value());
}

TEST_P(JobStoreContractTest, ConcurrentClaimsTakeEachJobExactlyOnce) {
  constexpr int kJobs = 60;
  constexpr int kWorkers = 4;
  for (int i = 0; i < kJobs; ++i) ASSERT_OK(store_->Insert(MakeJob(absl::StrCat("j", i)), {}));
  // A store per worker where the database allows several (PostgreSQL); one
  // shared by the threads otherwise.
  std::vector<std::unique_ptr<JobStore>> own;
  std::vector<JobStore*> stores(kWorkers, store_.get());
  if (SharedByInstances()) {
    for (int w = 0; w < kWorkers; ++w) {
      absl::StatusOr<std::unique_ptr<JobStore>> store = Open();
      ASSERT_OK(store);
      own.push_back(std::move(*store));
      stores[w] = own.back().get();
    }
  }
  std::vector<std::vector<std::string>> claimed(kWorkers);
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < kWorkers; ++w) {
    threads.emplace_back([&, w] {
      const std::string worker = absl::StrCat("w", w);
      while (true) {
        absl::StatusOr<std::optional<v1::Job>> job = stores[w]->Claim(worker, kLongLease);
        if (!job.ok()) {
          ++errors;
          return;
        }
        if (!job->has_value()) return;
        claimed[w].push_back((*job)->id());
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);

  std::map<std::string, int> claims;
  for (int w = 0; w < kWorkers; ++w) {
    for (const std::string& id : claimed[w]) {
      ++claims[id];
      absl::StatusOr<v1::Job> stored = store_->Get(id);
      ASSERT_OK(stored);
      EXPECT_EQ(stored->worker(), absl::StrCat("w", w)) << id;
    }
  }
  EXPECT_THAT(claims, SizeIs(kJobs));
  for (const auto& [id, n] : claims) EXPECT_EQ(n, 1) << id << " was claimed " << n << " times";
}

// ---- Update fencing ----

TEST_P(JobStoreContractTest, UpdateWritesWhileTheLeaseHolds) {
  ASSERT_OK(store_->Insert(MakeJob("a"), {}));
  absl::StatusOr<v1::Job> running = ClaimOne("w1");
  ASSERT_OK(running);
  v1::Job progressed = *running;
  progressed.mutable_progress()->set_step(5);
  absl::StatusOr<int64_t> seq = store_->Update(progressed, LeaseOf(*running), nullptr);
  ASSERT_OK(seq);
  EXPECT_EQ(*seq, 0);
  absl::StatusOr<v1::Job> stored = store_->Get("a");
  ASSERT_OK(stored);
  EXPECT_EQ(stored->progress().step(), 5);
  EXPECT_EQ(stored->state(), v1::RUNNING);
}

TEST_P(JobStoreContractTest, UpdateWithoutTheLeaseIsAbortedAndWritesNothing) {
  ASSERT_OK(store_->Insert(MakeJob("a"), {}));
  absl::StatusOr<v1::Job> running = ClaimOne("w1");
  ASSERT_OK(running);
  absl::StatusOr<std::vector<StoredEvent>> before = AllEvents("a");
  ASSERT_OK(before);

  v1::Job changed = *running;
  changed.mutable_progress()->set_step(7);
  const v1::JobEvent event = MakeJobEvent(v1::JobEvent::CHECKPOINT, changed, "checkpoint");
  EXPECT_THAT(store_->Update(changed, {"w2", 1}, &event),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("a")));
  EXPECT_THAT(store_->Update(changed, {"w1", 2}, &event),
              StatusIs(absl::StatusCode::kAborted, ::testing::_));

  ASSERT_OK(Finish(*running, v1::SUCCEEDED));
  absl::StatusOr<std::vector<StoredEvent>> after_finish = AllEvents("a");
  ASSERT_OK(after_finish);
  // The job is no longer running: even its own lease no longer holds.
  EXPECT_THAT(store_->Update(changed, {"w1", 1}, &event),
              StatusIs(absl::StatusCode::kAborted, ::testing::_));

  absl::StatusOr<v1::Job> stored = store_->Get("a");
  ASSERT_OK(stored);
  EXPECT_EQ(stored->state(), v1::SUCCEEDED);
  EXPECT_EQ(stored->progress().step(), 0);
  absl::StatusOr<std::vector<StoredEvent>> after = AllEvents("a");
  ASSERT_OK(after);
  EXPECT_EQ(after->size(), before->size() + 1);  // only the FINISHED event
  EXPECT_EQ(after->size(), after_finish->size());
}

// ---- Renew and cancellation ----

TEST_P(JobStoreContractTest, RenewReturnsTheLeasesTheWorkerHolds) {
  for (const char* id : {"a", "b", "c"}) ASSERT_OK(store_->Insert(MakeJob(id), {}));
  ASSERT_OK(ClaimOne("w1"));
  absl::StatusOr<v1::Job> b = ClaimOne("w2");
  ASSERT_OK(b);
  ASSERT_OK(ClaimOne("w1"));

  auto held = [&](const std::string& worker) {
    absl::StatusOr<std::vector<HeldLease>> leases =
        store_->Renew(worker, kLongLease, {"a", "b", "c"});
    EXPECT_OK(leases);
    std::vector<std::string> out;
    if (!leases.ok()) return out;
    for (const HeldLease& l : *leases) {
      out.push_back(absl::StrCat(l.job_id, "@", l.attempt, l.cancel_requested ? " cancel" : ""));
    }
    return out;
  };
  EXPECT_THAT(held("w1"), UnorderedElementsAre("a@1", "c@1"));
  EXPECT_THAT(held("w2"), ElementsAre("b@1"));
  EXPECT_THAT(held("w3"), IsEmpty());

  ASSERT_OK(store_->RequestCancel("c"));
  EXPECT_THAT(held("w1"), UnorderedElementsAre("a@1", "c@1 cancel"));
  ASSERT_OK(Finish(*b, v1::SUCCEEDED));
  EXPECT_THAT(held("w2"), IsEmpty());
  // Only the jobs named: a lease the worker gave up on is left to expire.
  absl::StatusOr<std::vector<HeldLease>> only_a = store_->Renew("w1", kLongLease, {"a"});
  ASSERT_OK(only_a);
  ASSERT_THAT(*only_a, SizeIs(1));
  EXPECT_EQ((*only_a)[0].job_id, "a");
  absl::StatusOr<std::vector<HeldLease>> none = store_->Renew("w1", kLongLease, {});
  ASSERT_OK(none);
  EXPECT_THAT(*none, IsEmpty());
}

TEST_P(JobStoreContractTest, RenewExtendsTheLease) {
  ASSERT_OK(store_->Insert(MakeJob("a"), {}));
  ASSERT_OK(ClaimOne("w1", absl::Milliseconds(1)));
  absl::StatusOr<std::vector<HeldLease>> renewed = store_->Renew("w1", kLongLease, {"a"});
  ASSERT_OK(renewed);
  ASSERT_THAT(*renewed, SizeIs(1));
  absl::SleepFor(absl::Milliseconds(20));
  absl::StatusOr<std::vector<v1::Job>> expired = store_->ExpireLeases();
  ASSERT_OK(expired);
  EXPECT_THAT(*expired, IsEmpty());
}

TEST_P(JobStoreContractTest, CancelOfAQueuedJobEndsItAtOnce) {
  ASSERT_OK(store_->Insert(MakeJob("a"), {}));
  absl::StatusOr<v1::Job> cancelled = store_->RequestCancel("a");
  ASSERT_OK(cancelled);
  EXPECT_EQ(cancelled->state(), v1::CANCELLED);
  EXPECT_TRUE(cancelled->has_end_time());
  absl::StatusOr<v1::Job> stored = store_->Get("a");
  ASSERT_OK(stored);
  EXPECT_EQ(stored->state(), v1::CANCELLED);
  absl::StatusOr<std::vector<StoredEvent>> events = AllEvents("a");
  ASSERT_OK(events);
  ASSERT_THAT(*events, SizeIs(2));
  EXPECT_EQ(events->back().event.type(), v1::JobEvent::FINISHED);
  EXPECT_EQ(events->back().event.job().state(), v1::CANCELLED);
  absl::StatusOr<std::optional<v1::Job>> none = store_->Claim("w1", kLongLease);
  ASSERT_OK(none);
  EXPECT_FALSE(none->has_value());
}

TEST_P(JobStoreContractTest, CancelOfARunningJobIsRequestedAndSurvivesWorkerUpdates) {
  ASSERT_OK(store_->Insert(MakeJob("a"), {}));
  absl::StatusOr<v1::Job> running = ClaimOne("w1");
  ASSERT_OK(running);
  absl::StatusOr<v1::Job> requested = store_->RequestCancel("a");
  ASSERT_OK(requested);
  EXPECT_EQ(requested->state(), v1::RUNNING);
  EXPECT_TRUE(requested->cancel_requested());

  // The worker writes its (older) copy, without cancel_requested.
  v1::Job progressed = *running;
  progressed.mutable_progress()->set_step(3);
  ASSERT_FALSE(progressed.cancel_requested());
  ASSERT_OK(store_->Update(progressed, LeaseOf(*running), nullptr));
  absl::StatusOr<v1::Job> stored = store_->Get("a");
  ASSERT_OK(stored);
  EXPECT_TRUE(stored->cancel_requested());
  EXPECT_EQ(stored->progress().step(), 3);

  absl::StatusOr<std::vector<StoredEvent>> events = AllEvents("a");
  ASSERT_OK(events);
  EXPECT_THAT(Types(*events), ElementsAre(v1::JobEvent::STATE_CHANGED, v1::JobEvent::STATE_CHANGED,
                                          v1::JobEvent::STATE_CHANGED));
  EXPECT_THAT(Lower(events->back().event.message()), HasSubstr("cancel"));
}

TEST_P(JobStoreContractTest, CancelOfAnEndedJobIsFailedPreconditionNamingItsState) {
  ASSERT_OK(InsertEnded(MakeJob("a"), v1::SUCCEEDED));
  absl::StatusOr<v1::Job> result = store_->RequestCancel("a");
  EXPECT_THAT(result, StatusIs(absl::StatusCode::kFailedPrecondition, ::testing::_));
  EXPECT_THAT(Lower(result.status().message()), HasSubstr("succeeded"));
}

// ---- Lease expiry and release ----

TEST_P(JobStoreContractTest, ExpiredLeaseRequeuesAtTheNextAttempt) {
  ASSERT_OK(store_->Insert(MakeJob("a"), {}));
  ASSERT_OK(store_->Insert(MakeJob("kept"), {}));
  absl::StatusOr<v1::Job> running = ClaimOne("w1", absl::Milliseconds(1));
  ASSERT_OK(running);
  ASSERT_OK(ClaimOne("w2", kLongLease));
  absl::SleepFor(absl::Milliseconds(20));

  absl::StatusOr<std::vector<v1::Job>> expired = store_->ExpireLeases();
  ASSERT_OK(expired);
  ASSERT_THAT(*expired, SizeIs(1));
  EXPECT_EQ((*expired)[0].id(), "a");
  absl::StatusOr<v1::Job> stored = store_->Get("a");
  ASSERT_OK(stored);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*stored, (*expired)[0]));
  EXPECT_EQ(stored->state(), v1::QUEUED);
  EXPECT_EQ(stored->attempt(), 2);
  EXPECT_EQ(stored->worker(), "");
  ASSERT_THAT(stored->attempts(), SizeIs(1));
  EXPECT_EQ(stored->attempts(0).end(), v1::Attempt::LEASE_EXPIRED);
  absl::StatusOr<std::vector<StoredEvent>> events = AllEvents("a");
  ASSERT_OK(events);
  EXPECT_EQ(events->back().event.type(), v1::JobEvent::STATE_CHANGED);
  EXPECT_THAT(events->back().event.message(), HasSubstr("re-queued"));

  // The sweep is idempotent, and the old attempt's writes are fenced off.
  absl::StatusOr<std::vector<v1::Job>> again = store_->ExpireLeases();
  ASSERT_OK(again);
  EXPECT_THAT(*again, IsEmpty());
  EXPECT_THAT(store_->Update(*running, LeaseOf(*running), nullptr),
              StatusIs(absl::StatusCode::kAborted, ::testing::_));
  absl::StatusOr<v1::Job> second = ClaimOne("w3");
  ASSERT_OK(second);
  EXPECT_EQ(second->id(), "a");
  EXPECT_EQ(second->attempt(), 2);
  ASSERT_THAT(second->attempts(), SizeIs(2));
  EXPECT_EQ(second->attempts(1).number(), 2);
  EXPECT_EQ(second->attempts(1).worker(), "w3");
}

TEST_P(JobStoreContractTest, ExpiredLeasesFailTheJobAfterMaxAttempts) {
  ASSERT_OK(store_->Insert(WithMaxAttempts(MakeJob("a"), 2), {}));
  for (int attempt = 1; attempt <= 2; ++attempt) {
    absl::StatusOr<v1::Job> running = ClaimOne("w1", absl::Milliseconds(1));
    ASSERT_OK(running);
    EXPECT_EQ(running->attempt(), attempt);
    absl::SleepFor(absl::Milliseconds(20));
    absl::StatusOr<std::vector<v1::Job>> expired = store_->ExpireLeases();
    ASSERT_OK(expired);
    ASSERT_THAT(*expired, SizeIs(1));
  }
  absl::StatusOr<v1::Job> stored = store_->Get("a");
  ASSERT_OK(stored);
  EXPECT_EQ(stored->state(), v1::FAILED);
  EXPECT_THAT(stored->error(), HasSubstr("max_attempts"));
  EXPECT_TRUE(stored->has_end_time());
  EXPECT_THAT(stored->attempts(), SizeIs(2));
  absl::StatusOr<std::vector<StoredEvent>> events = AllEvents("a");
  ASSERT_OK(events);
  EXPECT_EQ(events->back().event.type(), v1::JobEvent::FINISHED);
  absl::StatusOr<std::optional<v1::Job>> none = store_->Claim("w1", kLongLease);
  ASSERT_OK(none);
  EXPECT_FALSE(none->has_value());
}

TEST_P(JobStoreContractTest, ExpireAllRunningRequeuesLiveLeasesToo) {
  ASSERT_OK(store_->Insert(MakeJob("a"), {}));
  ASSERT_OK(ClaimOne("w1", kLongLease));
  absl::StatusOr<std::vector<v1::Job>> none = store_->ExpireLeases(false);
  ASSERT_OK(none);
  EXPECT_THAT(*none, IsEmpty());
  absl::StatusOr<std::vector<v1::Job>> all = store_->ExpireLeases(true);
  ASSERT_OK(all);
  ASSERT_THAT(*all, SizeIs(1));
  EXPECT_EQ((*all)[0].state(), v1::QUEUED);
  EXPECT_EQ((*all)[0].attempt(), 2);
}

TEST_P(JobStoreContractTest, AReleasedJobKeepsItsCancellationRequest) {
  ASSERT_OK(store_->Insert(MakeJob("a"), {}));
  absl::StatusOr<v1::Job> running = ClaimOne("w1");
  ASSERT_OK(running);
  ASSERT_OK(store_->RequestCancel("a"));
  v1::Job released = *running;
  MarkReleased(released, "worker w1 shut down", absl::Now());
  ASSERT_OK(store_->Update(released, LeaseOf(*running), nullptr));
  absl::StatusOr<v1::Job> stored = store_->Get("a");
  ASSERT_OK(stored);
  EXPECT_EQ(stored->state(), v1::QUEUED);
  EXPECT_TRUE(stored->cancel_requested());
  // The next claim carries it, so the worker cancels the job at once.
  absl::StatusOr<v1::Job> again = ClaimOne("w2");
  ASSERT_OK(again);
  EXPECT_TRUE(again->cancel_requested());
}

TEST_P(JobStoreContractTest, ReleaseRequeuesWithoutCountingAgainstMaxAttempts) {
  ASSERT_OK(store_->Insert(WithMaxAttempts(MakeJob("a"), 1), {}));
  for (int attempt = 1; attempt <= 3; ++attempt) {
    absl::StatusOr<v1::Job> running = ClaimOne("w1");
    ASSERT_OK(running);
    ASSERT_EQ(running->attempt(), attempt);
    v1::Job released = *running;
    MarkReleased(released, "worker w1 shut down", absl::Now());
    const v1::JobEvent event = MakeJobEvent(v1::JobEvent::STATE_CHANGED, released, "released");
    ASSERT_OK(store_->Update(released, LeaseOf(*running), &event));
    absl::StatusOr<v1::Job> stored = store_->Get("a");
    ASSERT_OK(stored);
    EXPECT_EQ(stored->state(), v1::QUEUED);
    EXPECT_EQ(stored->attempt(), attempt + 1);
    EXPECT_EQ(stored->worker(), "");
    EXPECT_FALSE(stored->cancel_requested());
    EXPECT_EQ(stored->attempts(attempt - 1).end(), v1::Attempt::RELEASED);
    absl::StatusOr<std::vector<HeldLease>> held = store_->Renew("w1", kLongLease, {"a"});
    ASSERT_OK(held);
    EXPECT_THAT(*held, IsEmpty());
  }
  // max_attempts is 1 yet the job still runs: releases are not counted.
  absl::StatusOr<v1::Job> fourth = ClaimOne("w2");
  ASSERT_OK(fourth);
  EXPECT_EQ(fourth->attempt(), 4);
  ASSERT_OK(Finish(*fourth, v1::SUCCEEDED));
  absl::StatusOr<v1::Job> stored = store_->Get("a");
  ASSERT_OK(stored);
  EXPECT_EQ(stored->state(), v1::SUCCEEDED);
}

// ---- Jobs over several nodes ----

// A store of one worker's has no other workers to place nodes on: jobs over
// several nodes are refused at submission (JobManager::Submit).
TEST_P(JobStoreContractTest, ASingleWorkerStoreHasNoNodesToPlace) {
  if (SharedByInstances()) GTEST_SKIP() << "a shared store places nodes";
  EXPECT_OK(store_->AnnounceWorker("w1", 2, kLongLease));
  ASSERT_OK(store_->Insert(MakeJob("a"), {}));
  ASSERT_OK(ClaimOne("w0"));
  absl::StatusOr<std::vector<NodeAssignment>> taken = store_->TakeAssignments("w1");
  ASSERT_OK(taken);
  EXPECT_THAT(*taken, IsEmpty());
  EXPECT_THAT(store_->PublishRendezvous("a", 1, "127.0.0.1:29500"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("PostgreSQL")));
  EXPECT_THAT(store_->Rendezvous("a", 1),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("PostgreSQL")));
}

TEST_P(JobStoreContractTest, AGangIsPlacedWholeOrStaysQueuedBehindNothing) {
  if (!SharedByInstances()) GTEST_SKIP() << "jobs over several nodes need a shared store";
  ASSERT_OK(store_->AnnounceWorker("w1", 1, kLongLease));
  ASSERT_OK(store_->Insert(GangJob("gang", 3), {}));
  ASSERT_OK(store_->Insert(MakeJob("single"), {}));

  // One other free worker is not enough for 3 nodes: the single-node job
  // queued behind the gang is claimed instead, and nothing of the gang is.
  absl::StatusOr<v1::Job> first = ClaimOne("w0");
  ASSERT_OK(first);
  EXPECT_EQ(first->id(), "single");
  EXPECT_THAT(Nodes(*first), IsEmpty());
  EXPECT_THAT(ClaimOne("w0"), StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  absl::StatusOr<std::vector<NodeAssignment>> none = store_->TakeAssignments("w1");
  ASSERT_OK(none);
  EXPECT_THAT(*none, IsEmpty());
  absl::StatusOr<v1::Job> queued = store_->Get("gang");
  ASSERT_OK(queued);
  EXPECT_EQ(queued->state(), v1::QUEUED);

  ASSERT_OK(store_->AnnounceWorker("w2", 1, kLongLease));
  absl::StatusOr<v1::Job> gang = ClaimOne("w0");
  ASSERT_OK(gang);
  EXPECT_EQ(gang->id(), "gang");
  EXPECT_EQ(gang->state(), v1::RUNNING);
  EXPECT_EQ(gang->worker(), "w0");
  EXPECT_THAT(Nodes(*gang), ElementsAre("w0", "w1", "w2"));
  absl::StatusOr<v1::Job> stored = store_->Get("gang");
  ASSERT_OK(stored);
  EXPECT_THAT(Nodes(*stored), ElementsAre("w0", "w1", "w2"));

  // Each node's assignment is taken once, by its worker; node 0 has none.
  for (int rank = 1; rank <= 2; ++rank) {
    const std::string worker = absl::StrCat("w", rank);
    absl::StatusOr<std::vector<NodeAssignment>> taken = store_->TakeAssignments(worker);
    ASSERT_OK(taken);
    ASSERT_THAT(*taken, SizeIs(1)) << worker;
    EXPECT_EQ((*taken)[0].node_rank, rank);
    EXPECT_EQ((*taken)[0].job.id(), "gang");
    EXPECT_EQ((*taken)[0].job.state(), v1::RUNNING);
    EXPECT_EQ((*taken)[0].job.attempt(), 1);
    EXPECT_THAT(Nodes((*taken)[0].job), ElementsAre("w0", "w1", "w2"));
    absl::StatusOr<std::vector<NodeAssignment>> again = store_->TakeAssignments(worker);
    ASSERT_OK(again);
    EXPECT_THAT(*again, IsEmpty()) << worker;
  }
  absl::StatusOr<std::vector<NodeAssignment>> claimer = store_->TakeAssignments("w0");
  ASSERT_OK(claimer);
  EXPECT_THAT(*claimer, IsEmpty());
}

TEST_P(JobStoreContractTest, ExpiredAnnouncementsAndBusyWorkersAreNotPlacedOn) {
  if (!SharedByInstances()) GTEST_SKIP() << "jobs over several nodes need a shared store";
  ASSERT_OK(store_->AnnounceWorker("gone", 4, absl::Milliseconds(1)));
  ASSERT_OK(store_->AnnounceWorker("busy", 0, kLongLease));
  ASSERT_OK(store_->Insert(GangJob("gang", 2), {}));
  absl::SleepFor(absl::Milliseconds(20));
  EXPECT_THAT(ClaimOne("w0"), StatusIs(absl::StatusCode::kNotFound, ::testing::_));

  // A slot is taken by the placement, and an announcement does not give
  // back the slot of a node its worker has not taken yet.
  ASSERT_OK(store_->AnnounceWorker("free", 1, kLongLease));
  ASSERT_OK(store_->Insert(GangJob("second", 2), {}));
  absl::StatusOr<v1::Job> gang = ClaimOne("w0");
  ASSERT_OK(gang);
  EXPECT_EQ(gang->id(), "gang");
  EXPECT_THAT(Nodes(*gang), ElementsAre("w0", "free"));
  ASSERT_OK(store_->AnnounceWorker("free", 1, kLongLease));
  EXPECT_THAT(ClaimOne("w9"), StatusIs(absl::StatusCode::kNotFound, ::testing::_));

  // Once taken, the worker's own count is the truth again.
  absl::StatusOr<std::vector<NodeAssignment>> taken = store_->TakeAssignments("free");
  ASSERT_OK(taken);
  ASSERT_THAT(*taken, SizeIs(1));
  ASSERT_OK(store_->AnnounceWorker("free", 1, kLongLease));
  absl::StatusOr<v1::Job> second = ClaimOne("w9");
  ASSERT_OK(second);
  EXPECT_EQ(second->id(), "second");
  EXPECT_THAT(Nodes(*second), ElementsAre("w9", "free"));
}

TEST_P(JobStoreContractTest, AWorkerWhoseSlotWasPlacedOnClaimsNothingElse) {
  if (!SharedByInstances()) GTEST_SKIP() << "jobs over several nodes need a shared store";
  ASSERT_OK(store_->AnnounceWorker("w1", 1, kLongLease));
  ASSERT_OK(store_->Insert(GangJob("gang", 2), {}));
  ASSERT_OK(store_->Insert(MakeJob("single"), {}));
  absl::StatusOr<v1::Job> gang = ClaimOne("w0");
  ASSERT_OK(gang);
  EXPECT_EQ(gang->id(), "gang");
  // w1's one slot now belongs to the gang's node 1: it runs that first.
  EXPECT_THAT(ClaimOne("w1"), StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  absl::StatusOr<v1::Job> queued = store_->Get("single");
  ASSERT_OK(queued);
  EXPECT_EQ(queued->state(), v1::QUEUED);
}

TEST_P(JobStoreContractTest, ConcurrentGangClaimsNeverOverAssignAWorker) {
  if (!SharedByInstances()) GTEST_SKIP() << "jobs over several nodes need a shared store";
  constexpr int kWorkers = 8;
  constexpr int kClaimers = 4;
  for (int w = 0; w < kWorkers; ++w) {
    ASSERT_OK(store_->AnnounceWorker(absl::StrCat("w", w), 1, kLongLease));
  }
  for (int i = 0; i < 6; ++i) ASSERT_OK(store_->Insert(GangJob(absl::StrCat("g", i), 2), {}));
  std::vector<std::unique_ptr<JobStore>> stores;
  for (int c = 0; c < kClaimers; ++c) {
    absl::StatusOr<std::unique_ptr<JobStore>> store = Open();
    ASSERT_OK(store);
    stores.push_back(std::move(*store));
  }
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int c = 0; c < kClaimers; ++c) {
    // Claimers w0..w3 are also free workers the others may place nodes on.
    threads.emplace_back([&, c] {
      for (int tries = 0; tries < 5; ++tries) {
        absl::StatusOr<std::optional<v1::Job>> job =
            stores[c]->Claim(absl::StrCat("w", c), kLongLease);
        if (!job.ok()) ++errors;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);

  absl::StatusOr<JobPage> running = store_->List({.states = {v1::RUNNING}});
  ASSERT_OK(running);
  EXPECT_THAT(running->jobs, ::testing::Not(IsEmpty()));
  std::map<std::string, int> places;
  for (const v1::Job& job : running->jobs) {
    ASSERT_THAT(Nodes(job), SizeIs(2)) << job.id();
    for (const std::string& node : job.nodes()) ++places[node];
  }
  // Every worker announced one slot: it is in at most one gang.
  for (const auto& [worker, n] : places) EXPECT_EQ(n, 1) << worker << " is in " << n << " gangs";
}

TEST_P(JobStoreContractTest, RendezvousIsFencedToTheAttemptAndRequeueClearsTheNodes) {
  if (!SharedByInstances()) GTEST_SKIP() << "jobs over several nodes need a shared store";
  ASSERT_OK(store_->AnnounceWorker("w1", 1, kLongLease));
  ASSERT_OK(store_->Insert(GangJob("gang", 2), {}));
  absl::StatusOr<v1::Job> first = ClaimOne("w0");
  ASSERT_OK(first);
  absl::StatusOr<std::string> unpublished = store_->Rendezvous("gang", 1);
  ASSERT_OK(unpublished);
  EXPECT_EQ(*unpublished, "");
  ASSERT_OK(store_->PublishRendezvous("gang", 1, "10.0.0.1:29500"));
  absl::StatusOr<std::string> published = store_->Rendezvous("gang", 1);
  ASSERT_OK(published);
  EXPECT_EQ(*published, "10.0.0.1:29500");
  EXPECT_THAT(store_->PublishRendezvous("gang", 2, "10.0.0.9:1"),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("attempt 2")));
  EXPECT_THAT(store_->Rendezvous("gang", 2), StatusIs(absl::StatusCode::kAborted, ::testing::_));
  EXPECT_THAT(store_->Rendezvous("nope", 1),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope")));
  ASSERT_OK(store_->Insert(MakeJob("single"), {}));
  absl::StatusOr<v1::Job> single = ClaimOne("w9");
  ASSERT_OK(single);
  EXPECT_THAT(store_->PublishRendezvous("single", 1, "10.0.0.1:29500"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("one node")));
  ASSERT_OK(Finish(*single, v1::SUCCEEDED));

  // The lease runs out: attempt 2 is placed anew, and attempt 1's node and
  // address are gone with it.
  absl::StatusOr<std::vector<v1::Job>> expired = store_->ExpireLeases(true);
  ASSERT_OK(expired);
  ASSERT_THAT(*expired, SizeIs(1));
  EXPECT_EQ((*expired)[0].state(), v1::QUEUED);
  EXPECT_THAT(Nodes((*expired)[0]), IsEmpty());
  EXPECT_THAT(store_->Rendezvous("gang", 1), StatusIs(absl::StatusCode::kAborted, ::testing::_));
  absl::StatusOr<std::vector<NodeAssignment>> stale = store_->TakeAssignments("w1");
  ASSERT_OK(stale);
  EXPECT_THAT(*stale, IsEmpty());

  ASSERT_OK(store_->AnnounceWorker("w1", 1, kLongLease));
  absl::StatusOr<v1::Job> second = ClaimOne("w1");  // no other free worker yet
  EXPECT_THAT(second, StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  ASSERT_OK(store_->AnnounceWorker("w2", 1, kLongLease));
  second = ClaimOne("w1");
  ASSERT_OK(second);
  EXPECT_EQ(second->attempt(), 2);
  EXPECT_THAT(Nodes(*second), ElementsAre("w1", "w2"));
  absl::StatusOr<std::string> fresh = store_->Rendezvous("gang", 2);
  ASSERT_OK(fresh);
  EXPECT_EQ(fresh.value(), "");

  // A release re-queues without nodes too.
  v1::Job released = *second;
  MarkReleased(released, "worker w1 shut down", absl::Now());
  EXPECT_THAT(Nodes(released), IsEmpty());
  ASSERT_OK(store_->Update(released, LeaseOf(*second), nullptr));
  absl::StatusOr<v1::Job> stored = store_->Get("gang");
  ASSERT_OK(stored);
  EXPECT_EQ(stored->state(), v1::QUEUED);
  EXPECT_EQ(stored->attempt(), 3);
  EXPECT_THAT(Nodes(*stored), IsEmpty());
  absl::StatusOr<std::vector<NodeAssignment>> none = store_->TakeAssignments("w2");
  ASSERT_OK(none);
  EXPECT_THAT(*none, IsEmpty());
}

// ---- Events ----

TEST_P(JobStoreContractTest, EveryChangeAppendsAnEventInOrder) {
  ASSERT_OK(store_->Insert(MakeJob("a"), {}));
  ASSERT_OK(store_->Insert(MakeJob("other"), {}));  // interleaved, not in a's log
  absl::StatusOr<v1::Job> running = ClaimOne("w1");
  ASSERT_OK(running);
  v1::Job progressed = *running;
  progressed.mutable_progress()->set_step(4);
  const v1::JobEvent progress = MakeJobEvent(v1::JobEvent::PROGRESS, progressed, "step 4");
  absl::StatusOr<int64_t> progress_seq = store_->Update(progressed, LeaseOf(*running), &progress);
  ASSERT_OK(progress_seq);
  ASSERT_OK(store_->RequestCancel("a"));
  ASSERT_OK(Finish(progressed, v1::CANCELLED));

  absl::StatusOr<std::vector<StoredEvent>> events = AllEvents("a");
  ASSERT_OK(events);
  EXPECT_THAT(Types(*events), ElementsAre(v1::JobEvent::STATE_CHANGED, v1::JobEvent::STATE_CHANGED,
                                          v1::JobEvent::PROGRESS, v1::JobEvent::STATE_CHANGED,
                                          v1::JobEvent::FINISHED));
  ASSERT_THAT(*events, SizeIs(5));
  EXPECT_THAT(Lower((*events)[0].event.message()), HasSubstr("queued"));
  EXPECT_THAT((*events)[1].event.message(), HasSubstr("w1"));
  EXPECT_EQ((*events)[1].event.job().state(), v1::RUNNING);
  EXPECT_EQ((*events)[2].sequence, *progress_seq);
  EXPECT_EQ((*events)[2].event.job().progress().step(), 4);
  EXPECT_EQ((*events)[4].event.job().state(), v1::CANCELLED);
  for (size_t i = 0; i < events->size(); ++i) {
    EXPECT_EQ((*events)[i].event.sequence(), (*events)[i].sequence);
    EXPECT_EQ((*events)[i].event.job().id(), "a");
    if (i > 0) EXPECT_THAT((*events)[i].sequence, Gt((*events)[i - 1].sequence));
  }
}

TEST_P(JobStoreContractTest, EventsAfterHonoursTheCursorAndLimit) {
  ASSERT_OK(store_->Insert(MakeJob("a"), {}));
  absl::StatusOr<v1::Job> running = ClaimOne("w1");
  ASSERT_OK(running);
  for (int step = 1; step <= 4; ++step) {
    v1::Job progressed = *running;
    progressed.mutable_progress()->set_step(step);
    const v1::JobEvent event = MakeJobEvent(v1::JobEvent::PROGRESS, progressed, "");
    ASSERT_OK(store_->Update(progressed, LeaseOf(*running), &event));
  }
  absl::StatusOr<std::vector<StoredEvent>> all = AllEvents("a");
  ASSERT_OK(all);
  ASSERT_THAT(*all, SizeIs(6));
  absl::StatusOr<std::vector<StoredEvent>> some = store_->EventsAfter("a", (*all)[1].sequence, 2);
  ASSERT_OK(some);
  ASSERT_THAT(*some, SizeIs(2));
  EXPECT_EQ((*some)[0].sequence, (*all)[2].sequence);
  EXPECT_EQ((*some)[1].sequence, (*all)[3].sequence);
  absl::StatusOr<std::vector<StoredEvent>> none =
      store_->EventsAfter("a", all->back().sequence, 10);
  ASSERT_OK(none);
  EXPECT_THAT(*none, IsEmpty());
}

TEST_P(JobStoreContractTest, SnapshotCarriesTheNewestEventSequence) {
  ASSERT_OK(store_->Insert(MakeJob("a"), {}));
  absl::StatusOr<JobSnapshot> queued = store_->Snapshot("a");
  ASSERT_OK(queued);
  absl::StatusOr<std::vector<StoredEvent>> events = AllEvents("a");
  ASSERT_OK(events);
  EXPECT_EQ(queued->job.state(), v1::QUEUED);
  EXPECT_EQ(queued->last_event_seq, events->back().sequence);

  absl::StatusOr<v1::Job> running = ClaimOne("w1");
  ASSERT_OK(running);
  ASSERT_OK(store_->Insert(MakeJob("other"), {}));
  absl::StatusOr<JobSnapshot> snapshot = store_->Snapshot("a");
  ASSERT_OK(snapshot);
  events = AllEvents("a");
  ASSERT_OK(events);
  EXPECT_GT(snapshot->last_event_seq, queued->last_event_seq);
  EXPECT_EQ(snapshot->last_event_seq, events->back().sequence);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(snapshot->job, *running));
}

// ---- Models ----

TEST_P(JobStoreContractTest, ModelChangesBumpTheirGeneration) {
  absl::StatusOr<std::vector<ModelRecord>> none = store_->ModelRecords();
  ASSERT_OK(none);
  EXPECT_THAT(*none, IsEmpty());

  absl::StatusOr<int64_t> loaded = store_->PublishModelChange("mlp", true);
  ASSERT_OK(loaded);
  absl::StatusOr<int64_t> unloaded = store_->PublishModelChange("mlp", false);
  ASSERT_OK(unloaded);
  EXPECT_GT(*unloaded, *loaded);
  absl::StatusOr<int64_t> cnn = store_->PublishModelChange("cnn", true);
  ASSERT_OK(cnn);

  absl::StatusOr<std::vector<ModelRecord>> records = store_->ModelRecords();
  ASSERT_OK(records);
  std::map<std::string, ModelRecord> by_name;
  for (const ModelRecord& r : *records) by_name[r.name] = r;
  ASSERT_THAT(by_name, SizeIs(2));
  EXPECT_EQ(by_name["mlp"].generation, *unloaded);
  EXPECT_FALSE(by_name["mlp"].loaded);
  EXPECT_EQ(by_name["cnn"].generation, *cnn);
  EXPECT_TRUE(by_name["cnn"].loaded);
}

// ---- Notifications, durability ----

TEST_P(JobStoreContractTest, ChangeListenerHearsOfCommittedWrites) {
  ChangeRecorder recorder;
  store_->SetChangeListener(recorder.Listener());
  // PostgreSQL: a write by another worker; SQLite: by this process.
  std::unique_ptr<JobStore> other;
  JobStore* writer = store_.get();
  if (SharedByInstances()) {
    absl::StatusOr<std::unique_ptr<JobStore>> opened = Open();
    ASSERT_OK(opened);
    other = std::move(*opened);
    writer = other.get();
  }
  ASSERT_OK(writer->Insert(MakeJob("a"), {}));
  EXPECT_TRUE(recorder.WaitFor(StoreChannel::kJobs, "a"));
  ASSERT_OK(writer->Insert(MakeJob("b"), {}));
  ASSERT_OK(writer->RequestCancel("b"));
  EXPECT_TRUE(recorder.WaitFor(StoreChannel::kJobs, "b"));
  ASSERT_OK(writer->PublishModelChange("mlp", true));
  EXPECT_TRUE(recorder.WaitFor(StoreChannel::kModels, "mlp"));
}

TEST_P(JobStoreContractTest, DataSurvivesReopening) {
  ASSERT_OK(InsertEnded(MakeJob("old"), v1::SUCCEEDED));
  ASSERT_OK(store_->Insert(MakeJob("new"), {}));
  absl::StatusOr<v1::Job> running = ClaimOne("w1");
  ASSERT_OK(running);
  v1::Job progressed = *running;
  progressed.mutable_progress()->set_step(3);
  ASSERT_OK(store_->Update(progressed, LeaseOf(*running), nullptr));
  ASSERT_OK(store_->PublishModelChange("mlp", true));
  absl::StatusOr<std::vector<StoredEvent>> events = AllEvents("new");
  ASSERT_OK(events);

  store_.reset();
  absl::StatusOr<std::unique_ptr<JobStore>> reopened = Open();
  ASSERT_OK(reopened);
  store_ = std::move(*reopened);

  absl::StatusOr<v1::Job> job = store_->Get("new");
  ASSERT_OK(job);
  EXPECT_EQ(job->state(), v1::RUNNING);
  EXPECT_EQ(job->worker(), "w1");
  EXPECT_EQ(job->progress().step(), 3);
  absl::StatusOr<std::vector<StoredEvent>> events_after = AllEvents("new");
  ASSERT_OK(events_after);
  EXPECT_EQ(events_after->size(), events->size());
  absl::StatusOr<std::vector<ModelRecord>> models = store_->ModelRecords();
  ASSERT_OK(models);
  EXPECT_THAT(*models, SizeIs(1));
  // The lease is still held and new records go after the old ones.
  absl::StatusOr<std::vector<HeldLease>> held = store_->Renew("w1", kLongLease, {"new"});
  ASSERT_OK(held);
  EXPECT_THAT(*held, SizeIs(1));
  ASSERT_OK(store_->Insert(MakeJob("newest"), {}));
  absl::StatusOr<JobPage> page = store_->List({});
  ASSERT_OK(page);
  EXPECT_THAT(Ids(page->jobs), ElementsAre("newest", "new", "old"));
}

// PostgreSQL only: the server goes away and comes back; the store recovers
// without being reopened and its listener hears of writes again.
TEST_P(JobStoreContractTest, RecoversAfterTheServerRestarts) {
  if (GetParam() != Backend::kPostgres) GTEST_SKIP() << "a PostgreSQL server only";
  ChangeRecorder recorder;
  store_->SetChangeListener(recorder.Listener());
  ASSERT_OK(store_->Insert(MakeJob("before"), {}));
  ASSERT_OK(server_->Restart());

  absl::Status inserted = absl::UnavailableError("not tried");
  for (int i = 0; i < 100 && !inserted.ok(); ++i) {
    inserted = store_->Insert(MakeJob("after"), {});
    if (!inserted.ok()) {
      EXPECT_THAT(inserted, StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
      absl::SleepFor(absl::Milliseconds(100));
    }
  }
  ASSERT_OK(inserted);
  absl::StatusOr<JobPage> page = store_->List({});
  ASSERT_OK(page);
  EXPECT_THAT(Ids(page->jobs), ElementsAre("after", "before"));

  absl::StatusOr<std::unique_ptr<JobStore>> other = Open();
  ASSERT_OK(other);
  // The listener reconnects with backoff; a write after it is back is heard.
  bool heard = false;
  for (int i = 0; i < 5 && !heard; ++i) {
    const std::string id = absl::StrCat("ping", i);
    ASSERT_OK((*other)->Insert(MakeJob(id), {}));
    heard = recorder.WaitFor(StoreChannel::kJobs, id);
  }
  EXPECT_TRUE(heard);
}

// Two suites (and ctest entries), each with its own SetUpTestSuite.
INSTANTIATE_TEST_SUITE_P(Sqlite, JobStoreContractTest, ::testing::Values(Backend::kSqlite));
INSTANTIATE_TEST_SUITE_P(Postgres, JobStoreContractTest, ::testing::Values(Backend::kPostgres));

}  // namespace
}  // namespace mantissa
