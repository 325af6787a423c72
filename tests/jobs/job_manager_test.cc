#include "server/jobs/job_manager.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "mantissa/v1/training.pb.h"
#include "prometheus/text_serializer.h"
#include "server/common/file_sync.h"
#include "server/jobs/job_runner.h"
#include "server/jobs/job_store.h"
#include "server/jobs/job_transitions.h"
#include "server/jobs/postgres_job_store.h"
#include "server/metrics/metrics.h"
#include "tests/testing/postgres_server.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace mantissa {
namespace {

using ::mantissa::testing::IsOk;
using ::mantissa::testing::PostgresServer;
using ::mantissa::testing::StatusIs;
using ::mantissa::testing::TempDir;
using ::testing::AllOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::MatchesRegex;
using ::testing::Not;
using ::testing::SizeIs;

constexpr auto kDeadline = std::chrono::seconds(10);

// Polls `condition` until it holds or the deadline passes.
bool WaitFor(const std::function<bool()>& condition) {
  const auto deadline = std::chrono::steady_clock::now() + kDeadline;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

// A JobRunner whose behaviour each job picks through its spec's
// model_options:
//   block=N  wait before step N (0-based) until Release() or cancellation
//   fail=M   return INTERNAL with message M after the steps
//   throw=M  throw std::runtime_error(M) before the first step
//   warn=M   call context.Warn(M) before the first step
//   unavailable=M  return UNAVAILABLE with message M after the steps of
//            attempt 1 (as a data-parallel run whose rank died)
//   deadline=M  likewise DEADLINE_EXCEEDED (a node never joined)
// Every job takes spec.steps() steps (Prepare fills in 3), each reporting
// PROGRESS and a metrics step, and checks context.cancelled() first. A job
// over several nodes first meets at a rendezvous: node 0 publishes
// kRendezvous, the others await it.
class FakeRunner : public JobRunner {
 public:
  static constexpr char kRendezvous[] = "127.0.0.1:29500";

  // One node's run of a job over several nodes, as it ended.
  struct NodeRun {
    std::string job_id;
    int node_rank = 0;
    std::string rendezvous;  // as awaited (node > 0)
    StopReason stop = StopReason::kNone;
    absl::Status status;
  };

  // Prepare behaviour; set before submitting.
  absl::Status prepare_status = absl::OkStatus();
  std::string prepare_warning;
  std::string effective_precision = "32-true";

  absl::StatusOr<PreparedSpec> Prepare(const v1::JobSpec& spec) const override {
    ++prepare_calls_;
    if (!prepare_status.ok()) return prepare_status;
    PreparedSpec prepared;
    prepared.spec = spec;
    if (!prepared.spec.has_steps()) prepared.spec.set_steps(3);
    if (prepared.spec.model().empty()) prepared.spec.set_model("mlp");
    prepared.effective_precision = effective_precision;
    if (!prepare_warning.empty()) prepared.warnings.push_back(prepare_warning);
    return prepared;
  }

  absl::StatusOr<v1::JobResult> Run(const v1::Job& job, JobContext& context) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      started_.push_back(job.id());
      ++in_run_;
      max_in_run_ = std::max(max_in_run_, in_run_);
    }
    struct Leave {
      FakeRunner* runner;
      ~Leave() {
        std::lock_guard<std::mutex> lock(runner->mu_);
        --runner->in_run_;
      }
    } leave{this};

    if (job.spec().num_nodes() > 1) {
      NodeRun node{job.id(), context.node_rank()};
      node.status = RunNode(job, context, node);
      node.stop = context.stop_reason();
      std::lock_guard<std::mutex> lock(mu_);
      nodes_.push_back(node);
      if (!node.status.ok()) return node.status;
      if (node.node_rank > 0) return v1::JobResult();
      return Result(job.spec().steps());
    }
    return RunSteps(job, context);
  }

  absl::StatusOr<v1::JobResult> RunSteps(const v1::Job& job, JobContext& context) {
    const auto& options = job.spec().model_options();
    if (options.count("throw")) throw std::runtime_error(options.at("throw"));
    if (options.count("warn")) context.Warn(options.at("warn"));
    const int64_t block_at = options.count("block") ? std::stoll(options.at("block")) : -1;
    const int64_t steps = job.spec().steps();
    for (int64_t step = 0; step < steps; ++step) {
      if (step == block_at) WaitForRelease(context);
      if (context.cancelled()) return absl::CancelledError("cancelled by request");
      const double loss = 1.0 / static_cast<double>(step + 1);
      context.Update(v1::JobEvent::PROGRESS, [&](v1::Job& j) {
        j.mutable_progress()->set_step(step + 1);
        j.mutable_progress()->set_total_steps(steps);
        j.mutable_progress()->set_loss(loss);
      });
      context.metrics().ObserveStep(0.002);
      context.metrics().SetLoss(loss);
    }
    if (options.count("fail")) return absl::InternalError(options.at("fail"));
    if (options.count("unavailable") && job.attempt() == 1) {
      return absl::UnavailableError(options.at("unavailable"));
    }
    if (options.count("deadline") && job.attempt() == 1) {
      return absl::DeadlineExceededError(options.at("deadline"));
    }
    return Result(steps);
  }

  // Node 0 publishes the rendezvous, the others await it; then the steps.
  absl::Status RunNode(const v1::Job& job, JobContext& context, NodeRun& node) {
    std::unique_lock<std::mutex> lock(mu_, std::defer_lock);
    if (node.node_rank == 0) {
      if (absl::Status s = context.PublishRendezvous(kRendezvous); !s.ok()) return s;
      // As rank 0's store does: the job starts once every node joined.
      lock.lock();
      while (joined_[job.id()] < job.spec().num_nodes() - 1 && !context.cancelled()) {
        cv_.wait_for(lock, std::chrono::milliseconds(2));
      }
      lock.unlock();
    } else {
      absl::StatusOr<std::string> address = context.AwaitRendezvous(absl::Seconds(10));
      if (!address.ok()) return address.status();
      node.rendezvous = *address;
      lock.lock();
      ++joined_[job.id()];
      cv_.notify_all();
      lock.unlock();
    }
    return RunSteps(job, context).status();
  }

  static v1::JobResult Result(int64_t steps) {
    v1::JobResult result;
    result.set_final_loss(0.5);
    result.set_steps_completed(steps);
    return result;
  }

  v1::GetCapabilitiesResponse Capabilities() const override {
    v1::GetCapabilitiesResponse caps;
    caps.set_device("fake");
    caps.add_models("mlp");
    caps.set_max_concurrent_jobs(99);
    return caps;
  }

  // Lets every job waiting at its block step (and any later one) go on.
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    released_ = true;
    cv_.notify_all();
  }

  // Waits until `n` jobs are waiting at their block step.
  bool WaitForBlocked(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, kDeadline, [&] { return blocked_ >= n; });
  }

  int in_run() const {
    std::lock_guard<std::mutex> lock(mu_);
    return in_run_;
  }
  int max_in_run() const {
    std::lock_guard<std::mutex> lock(mu_);
    return max_in_run_;
  }
  std::vector<std::string> started() const {
    std::lock_guard<std::mutex> lock(mu_);
    return started_;
  }
  int prepare_calls() const { return prepare_calls_; }
  std::vector<NodeRun> nodes() const {
    std::lock_guard<std::mutex> lock(mu_);
    return nodes_;
  }

 private:
  void WaitForRelease(JobContext& context) {
    std::unique_lock<std::mutex> lock(mu_);
    ++blocked_;
    cv_.notify_all();
    while (!released_ && !context.cancelled()) {
      cv_.wait_for(lock, std::chrono::milliseconds(2));
    }
    --blocked_;
  }

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool released_ = false;
  int blocked_ = 0;
  int in_run_ = 0;
  int max_in_run_ = 0;
  std::vector<std::string> started_;
  std::vector<NodeRun> nodes_;
  std::map<std::string, int> joined_;  // nodes > 0 past the rendezvous, by job
  mutable std::atomic<int> prepare_calls_{0};
};

// Records the events of one job.
class EventRecorder : public JobWatcher {
 public:
  void OnJobEvent(const v1::JobEvent& event) override {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(event);
    cv_.notify_all();
  }

  bool WaitForFinished() {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, kDeadline, [&] {
      for (const v1::JobEvent& e : events_) {
        if (e.type() == v1::JobEvent::FINISHED) return true;
      }
      return false;
    });
  }

  std::vector<v1::JobEvent> events() const {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }

  std::vector<v1::JobEvent::Type> types() const {
    std::vector<v1::JobEvent::Type> types;
    for (const v1::JobEvent& e : events()) types.push_back(e.type());
    return types;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<v1::JobEvent> events_;
};

v1::JobSpec Spec(int64_t steps = 3, std::map<std::string, std::string> options = {}) {
  v1::JobSpec spec;
  spec.set_model("mlp");
  spec.set_dataset("synthetic");
  spec.set_steps(steps);
  for (auto& [key, value] : options) (*spec.mutable_model_options())[key] = value;
  return spec;
}

v1::JobSpec BlockingSpec(int64_t steps = 3, int64_t block_at = 0) {
  return Spec(steps, {{"block", std::to_string(block_at)}});
}

v1::Job StoredJob(const std::string& id, v1::JobState state) {
  v1::Job job;
  job.set_id(id);
  job.set_state(state);
  *job.mutable_spec() = Spec(2);
  job.set_effective_precision("32-true");
  return job;
}

// Puts `job` into the store in its state as a worker would have: queued,
// then (unless QUEUED) claimed by a worker that is gone, then (if ended)
// finished with the job's own end_time. Seed the queued jobs last: a claim
// takes the oldest queued one.
absl::Status Seed(JobStore& store, const v1::Job& job) {
  v1::Job queued = job;
  queued.set_state(v1::QUEUED);
  queued.set_attempt(1);
  if (absl::Status s = store.Insert(queued, {}); !s.ok()) return s;
  if (job.state() == v1::QUEUED) return absl::OkStatus();
  absl::StatusOr<std::optional<v1::Job>> claimed = store.Claim("gone-worker", absl::Hours(1));
  if (!claimed.ok()) return claimed.status();
  if (!claimed->has_value() || (*claimed)->id() != job.id()) {
    return absl::InternalError("Seed: seed queued jobs last");
  }
  if (job.state() == v1::RUNNING) return absl::OkStatus();
  v1::Job ended = **claimed;
  MarkFinished(ended, job.state(), job.error(), absl::Now());
  if (job.has_end_time()) *ended.mutable_end_time() = job.end_time();
  return store.Update(ended, {"gone-worker", ended.attempt()}, nullptr).status();
}

class JobManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<JobStore>> store =
        OpenJobStore({.database = "sqlite:" + dir_.File("jobs.db")});
    ASSERT_OK(store);
    store_ = std::move(*store);
  }

  void StartManager(int max_concurrent_jobs = 1,
                    absl::Duration persist_interval = absl::Seconds(1)) {
    JobManager::Options options;
    options.store = store_.get();
    options.runner = &runner_;
    options.metrics = &metrics_;
    options.max_concurrent_jobs = max_concurrent_jobs;
    options.progress_persist_interval = persist_interval;
    absl::StatusOr<std::unique_ptr<JobManager>> manager = JobManager::Create(options);
    ASSERT_OK(manager);
    manager_ = std::move(*manager);
  }

  EventRecorder* NewRecorder() {
    recorders_.push_back(std::make_unique<EventRecorder>());
    return recorders_.back().get();
  }

  // Polls Get until the job is in `state`; returns the last job seen.
  v1::Job WaitForState(const std::string& id, v1::JobState state) {
    v1::Job last;
    WaitFor([&] {
      absl::StatusOr<v1::Job> job = manager_->Get(id);
      if (!job.ok()) return false;
      last = *job;
      return last.state() == state;
    });
    return last;
  }

  v1::Job Submit(const v1::JobSpec& spec) {
    absl::StatusOr<v1::Job> job = manager_->Submit(spec);
    EXPECT_OK(job);
    return job.ok() ? *job : v1::Job();
  }

  std::string MetricsText() {
    prometheus::TextSerializer serializer;
    return serializer.Serialize(metrics_.registry()->Collect());
  }

  TempDir dir_;
  std::unique_ptr<JobStore> store_;
  FakeRunner runner_;
  Metrics metrics_;
  // Declared before manager_ so that they outlive it.
  std::vector<std::unique_ptr<EventRecorder>> recorders_;
  std::unique_ptr<JobManager> manager_;
};

TEST_F(JobManagerTest, SubmitQueuesThenRunsToSucceeded) {
  StartManager();
  const v1::Job submitted = Submit(BlockingSpec(/*steps=*/4));
  EXPECT_EQ(submitted.state(), v1::QUEUED);
  EXPECT_THAT(submitted.id(), MatchesRegex("[0-9a-f]{12}"));
  EXPECT_EQ(submitted.spec().steps(), 4);
  EXPECT_EQ(submitted.effective_precision(), "32-true");
  EXPECT_TRUE(submitted.has_create_time());

  // Accepted jobs are durable before Submit returns.
  absl::StatusOr<v1::Job> stored = store_->Get(submitted.id());
  ASSERT_OK(stored);

  ASSERT_TRUE(runner_.WaitForBlocked(1));
  absl::StatusOr<v1::Job> running = manager_->Get(submitted.id());
  ASSERT_OK(running);
  EXPECT_EQ(running->state(), v1::RUNNING);
  EXPECT_TRUE(running->has_start_time());
  stored = store_->Get(submitted.id());
  ASSERT_OK(stored);
  EXPECT_EQ(stored->state(), v1::RUNNING);

  runner_.Release();
  const v1::Job done = WaitForState(submitted.id(), v1::SUCCEEDED);
  ASSERT_EQ(done.state(), v1::SUCCEEDED);
  EXPECT_DOUBLE_EQ(done.result().final_loss(), 0.5);
  EXPECT_EQ(done.result().steps_completed(), 4);
  EXPECT_EQ(done.progress().step(), 4);
  EXPECT_TRUE(done.has_end_time());
  EXPECT_EQ(done.error(), "");

  stored = store_->Get(submitted.id());
  ASSERT_OK(stored);
  EXPECT_EQ(stored->state(), v1::SUCCEEDED);
  EXPECT_EQ(stored->result().steps_completed(), 4);
  EXPECT_EQ(stored->progress().step(), 4);
  EXPECT_THAT(runner_.started(), ElementsAre(submitted.id()));
}

TEST_F(JobManagerTest, SubmitAssignsDistinctIds) {
  StartManager();
  const v1::Job a = Submit(Spec());
  const v1::Job b = Submit(Spec());
  EXPECT_NE(a.id(), b.id());
  EXPECT_EQ(WaitForState(a.id(), v1::SUCCEEDED).state(), v1::SUCCEEDED);
  EXPECT_EQ(WaitForState(b.id(), v1::SUCCEEDED).state(), v1::SUCCEEDED);
}

TEST_F(JobManagerTest, PrepareErrorIsReturnedAndNothingIsStored) {
  StartManager();
  runner_.prepare_status = absl::InvalidArgumentError("steps: must be positive, got -1");
  EXPECT_THAT(manager_->Submit(Spec(-1)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("steps: must be positive")));
  EXPECT_EQ(runner_.prepare_calls(), 1);

  absl::StatusOr<JobPage> listed = manager_->List({});
  ASSERT_OK(listed);
  EXPECT_THAT(listed->jobs, IsEmpty());
  absl::StatusOr<JobPage> stored = store_->List({});
  ASSERT_OK(stored);
  EXPECT_THAT(stored->jobs, IsEmpty());
  EXPECT_THAT(MetricsText(), Not(HasSubstr("mantissa_jobs_submitted_total{")));
}

TEST_F(JobManagerTest, PrepareWarningsAndEffectivePrecisionReachTheJob) {
  StartManager();
  runner_.prepare_warning = "precision '16' is deprecated; use '16-mixed'";
  runner_.effective_precision = "bf16-mixed";
  v1::JobSpec spec = Spec();
  spec.set_precision("16");
  const v1::Job job = Submit(spec);
  EXPECT_EQ(job.effective_precision(), "bf16-mixed");
  EXPECT_EQ(job.spec().precision(), "16");
  EXPECT_THAT(job.warnings(), ElementsAre("precision '16' is deprecated; use '16-mixed'"));

  const v1::Job done = WaitForState(job.id(), v1::SUCCEEDED);
  EXPECT_EQ(done.effective_precision(), "bf16-mixed");
  EXPECT_THAT(done.warnings(), ElementsAre("precision '16' is deprecated; use '16-mixed'"));
}

TEST_F(JobManagerTest, PrepareFillsInDefaults) {
  StartManager();
  v1::JobSpec spec = Spec();
  spec.clear_steps();
  const v1::Job job = Submit(spec);
  EXPECT_TRUE(job.spec().has_steps());
  EXPECT_EQ(job.spec().steps(), 3);
}

TEST_F(JobManagerTest, RunnerWarningIsAddedAndPublished) {
  StartManager();
  const v1::Job blocker = Submit(BlockingSpec());
  ASSERT_TRUE(runner_.WaitForBlocked(1));
  const v1::Job job = Submit(Spec(2, {{"warn", "slow device"}}));
  EventRecorder* recorder = NewRecorder();
  ASSERT_OK(manager_->Watch(job.id(), recorder));
  runner_.Release();
  ASSERT_TRUE(recorder->WaitForFinished());

  const std::vector<v1::JobEvent> events = recorder->events();
  bool saw_warning = false;
  for (const v1::JobEvent& e : events) {
    if (e.type() != v1::JobEvent::WARNING) continue;
    saw_warning = true;
    EXPECT_EQ(e.message(), "slow device");
    EXPECT_THAT(e.job().warnings(), Contains("slow device"));
  }
  EXPECT_TRUE(saw_warning);
  EXPECT_THAT(WaitForState(job.id(), v1::SUCCEEDED).warnings(), ElementsAre("slow device"));
  EXPECT_EQ(WaitForState(blocker.id(), v1::SUCCEEDED).state(), v1::SUCCEEDED);
}

TEST_F(JobManagerTest, CancelQueuedJobCancelsAtOnce) {
  StartManager(/*max_concurrent_jobs=*/1);
  const v1::Job running = Submit(BlockingSpec());
  ASSERT_TRUE(runner_.WaitForBlocked(1));
  const v1::Job queued = Submit(Spec());
  ASSERT_EQ(queued.state(), v1::QUEUED);

  absl::StatusOr<v1::Job> cancelled = manager_->Cancel(queued.id());
  ASSERT_OK(cancelled);
  EXPECT_EQ(cancelled->state(), v1::CANCELLED);
  EXPECT_TRUE(cancelled->has_end_time());

  absl::StatusOr<v1::Job> got = manager_->Get(queued.id());
  ASSERT_OK(got);
  EXPECT_EQ(got->state(), v1::CANCELLED);
  absl::StatusOr<v1::Job> stored = store_->Get(queued.id());
  ASSERT_OK(stored);
  EXPECT_EQ(stored->state(), v1::CANCELLED);

  runner_.Release();
  EXPECT_EQ(WaitForState(running.id(), v1::SUCCEEDED).state(), v1::SUCCEEDED);
  // The cancelled job never reached the runner.
  EXPECT_THAT(runner_.started(), ElementsAre(running.id()));
  EXPECT_THAT(
      MetricsText(),
      HasSubstr("mantissa_jobs_finished_total{precision=\"32-true\",state=\"CANCELLED\"} 1"));
}

TEST_F(JobManagerTest, QueuedJobsAreCappedInAllAndPerPrincipal) {
  JobManager::Options options;
  options.store = store_.get();
  options.runner = &runner_;
  options.metrics = &metrics_;
  options.max_queued_jobs = 3;
  options.max_queued_jobs_per_principal = 2;
  absl::StatusOr<std::unique_ptr<JobManager>> manager = JobManager::Create(options);
  ASSERT_OK(manager);
  manager_ = std::move(*manager);
  ASSERT_OK(manager_->Submit(BlockingSpec(), "alice"));
  ASSERT_TRUE(runner_.WaitForBlocked(1));  // running: not queued, not counted

  absl::StatusOr<v1::Job> first = manager_->Submit(Spec(), "alice");
  ASSERT_OK(first);
  EXPECT_EQ(first->principal(), "alice");
  ASSERT_OK(manager_->Submit(Spec(), "alice"));
  EXPECT_THAT(manager_->Submit(Spec(), "alice"),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("--max_queued_jobs_per_principal: principal 'alice'")));
  ASSERT_OK(manager_->Submit(Spec(), "bob"));
  EXPECT_THAT(manager_->Submit(Spec(), "carol"),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("--max_queued_jobs:")));

  // A cancelled job frees its place.
  ASSERT_OK(manager_->Cancel(first->id()));
  ASSERT_OK(manager_->Submit(Spec(), "carol"));

  absl::StatusOr<JobPage> bobs = manager_->List({.principal = "bob"});
  ASSERT_OK(bobs);
  ASSERT_EQ(bobs->jobs.size(), 1u);
  EXPECT_EQ(bobs->jobs[0].principal(), "bob");
  absl::StatusOr<JobPage> alices = manager_->List({.principal = "alice", .limit = 1});
  ASSERT_OK(alices);
  EXPECT_EQ(alices->jobs.size(), 1u);
  runner_.Release();
}

TEST_F(JobManagerTest, CancelRunningJobEndsCancelled) {
  StartManager();
  const v1::Job job = Submit(BlockingSpec(/*steps=*/5, /*block_at=*/2));
  ASSERT_TRUE(runner_.WaitForBlocked(1));

  absl::StatusOr<v1::Job> requested = manager_->Cancel(job.id());
  ASSERT_OK(requested);
  EXPECT_TRUE(requested->cancel_requested());

  const v1::Job done = WaitForState(job.id(), v1::CANCELLED);
  ASSERT_EQ(done.state(), v1::CANCELLED);
  EXPECT_TRUE(done.cancel_requested());
  EXPECT_EQ(done.error(), "");
  EXPECT_EQ(done.progress().step(), 2);
  EXPECT_TRUE(done.has_end_time());

  absl::StatusOr<v1::Job> stored = store_->Get(job.id());
  ASSERT_OK(stored);
  EXPECT_EQ(stored->state(), v1::CANCELLED);
  EXPECT_TRUE(stored->cancel_requested());
}

// A store whose RequestCancel reaches it only once the job has ended there:
// the stopped run wins the race a fast step makes likely.
class CancelArrivesLateStore : public JobStore {
 public:
  explicit CancelArrivesLateStore(JobStore& inner) : inner_(inner) {}

  absl::StatusOr<v1::Job> RequestCancel(const std::string& id) override {
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (absl::Now() < deadline) {
      absl::StatusOr<v1::Job> job = inner_.Get(id);
      if (job.ok() && IsTerminal(job->state())) break;
      absl::SleepFor(absl::Milliseconds(2));
    }
    return inner_.RequestCancel(id);
  }

  std::string kind() const override { return inner_.kind(); }
  absl::Status Insert(const v1::Job& job, const QueueCaps& caps) override {
    return inner_.Insert(job, caps);
  }
  absl::StatusOr<v1::Job> Get(const std::string& id) override { return inner_.Get(id); }
  absl::StatusOr<JobSnapshot> Snapshot(const std::string& id) override {
    return inner_.Snapshot(id);
  }
  absl::StatusOr<JobPage> List(const JobQuery& query) override { return inner_.List(query); }
  absl::Status Delete(const std::string& id) override { return inner_.Delete(id); }
  absl::StatusOr<JobCounts> Count() override { return inner_.Count(); }
  absl::StatusOr<std::optional<v1::Job>> Claim(const std::string& worker,
                                               absl::Duration lease) override {
    return inner_.Claim(worker, lease);
  }
  absl::StatusOr<int64_t> Update(const v1::Job& job, const Lease& lease,
                                 const v1::JobEvent* event) override {
    return inner_.Update(job, lease, event);
  }
  absl::StatusOr<std::vector<HeldLease>> Renew(const std::string& worker, absl::Duration lease,
                                               const std::vector<std::string>& job_ids) override {
    return inner_.Renew(worker, lease, job_ids);
  }
  absl::StatusOr<std::vector<v1::Job>> ExpireLeases(bool all_running) override {
    return inner_.ExpireLeases(all_running);
  }
  absl::StatusOr<std::vector<StoredEvent>> EventsAfter(const std::string& id, int64_t after,
                                                       int limit) override {
    return inner_.EventsAfter(id, after, limit);
  }
  absl::StatusOr<int64_t> PublishModelChange(const std::string& name, bool loaded) override {
    return inner_.PublishModelChange(name, loaded);
  }
  absl::StatusOr<std::vector<ModelRecord>> ModelRecords() override { return inner_.ModelRecords(); }
  void SetChangeListener(ChangeListener listener) override {
    inner_.SetChangeListener(std::move(listener));
  }

 private:
  JobStore& inner_;
};

TEST_F(JobManagerTest, CancellingARunThatEndsFirstIsStillOk) {
  CancelArrivesLateStore store(*store_);
  JobManager::Options options;
  options.store = &store;
  options.runner = &runner_;
  options.metrics = &metrics_;
  absl::StatusOr<std::unique_ptr<JobManager>> manager = JobManager::Create(options);
  ASSERT_OK(manager);
  absl::StatusOr<v1::Job> job = (*manager)->Submit(BlockingSpec(/*steps=*/5, /*block_at=*/2));
  ASSERT_OK(job);
  ASSERT_TRUE(runner_.WaitForBlocked(1));

  // The run stops at once and writes CANCELLED before the request arrives.
  absl::StatusOr<v1::Job> cancelled = (*manager)->Cancel(job->id());
  ASSERT_OK(cancelled);
  EXPECT_EQ(cancelled->state(), v1::CANCELLED);
  // Counted once, by the run's end.
  EXPECT_THAT(MetricsText(), HasSubstr("mantissa_jobs_finished_total{precision=\"32-true\","
                                       "state=\"CANCELLED\"} 1"));
}

TEST_F(JobManagerTest, CancelEndedJobIsFailedPrecondition) {
  StartManager();
  const v1::Job job = Submit(Spec());
  ASSERT_EQ(WaitForState(job.id(), v1::SUCCEEDED).state(), v1::SUCCEEDED);
  EXPECT_THAT(manager_->Cancel(job.id()),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr(job.id()), HasSubstr("SUCCEEDED"))));
  absl::StatusOr<v1::Job> got = manager_->Get(job.id());
  ASSERT_OK(got);
  EXPECT_EQ(got->state(), v1::SUCCEEDED);
  EXPECT_FALSE(got->cancel_requested());
}

TEST_F(JobManagerTest, UnknownIdIsNotFound) {
  StartManager();
  EXPECT_THAT(manager_->Get("0123456789ab"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("0123456789ab")));
  EXPECT_THAT(manager_->Cancel("0123456789ab"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("0123456789ab")));
  EventRecorder* recorder = NewRecorder();
  EXPECT_THAT(manager_->Watch("0123456789ab", recorder),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("0123456789ab")));
  EXPECT_THAT(recorder->events(), IsEmpty());
}

TEST_F(JobManagerTest, RunnerErrorFailsJobWithItsMessage) {
  StartManager();
  const v1::Job job = Submit(Spec(2, {{"fail", "loss is NaN at step 2"}}));
  const v1::Job done = WaitForState(job.id(), v1::FAILED);
  ASSERT_EQ(done.state(), v1::FAILED);
  EXPECT_EQ(done.error(), "loss is NaN at step 2");
  EXPECT_TRUE(done.has_end_time());
  absl::StatusOr<v1::Job> stored = store_->Get(job.id());
  ASSERT_OK(stored);
  EXPECT_EQ(stored->state(), v1::FAILED);
  EXPECT_EQ(stored->error(), "loss is NaN at step 2");
}

TEST_F(JobManagerTest, RunnerExceptionFailsJobAndManagerKeepsWorking) {
  StartManager();
  const v1::Job bad = Submit(Spec(2, {{"throw", "tensor shape mismatch"}}));
  const v1::Job failed = WaitForState(bad.id(), v1::FAILED);
  ASSERT_EQ(failed.state(), v1::FAILED);
  EXPECT_THAT(failed.error(), HasSubstr("tensor shape mismatch"));

  const v1::Job good = Submit(Spec());
  EXPECT_EQ(WaitForState(good.id(), v1::SUCCEEDED).state(), v1::SUCCEEDED);
  EXPECT_THAT(runner_.started(), ElementsAre(bad.id(), good.id()));
}

TEST_F(JobManagerTest, WatchDeliversSnapshotProgressAndFinishedInOrder) {
  StartManager(/*max_concurrent_jobs=*/1);
  const v1::Job blocker = Submit(BlockingSpec());
  ASSERT_TRUE(runner_.WaitForBlocked(1));
  // Still queued behind the blocker when the watch starts.
  const v1::Job job = Submit(Spec(/*steps=*/3));
  EventRecorder* recorder = NewRecorder();
  ASSERT_OK(manager_->Watch(job.id(), recorder));
  runner_.Release();
  ASSERT_TRUE(recorder->WaitForFinished());
  ASSERT_EQ(WaitForState(job.id(), v1::SUCCEEDED).state(), v1::SUCCEEDED);

  EXPECT_THAT(recorder->types(), ElementsAre(v1::JobEvent::SNAPSHOT, v1::JobEvent::STATE_CHANGED,
                                             v1::JobEvent::PROGRESS, v1::JobEvent::PROGRESS,
                                             v1::JobEvent::PROGRESS, v1::JobEvent::FINISHED));
  const std::vector<v1::JobEvent> events = recorder->events();
  ASSERT_THAT(events, SizeIs(6));
  EXPECT_EQ(events[0].job().id(), job.id());
  EXPECT_EQ(events[0].job().state(), v1::QUEUED);
  EXPECT_EQ(events[1].job().state(), v1::RUNNING);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(events[2 + i].job().state(), v1::RUNNING);
    EXPECT_EQ(events[2 + i].job().progress().step(), i + 1);
  }
  EXPECT_EQ(events[5].job().state(), v1::SUCCEEDED);
  EXPECT_EQ(events[5].job().result().steps_completed(), 3);
  EXPECT_THAT(events[5].message(), HasSubstr("SUCCEEDED"));
  for (const v1::JobEvent& e : events) {
    EXPECT_EQ(e.job().id(), job.id());
    EXPECT_TRUE(e.has_time());
  }
}

TEST_F(JobManagerTest, WatchRunningJobStartsWithSnapshotAndEndsWithFinished) {
  StartManager();
  const v1::Job job = Submit(BlockingSpec(/*steps=*/4, /*block_at=*/1));
  ASSERT_TRUE(runner_.WaitForBlocked(1));
  EventRecorder* recorder = NewRecorder();
  ASSERT_OK(manager_->Watch(job.id(), recorder));
  runner_.Release();
  ASSERT_TRUE(recorder->WaitForFinished());

  const std::vector<v1::JobEvent> events = recorder->events();
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events.front().type(), v1::JobEvent::SNAPSHOT);
  EXPECT_EQ(events.front().job().state(), v1::RUNNING);
  EXPECT_EQ(events.front().job().progress().step(), 1);
  EXPECT_EQ(events.back().type(), v1::JobEvent::FINISHED);
  EXPECT_EQ(events.back().job().state(), v1::SUCCEEDED);
  int64_t last_step = 1;
  for (size_t i = 1; i + 1 < events.size(); ++i) {
    ASSERT_EQ(events[i].type(), v1::JobEvent::PROGRESS) << i;
    EXPECT_EQ(events[i].job().progress().step(), last_step + 1);
    last_step = events[i].job().progress().step();
  }
  EXPECT_EQ(last_step, 4);
}

TEST_F(JobManagerTest, WatchEndedJobGivesSnapshotThenFinished) {
  StartManager();
  const v1::Job job = Submit(Spec(2, {{"fail", "out of memory"}}));
  ASSERT_EQ(WaitForState(job.id(), v1::FAILED).state(), v1::FAILED);

  EventRecorder* recorder = NewRecorder();
  ASSERT_OK(manager_->Watch(job.id(), recorder));
  const std::vector<v1::JobEvent> events = recorder->events();
  ASSERT_THAT(events, SizeIs(2));
  EXPECT_EQ(events[0].type(), v1::JobEvent::SNAPSHOT);
  EXPECT_EQ(events[1].type(), v1::JobEvent::FINISHED);
  for (const v1::JobEvent& e : events) {
    EXPECT_EQ(e.job().id(), job.id());
    EXPECT_EQ(e.job().state(), v1::FAILED);
    EXPECT_EQ(e.job().error(), "out of memory");
  }
}

TEST_F(JobManagerTest, WatchQueuedJobThatIsCancelled) {
  StartManager();
  const v1::Job blocker = Submit(BlockingSpec());
  ASSERT_TRUE(runner_.WaitForBlocked(1));
  const v1::Job job = Submit(Spec());
  EventRecorder* recorder = NewRecorder();
  ASSERT_OK(manager_->Watch(job.id(), recorder));
  ASSERT_OK(manager_->Cancel(job.id()));

  // A queued job's events come from the store's log, soon after.
  EXPECT_TRUE(WaitFor([&] { return recorder->types().size() >= 2; }));
  EXPECT_THAT(recorder->types(), ElementsAre(v1::JobEvent::SNAPSHOT, v1::JobEvent::FINISHED));
  EXPECT_EQ(recorder->events().back().job().state(), v1::CANCELLED);
  runner_.Release();
}

TEST_F(JobManagerTest, UnwatchStopsEvents) {
  StartManager();
  const v1::Job job = Submit(BlockingSpec());
  ASSERT_TRUE(runner_.WaitForBlocked(1));
  EventRecorder* recorder = NewRecorder();
  ASSERT_OK(manager_->Watch(job.id(), recorder));
  manager_->Unwatch(job.id(), recorder);
  runner_.Release();
  ASSERT_EQ(WaitForState(job.id(), v1::SUCCEEDED).state(), v1::SUCCEEDED);
  EXPECT_THAT(recorder->types(), ElementsAre(v1::JobEvent::SNAPSHOT));
}

TEST_F(JobManagerTest, RecoveryRequeuesRunningJobsAsTheirNextAttempt) {
  ASSERT_OK(Seed(*store_, StoredJob("bbbbbbbbbbb2", v1::RUNNING)));
  ASSERT_OK(Seed(*store_, StoredJob("ddddddddddd4", v1::SUCCEEDED)));
  ASSERT_OK(Seed(*store_, StoredJob("aaaaaaaaaaa1", v1::QUEUED)));
  ASSERT_OK(Seed(*store_, StoredJob("ccccccccccc3", v1::QUEUED)));
  StartManager();

  // The daemon that ran it died: its attempt ended, the next one runs it.
  const v1::Job crashed = WaitForState("bbbbbbbbbbb2", v1::SUCCEEDED);
  EXPECT_EQ(crashed.state(), v1::SUCCEEDED);
  EXPECT_EQ(crashed.attempt(), 2);
  ASSERT_EQ(crashed.attempts_size(), 2);
  EXPECT_EQ(crashed.attempts(0).end(), v1::Attempt::LEASE_EXPIRED);
  EXPECT_EQ(crashed.attempts(0).worker(), "gone-worker");
  EXPECT_EQ(crashed.attempts(1).end(), v1::Attempt::FINISHED);

  const v1::Job second = WaitForState("ccccccccccc3", v1::SUCCEEDED);
  EXPECT_EQ(second.state(), v1::SUCCEEDED);
  EXPECT_EQ(second.result().steps_completed(), 2);
  // Oldest first; the finished job is not run again.
  EXPECT_THAT(runner_.started(), ElementsAre("bbbbbbbbbbb2", "aaaaaaaaaaa1", "ccccccccccc3"));
  absl::StatusOr<v1::Job> finished = manager_->Get("ddddddddddd4");
  ASSERT_OK(finished);
  EXPECT_EQ(finished->state(), v1::SUCCEEDED);
}

TEST_F(JobManagerTest, RecoveryFailsAJobWhoseAttemptsAreUsedUp) {
  v1::Job job = StoredJob("eeeeeeeeeee5", v1::RUNNING);
  job.mutable_spec()->set_max_attempts(1);
  ASSERT_OK(Seed(*store_, job));
  StartManager();
  absl::StatusOr<v1::Job> failed = manager_->Get(job.id());
  ASSERT_OK(failed);
  EXPECT_EQ(failed->state(), v1::FAILED);
  EXPECT_THAT(failed->error(), AllOf(HasSubstr("max_attempts"), HasSubstr("gone-worker")));
  EXPECT_TRUE(failed->has_end_time());
  EXPECT_THAT(runner_.started(), IsEmpty());
}

TEST_F(JobManagerTest, ShutdownReleasesRunningJobAndKeepsQueuedOnes) {
  StartManager(/*max_concurrent_jobs=*/1);
  const v1::Job running = Submit(BlockingSpec());
  ASSERT_TRUE(runner_.WaitForBlocked(1));
  const v1::Job queued1 = Submit(Spec());
  const v1::Job queued2 = Submit(Spec());

  manager_->Shutdown();
  manager_->Shutdown();  // idempotent

  absl::StatusOr<v1::Job> stopped = store_->Get(running.id());
  ASSERT_OK(stopped);
  EXPECT_EQ(stopped->state(), v1::QUEUED);
  EXPECT_EQ(stopped->attempt(), 2);
  ASSERT_EQ(stopped->attempts_size(), 1);
  EXPECT_EQ(stopped->attempts(0).end(), v1::Attempt::RELEASED);
  EXPECT_THAT(stopped->attempts(0).reason(), HasSubstr("shut down"));
  for (const v1::Job& q : {queued1, queued2}) {
    absl::StatusOr<v1::Job> stored = store_->Get(q.id());
    ASSERT_OK(stored);
    EXPECT_EQ(stored->state(), v1::QUEUED) << q.id();
  }
  EXPECT_THAT(runner_.started(), ElementsAre(running.id()));
  EXPECT_THAT(manager_->Submit(Spec()),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("shut")));

  // The next start picks the jobs up again, oldest first: the released one
  // as its second attempt.
  manager_.reset();
  runner_.Release();
  StartManager();
  EXPECT_EQ(WaitForState(queued1.id(), v1::SUCCEEDED).state(), v1::SUCCEEDED);
  EXPECT_EQ(WaitForState(queued2.id(), v1::SUCCEEDED).state(), v1::SUCCEEDED);
  EXPECT_THAT(runner_.started(),
              ElementsAre(running.id(), running.id(), queued1.id(), queued2.id()));
  const v1::Job resumed = WaitForState(running.id(), v1::SUCCEEDED);
  EXPECT_EQ(resumed.state(), v1::SUCCEEDED);
  EXPECT_EQ(resumed.attempt(), 2);
}

TEST_F(JobManagerTest, DestructorShutsDownWithoutWaitingForBlockedJob) {
  StartManager();
  const v1::Job running = Submit(BlockingSpec());
  ASSERT_TRUE(runner_.WaitForBlocked(1));
  manager_.reset();
  absl::StatusOr<v1::Job> stored = store_->Get(running.id());
  ASSERT_OK(stored);
  EXPECT_EQ(stored->state(), v1::QUEUED);
}

TEST_F(JobManagerTest, RunsUpToMaxConcurrentJobsAtOnce) {
  StartManager(/*max_concurrent_jobs=*/2);
  const v1::Job a = Submit(BlockingSpec());
  const v1::Job b = Submit(BlockingSpec());
  ASSERT_TRUE(runner_.WaitForBlocked(2));
  EXPECT_EQ(runner_.in_run(), 2);
  absl::StatusOr<v1::Job> got_a = manager_->Get(a.id());
  absl::StatusOr<v1::Job> got_b = manager_->Get(b.id());
  ASSERT_OK(got_a);
  ASSERT_OK(got_b);
  EXPECT_EQ(got_a->state(), v1::RUNNING);
  EXPECT_EQ(got_b->state(), v1::RUNNING);

  // A third job waits for a free worker.
  const v1::Job c = Submit(Spec());
  absl::StatusOr<v1::Job> got_c = manager_->Get(c.id());
  ASSERT_OK(got_c);
  EXPECT_EQ(got_c->state(), v1::QUEUED);
  EXPECT_THAT(MetricsText(),
              AllOf(HasSubstr("mantissa_jobs_running 2"), HasSubstr("mantissa_jobs_queued 1")));

  runner_.Release();
  for (const v1::Job& job : {a, b, c}) {
    EXPECT_EQ(WaitForState(job.id(), v1::SUCCEEDED).state(), v1::SUCCEEDED) << job.id();
  }
  EXPECT_EQ(runner_.max_in_run(), 2);
}

TEST_F(JobManagerTest, SingleWorkerRunsJobsOneAtATimeInSubmissionOrder) {
  StartManager(/*max_concurrent_jobs=*/1);
  const v1::Job a = Submit(BlockingSpec());
  ASSERT_TRUE(runner_.WaitForBlocked(1));
  const v1::Job b = Submit(Spec());
  const v1::Job c = Submit(Spec());
  runner_.Release();
  EXPECT_EQ(WaitForState(c.id(), v1::SUCCEEDED).state(), v1::SUCCEEDED);
  EXPECT_EQ(WaitForState(b.id(), v1::SUCCEEDED).state(), v1::SUCCEEDED);
  EXPECT_THAT(runner_.started(), ElementsAre(a.id(), b.id(), c.id()));
  EXPECT_EQ(runner_.max_in_run(), 1);
}

TEST_F(JobManagerTest, ListIsNewestFirstAndShowsLiveProgress) {
  // Progress reaches the store at most once an hour here, so the live step
  // can only come from memory.
  StartManager(/*max_concurrent_jobs=*/1, /*persist_interval=*/absl::Hours(1));
  const v1::Job done = Submit(Spec());
  ASSERT_EQ(WaitForState(done.id(), v1::SUCCEEDED).state(), v1::SUCCEEDED);
  const v1::Job running = Submit(BlockingSpec(/*steps=*/5, /*block_at=*/2));
  ASSERT_TRUE(runner_.WaitForBlocked(1));
  const v1::Job queued = Submit(Spec());

  absl::StatusOr<JobPage> all = manager_->List({});
  ASSERT_OK(all);
  ASSERT_THAT(all->jobs, SizeIs(3));
  EXPECT_EQ(all->jobs[0].id(), queued.id());
  EXPECT_EQ(all->jobs[1].id(), running.id());
  EXPECT_EQ(all->jobs[2].id(), done.id());
  EXPECT_EQ(all->jobs[1].state(), v1::RUNNING);
  EXPECT_EQ(all->jobs[1].progress().step(), 2);

  absl::StatusOr<v1::Job> stored = store_->Get(running.id());
  ASSERT_OK(stored);
  EXPECT_EQ(stored->state(), v1::RUNNING);
  EXPECT_EQ(stored->progress().step(), 0);

  absl::StatusOr<JobPage> live = manager_->List({.states = {v1::QUEUED, v1::RUNNING}});
  ASSERT_OK(live);
  ASSERT_THAT(live->jobs, SizeIs(2));
  EXPECT_EQ(live->jobs[0].id(), queued.id());
  EXPECT_EQ(live->jobs[1].id(), running.id());

  absl::StatusOr<JobPage> newest = manager_->List({.limit = 1});
  ASSERT_OK(newest);
  ASSERT_THAT(newest->jobs, SizeIs(1));
  EXPECT_EQ(newest->jobs[0].id(), queued.id());

  runner_.Release();
  EXPECT_EQ(WaitForState(queued.id(), v1::SUCCEEDED).state(), v1::SUCCEEDED);
  // The end state is always persisted, with the final progress.
  stored = store_->Get(running.id());
  ASSERT_OK(stored);
  EXPECT_EQ(stored->state(), v1::SUCCEEDED);
  EXPECT_EQ(stored->progress().step(), 5);
}

TEST_F(JobManagerTest, RecordsMetrics) {
  StartManager();
  const v1::Job job = Submit(Spec(/*steps=*/3));
  ASSERT_EQ(WaitForState(job.id(), v1::SUCCEEDED).state(), v1::SUCCEEDED);
  const v1::Job failed = Submit(Spec(1, {{"fail", "boom"}}));
  ASSERT_EQ(WaitForState(failed.id(), v1::FAILED).state(), v1::FAILED);

  // The gauges follow the store's counts a moment after the job's end.
  EXPECT_TRUE(
      WaitFor([&] { return MetricsText().find("mantissa_jobs_running 0") != std::string::npos; }));
  const std::string text = MetricsText();
  EXPECT_THAT(text, HasSubstr("mantissa_jobs_submitted_total{precision=\"32-true\"} 2"));
  EXPECT_THAT(text, HasSubstr("mantissa_jobs_finished_total{precision=\"32-true\",state="
                              "\"SUCCEEDED\"} 1"));
  EXPECT_THAT(text, HasSubstr("mantissa_jobs_finished_total{precision=\"32-true\",state="
                              "\"FAILED\"} 1"));
  EXPECT_THAT(text, HasSubstr(absl::StrCat("mantissa_train_steps_total{job=\"", job.id(),
                                           "\",model=\"mlp\",precision=\"32-true\"} 3")));
  EXPECT_THAT(text, HasSubstr("mantissa_train_step_duration_seconds_count{precision="
                              "\"32-true\"} 4"));
  EXPECT_THAT(text, HasSubstr("mantissa_jobs_running 0"));
  EXPECT_THAT(text, HasSubstr("mantissa_jobs_queued 0"));
}

TEST_F(JobManagerTest, CapabilitiesReportConfiguredConcurrency) {
  StartManager(/*max_concurrent_jobs=*/3);
  const v1::GetCapabilitiesResponse caps = manager_->Capabilities();
  EXPECT_EQ(caps.device(), "fake");
  EXPECT_THAT(caps.models(), ElementsAre("mlp"));
  EXPECT_EQ(caps.max_concurrent_jobs(), 3);
}

TEST_F(JobManagerTest, ASingleWorkerStoreRefusesJobsOverSeveralNodes) {
  StartManager();
  v1::JobSpec spec = Spec();
  spec.set_num_nodes(2);
  EXPECT_THAT(manager_->Submit(spec),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("num_nodes: 2"), HasSubstr("PostgreSQL"),
                             HasSubstr("job store is sqlite"))));
  absl::StatusOr<JobPage> page = manager_->List({});
  ASSERT_OK(page);
  EXPECT_THAT(page->jobs, IsEmpty());
  EXPECT_FALSE(manager_->Capabilities().data_parallel().multi_node());
}

TEST_F(JobManagerTest, ARankFailureFailsTheJobOfASingleWorkerStore) {
  StartManager();
  v1::JobSpec spec = Spec(3, {{"unavailable", "rank 1 of 2 (host h, pid 7) was killed"}});
  spec.set_devices(2);
  const v1::Job job = Submit(spec);
  const v1::Job failed = WaitForState(job.id(), v1::FAILED);
  EXPECT_EQ(failed.state(), v1::FAILED);
  EXPECT_EQ(failed.error(), "rank 1 of 2 (host h, pid 7) was killed");
  EXPECT_EQ(failed.attempt(), 1);
}

TEST_F(JobManagerTest, CreateRejectsZeroConcurrentJobs) {
  JobManager::Options options;
  options.store = store_.get();
  options.runner = &runner_;
  options.metrics = &metrics_;
  options.max_concurrent_jobs = 0;
  EXPECT_THAT(JobManager::Create(options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_concurrent_jobs")));
}

TEST_F(JobManagerTest, CreateRejectsMissingDependencies) {
  JobManager::Options full;
  full.store = store_.get();
  full.runner = &runner_;
  full.metrics = &metrics_;

  JobManager::Options no_store = full;
  no_store.store = nullptr;
  EXPECT_THAT(JobManager::Create(no_store),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("store")));
  JobManager::Options no_runner = full;
  no_runner.runner = nullptr;
  EXPECT_THAT(JobManager::Create(no_runner),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("runner")));
  JobManager::Options no_metrics = full;
  no_metrics.metrics = nullptr;
  EXPECT_THAT(JobManager::Create(no_metrics),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("metrics")));
  EXPECT_THAT(JobManager::Create(full), IsOk());
}

// Two workers sharing one store, as a fleet does (in one process here; the
// fleet of processes over PostgreSQL is tests/integration/fleet_test.cc).
class TwoWorkersTest : public JobManagerTest {
 protected:
  std::unique_ptr<JobManager> StartWorker(const std::string& id) {
    JobManager::Options options;
    options.store = store_.get();
    options.runner = &runner_;
    options.metrics = &metrics_;
    options.worker_id = id;
    options.sole_worker = false;
    options.lease = absl::Milliseconds(600);
    options.claim_poll_interval = absl::Milliseconds(50);
    options.watch_poll_interval = absl::Milliseconds(50);
    absl::StatusOr<std::unique_ptr<JobManager>> manager = JobManager::Create(options);
    EXPECT_OK(manager);
    return manager.ok() ? std::move(*manager) : nullptr;
  }

  // Worker a runs a blocked job, then worker b starts; false on a failure.
  bool BlockAJobOnAThenStartB() {
    a_ = StartWorker("worker-a");
    if (a_ == nullptr) return false;
    absl::StatusOr<v1::Job> job = a_->Submit(BlockingSpec());
    EXPECT_OK(job);
    if (!job.ok() || !runner_.WaitForBlocked(1)) return false;
    job_ = *job;
    b_ = StartWorker("worker-b");
    return b_ != nullptr;
  }

  v1::Job job_;
  std::unique_ptr<JobManager> a_;
  std::unique_ptr<JobManager> b_;
};

TEST_F(TwoWorkersTest, AJobRunningOnOneWorkerIsWatchedAndCancelledThroughTheOther) {
  ASSERT_TRUE(BlockAJobOnAThenStartB());
  JobManager* const b = b_.get();
  const v1::Job* const job = &job_;

  absl::StatusOr<v1::Job> through_b = b->Get(job->id());
  ASSERT_OK(through_b);
  EXPECT_EQ(through_b->state(), v1::RUNNING);
  EXPECT_EQ(through_b->worker(), "worker-a");
  EventRecorder* recorder = NewRecorder();
  ASSERT_OK(b->Watch(job->id(), recorder));
  ASSERT_OK(b->Cancel(job->id()));

  // Worker a learns of it at its next renewal, a third of the lease.
  EXPECT_TRUE(WaitFor([&] {
    absl::StatusOr<v1::Job> j = b->Get(job->id());
    return j.ok() && j->state() == v1::CANCELLED;
  }));
  EXPECT_TRUE(WaitFor([&] {
    const auto types = recorder->types();
    return !types.empty() && types.back() == v1::JobEvent::FINISHED;
  }));
  EXPECT_EQ(recorder->types().front(), v1::JobEvent::SNAPSHOT);
  EXPECT_EQ(recorder->events().back().job().state(), v1::CANCELLED);
  b->Unwatch(job->id(), recorder);
}

TEST_F(TwoWorkersTest, AReleasedJobIsTakenByTheOtherWorkerAsItsNextAttempt) {
  ASSERT_TRUE(BlockAJobOnAThenStartB());
  JobManager* const b = b_.get();
  const v1::Job* const job = &job_;
  a_->Shutdown();
  runner_.Release();
  EXPECT_TRUE(WaitFor([&] {
    absl::StatusOr<v1::Job> j = b->Get(job->id());
    return j.ok() && j->state() == v1::SUCCEEDED;
  }));
  absl::StatusOr<v1::Job> done = b->Get(job->id());
  ASSERT_OK(done);
  EXPECT_EQ(done->attempt(), 2);
  ASSERT_EQ(done->attempts_size(), 2);
  EXPECT_EQ(done->attempts(0).worker(), "worker-a");
  EXPECT_EQ(done->attempts(0).end(), v1::Attempt::RELEASED);
  EXPECT_EQ(done->attempts(1).worker(), "worker-b");
  EXPECT_EQ(done->attempts(1).end(), v1::Attempt::FINISHED) << done->DebugString();
}

// Workers sharing a PostgreSQL store (one real server per suite), where a
// job may run over several nodes: node 0 on the worker that claims it, the
// others on free workers, as followers.
class MultiNodeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<PostgresServer>> server = PostgresServer::Start();
    if (server.ok()) {
      server_ = std::move(*server);
    } else {
      start_error_ = server.status();
    }
  }
  static void TearDownTestSuite() { server_.reset(); }

  void SetUp() override {
    if (absl::IsNotFound(start_error_)) GTEST_SKIP() << start_error_;
    ASSERT_NE(server_, nullptr) << start_error_;
    database_ = absl::StrCat("multi_node_", ++databases_);
    ASSERT_OK(server_->CreateDatabase(database_));
  }

  void TearDown() override {
    // Managers before the stores they use.
    workers_.clear();
    stores_.clear();
  }

  JobManager* StartWorker(const std::string& id) {
    absl::StatusOr<std::unique_ptr<PostgresJobStore>> store =
        PostgresJobStore::Create({.uri = server_->uri(database_)});
    EXPECT_OK(store);
    if (!store.ok()) return nullptr;
    stores_.push_back(std::move(*store));
    JobManager::Options options;
    options.store = stores_.back().get();
    options.runner = &runner_;
    options.metrics = &metrics_;
    options.worker_id = id;
    options.sole_worker = false;
    options.lease = absl::Milliseconds(600);
    options.claim_poll_interval = absl::Milliseconds(50);
    options.watch_poll_interval = absl::Milliseconds(50);
    absl::StatusOr<std::unique_ptr<JobManager>> manager = JobManager::Create(options);
    EXPECT_OK(manager);
    if (!manager.ok()) return nullptr;
    workers_.push_back(std::move(*manager));
    return workers_.back().get();
  }

  v1::Job WaitForState(JobManager& manager, const std::string& id, v1::JobState state) {
    v1::Job last;
    WaitFor([&] {
      absl::StatusOr<v1::Job> job = manager.Get(id);
      if (!job.ok()) return false;
      last = *job;
      return last.state() == state;
    });
    return last;
  }

  static std::unique_ptr<PostgresServer> server_;
  static absl::Status start_error_;
  static int databases_;

  std::string database_;
  FakeRunner runner_;
  Metrics metrics_;
  std::vector<std::unique_ptr<PostgresJobStore>> stores_;
  std::vector<std::unique_ptr<JobManager>> workers_;
};

std::unique_ptr<PostgresServer> MultiNodeTest::server_;
absl::Status MultiNodeTest::start_error_;
int MultiNodeTest::databases_ = 0;

v1::JobSpec TwoNodeSpec(int64_t steps = 3, std::map<std::string, std::string> options = {}) {
  v1::JobSpec spec = Spec(steps, std::move(options));
  spec.set_num_nodes(2);
  return spec;
}

TEST_F(MultiNodeTest, AJobOverTwoNodesRunsANodeOnEachWorker) {
  JobManager* a = StartWorker("worker-a");
  JobManager* b = StartWorker("worker-b");
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_TRUE(a->Capabilities().data_parallel().multi_node());
  absl::StatusOr<v1::Job> job = a->Submit(TwoNodeSpec());
  ASSERT_OK(job);
  const v1::Job done = WaitForState(*a, job->id(), v1::SUCCEEDED);
  ASSERT_EQ(done.state(), v1::SUCCEEDED) << done.ShortDebugString();
  ASSERT_EQ(done.nodes_size(), 2);
  EXPECT_EQ(done.nodes(0), done.worker());
  EXPECT_THAT(done.nodes(), ::testing::UnorderedElementsAre("worker-a", "worker-b"));
  EXPECT_EQ(done.attempt(), 1);

  ASSERT_TRUE(WaitFor([&] { return runner_.nodes().size() == 2; }));
  std::vector<FakeRunner::NodeRun> nodes = runner_.nodes();
  std::sort(nodes.begin(), nodes.end(),
            [](const auto& x, const auto& y) { return x.node_rank < y.node_rank; });
  EXPECT_EQ(nodes[0].node_rank, 0);
  EXPECT_OK(nodes[0].status);
  EXPECT_EQ(nodes[1].node_rank, 1);
  EXPECT_OK(nodes[1].status);
  EXPECT_EQ(nodes[1].rendezvous, FakeRunner::kRendezvous);
  // The follower's progress went nowhere: node 0 alone reports the job.
  EXPECT_EQ(done.progress().step(), 3);
}

TEST_F(MultiNodeTest, AFollowerStopsOnceItsJobIsCancelled) {
  JobManager* a = StartWorker("worker-a");
  JobManager* b = StartWorker("worker-b");
  ASSERT_NE(b, nullptr);
  absl::StatusOr<v1::Job> job = a->Submit(TwoNodeSpec(3, {{"block", "0"}}));
  ASSERT_OK(job);
  ASSERT_TRUE(runner_.WaitForBlocked(2));  // both nodes run
  ASSERT_OK(b->Cancel(job->id()));
  const v1::Job cancelled = WaitForState(*a, job->id(), v1::CANCELLED);
  EXPECT_EQ(cancelled.state(), v1::CANCELLED);
  ASSERT_TRUE(WaitFor([&] { return runner_.nodes().size() == 2; }));
  for (const FakeRunner::NodeRun& node : runner_.nodes()) {
    EXPECT_THAT(node.status, StatusIs(absl::StatusCode::kCancelled, ::testing::_))
        << "node " << node.node_rank;
    EXPECT_NE(node.stop, StopReason::kNone) << "node " << node.node_rank;
  }
  EXPECT_EQ(runner_.in_run(), 0);
}

TEST_F(MultiNodeTest, AFollowerStopsOnceItsAttemptIsOver) {
  JobManager* a = StartWorker("worker-a");
  JobManager* b = StartWorker("worker-b");
  ASSERT_NE(b, nullptr);
  absl::StatusOr<v1::Job> job = a->Submit(TwoNodeSpec(3, {{"block", "0"}}));
  ASSERT_OK(job);
  ASSERT_TRUE(runner_.WaitForBlocked(2));
  absl::StatusOr<v1::Job> running = a->Get(job->id());
  ASSERT_OK(running);
  JobManager* node0 = running->worker() == "worker-a" ? a : b;
  // Node 0's worker shuts down: the job is released to the queue, and the
  // follower, whose attempt is over, stops without a word to the job.
  node0->Shutdown();
  ASSERT_TRUE(WaitFor([&] { return runner_.nodes().size() == 2; }));
  for (const FakeRunner::NodeRun& node : runner_.nodes()) {
    if (node.node_rank == 0) {
      EXPECT_EQ(node.stop, StopReason::kPreempted);
    } else {
      EXPECT_EQ(node.stop, StopReason::kLeaseLost);
    }
  }
  absl::StatusOr<v1::Job> released = stores_[0]->Get(job->id());
  ASSERT_OK(released);
  EXPECT_EQ(released->attempts(0).end(), v1::Attempt::RELEASED);
  EXPECT_EQ(released->attempts_size(), 1) << "one worker cannot run two nodes";
  EXPECT_EQ(released->state(), v1::QUEUED);
  EXPECT_EQ(released->nodes_size(), 0);
}

TEST_F(MultiNodeTest, AFollowerStopsWhenItsWorkerShutsDown) {
  JobManager* a = StartWorker("worker-a");
  JobManager* b = StartWorker("worker-b");
  ASSERT_NE(b, nullptr);
  absl::StatusOr<v1::Job> job = a->Submit(TwoNodeSpec(3, {{"block", "0"}}));
  ASSERT_OK(job);
  ASSERT_TRUE(runner_.WaitForBlocked(2));
  absl::StatusOr<v1::Job> running = a->Get(job->id());
  ASSERT_OK(running);
  JobManager* follower = running->worker() == "worker-a" ? b : a;
  follower->Shutdown();
  std::vector<FakeRunner::NodeRun> nodes = runner_.nodes();
  ASSERT_THAT(nodes, SizeIs(1));
  EXPECT_EQ(nodes[0].node_rank, 1);
  EXPECT_EQ(nodes[0].stop, StopReason::kPreempted);
  // The follower wrote nothing: node 0 still runs the job.
  absl::StatusOr<v1::Job> still = stores_[0]->Get(job->id());
  ASSERT_OK(still);
  EXPECT_EQ(still->state(), v1::RUNNING);
  EXPECT_EQ(still->attempt(), 1);
}

TEST_F(MultiNodeTest, ARankFailureRequeuesTheWholeJobAsItsNextAttempt) {
  JobManager* a = StartWorker("worker-a");
  ASSERT_NE(a, nullptr);
  v1::JobSpec spec = Spec(3, {{"unavailable", "rank 1 of 2 (host h, pid 7) was killed"}});
  spec.set_devices(2);
  absl::StatusOr<v1::Job> job = a->Submit(spec);
  ASSERT_OK(job);
  const v1::Job done = WaitForState(*a, job->id(), v1::SUCCEEDED);
  ASSERT_EQ(done.state(), v1::SUCCEEDED) << done.ShortDebugString();
  EXPECT_EQ(done.attempt(), 2);
  ASSERT_EQ(done.attempts_size(), 2);
  EXPECT_EQ(done.attempts(0).end(), v1::Attempt::LEASE_EXPIRED);
  EXPECT_EQ(done.attempts(0).reason(), "rank 1 of 2 (host h, pid 7) was killed");

  // A node that never joined the rendezvous is retried alike.
  v1::JobSpec unjoined = Spec(3, {{"deadline", "the rendezvous timed out waiting for 2 ranks"}});
  unjoined.set_devices(2);
  job = a->Submit(unjoined);
  ASSERT_OK(job);
  const v1::Job retried = WaitForState(*a, job->id(), v1::SUCCEEDED);
  ASSERT_EQ(retried.state(), v1::SUCCEEDED) << retried.ShortDebugString();
  EXPECT_EQ(retried.attempt(), 2);

  // Counted against max_attempts: with 1, the failure ends the job.
  spec.set_max_attempts(1);
  job = a->Submit(spec);
  ASSERT_OK(job);
  const v1::Job failed = WaitForState(*a, job->id(), v1::FAILED);
  ASSERT_EQ(failed.state(), v1::FAILED);
  EXPECT_THAT(failed.error(), AllOf(HasSubstr("max_attempts"),
                                    HasSubstr("rank 1 of 2 (host h, pid 7) was killed")));
  EXPECT_EQ(failed.attempts_size(), 1);
}

// Limits and retention: max_duration, the watcher cap, deletion, the sweep.
class JobLimitsTest : public JobManagerTest {
 protected:
  void Start(const std::function<void(JobManager::Options&)>& adjust) {
    JobManager::Options options;
    options.store = store_.get();
    options.runner = &runner_;
    options.metrics = &metrics_;
    options.jobs_dir = dir_.File("jobs");
    adjust(options);
    absl::StatusOr<std::unique_ptr<JobManager>> manager = JobManager::Create(options);
    ASSERT_OK(manager);
    manager_ = std::move(*manager);
  }

  // A job directory with a checkpoint in it, as the trainer leaves one.
  std::filesystem::path MakeJobDir(const std::string& id) {
    const std::filesystem::path dir = std::filesystem::path(dir_.File("jobs")) / id;
    std::filesystem::create_directories(dir);
    std::ofstream(dir / "checkpoint.pt") << "weights";
    return dir;
  }
};

TEST_F(JobLimitsTest, MaxDurationStopsTheJobFailed) {
  Start([](JobManager::Options&) {});
  v1::JobSpec spec = BlockingSpec(/*steps=*/5, /*block_at=*/2);
  spec.mutable_max_duration()->set_nanos(50'000'000);  // 50 ms
  const v1::Job job = Submit(spec);
  const v1::Job done = WaitForState(job.id(), v1::FAILED);
  ASSERT_EQ(done.state(), v1::FAILED);
  EXPECT_THAT(done.error(),
              AllOf(HasSubstr("DEADLINE_EXCEEDED"), HasSubstr("max_duration"), HasSubstr("50ms")));
  EXPECT_EQ(done.progress().step(), 2);  // stopped at its next poll
  EXPECT_FALSE(done.cancel_requested());

  // A job within its limit is untouched.
  v1::JobSpec quick = Spec(3);
  quick.mutable_max_duration()->set_seconds(60);
  EXPECT_EQ(WaitForState(Submit(quick).id(), v1::SUCCEEDED).state(), v1::SUCCEEDED);
}

TEST_F(JobLimitsTest, WatchersPerJobAreCapped) {
  Start([](JobManager::Options& o) { o.max_watchers_per_job = 2; });
  const v1::Job job = Submit(BlockingSpec());
  ASSERT_TRUE(runner_.WaitForBlocked(1));
  EventRecorder* a = NewRecorder();
  EventRecorder* b = NewRecorder();
  EventRecorder* c = NewRecorder();
  ASSERT_OK(manager_->Watch(job.id(), a));
  ASSERT_OK(manager_->Watch(job.id(), b));
  EXPECT_THAT(manager_->Watch(job.id(), c),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       AllOf(HasSubstr(job.id()), HasSubstr("--max_watchers_per_job"))));
  EXPECT_THAT(c->events(), IsEmpty());
  // A watcher that leaves frees its place.
  manager_->Unwatch(job.id(), a);
  EXPECT_OK(manager_->Watch(job.id(), c));
  runner_.Release();
  EXPECT_TRUE(c->WaitForFinished());
}

TEST_F(JobLimitsTest, DeleteRemovesAnEndedJobAndItsCheckpoints) {
  Start([](JobManager::Options&) {});
  const v1::Job job = Submit(Spec());
  ASSERT_EQ(WaitForState(job.id(), v1::SUCCEEDED).state(), v1::SUCCEEDED);
  const std::filesystem::path job_dir = MakeJobDir(job.id());
  const std::filesystem::path other = MakeJobDir("aaaaaaaaaaaa");

  ASSERT_OK(manager_->Delete(job.id()));
  EXPECT_FALSE(std::filesystem::exists(job_dir));
  EXPECT_TRUE(std::filesystem::exists(other));
  EXPECT_THAT(manager_->Get(job.id()), StatusIs(absl::StatusCode::kNotFound, HasSubstr(job.id())));
  EXPECT_THAT(store_->Get(job.id()), StatusIs(absl::StatusCode::kNotFound, HasSubstr(job.id())));
  EXPECT_THAT(manager_->Delete(job.id()),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(job.id())));
}

TEST_F(JobLimitsTest, DeleteRefusesQueuedAndRunningJobs) {
  Start([](JobManager::Options&) {});
  const v1::Job running = Submit(BlockingSpec());
  ASSERT_TRUE(runner_.WaitForBlocked(1));
  const v1::Job queued = Submit(Spec());
  const std::filesystem::path dir = MakeJobDir(running.id());
  EXPECT_THAT(manager_->Delete(running.id()),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("RUNNING"), HasSubstr("cancel it first"))));
  EXPECT_THAT(manager_->Delete(queued.id()),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("QUEUED")));
  EXPECT_TRUE(std::filesystem::exists(dir / "checkpoint.pt"));
  EXPECT_OK(manager_->Get(running.id()));
  runner_.Release();
}

TEST_F(JobLimitsTest, RetentionSweepDeletesOnlyJobsEndedBeforeTheCutoff) {
  v1::Job old = StoredJob("0000000000a1", v1::SUCCEEDED);
  old.mutable_end_time()->set_seconds(absl::ToUnixSeconds(absl::Now() - absl::Hours(24 * 40)));
  v1::Job recent = StoredJob("0000000000b2", v1::FAILED);
  recent.mutable_end_time()->set_seconds(absl::ToUnixSeconds(absl::Now() - absl::Hours(24)));
  ASSERT_OK(Seed(*store_, old));
  ASSERT_OK(Seed(*store_, recent));
  const std::filesystem::path old_dir = MakeJobDir(old.id());
  const std::filesystem::path recent_dir = MakeJobDir(recent.id());

  // Swept at creation, before anything else runs.
  Start([](JobManager::Options& o) { o.keep_finished_jobs = absl::Hours(24 * 30); });
  EXPECT_THAT(store_->Get(old.id()), StatusIs(absl::StatusCode::kNotFound, HasSubstr(old.id())));
  EXPECT_FALSE(std::filesystem::exists(old_dir));
  EXPECT_OK(store_->Get(recent.id()));
  EXPECT_TRUE(std::filesystem::exists(recent_dir));
  auto swept = manager_->SweepFinishedJobs();
  ASSERT_OK(swept);
  EXPECT_EQ(*swept, 0);
}

TEST_F(JobLimitsTest, AJobThatCannotBeRemovedHoldsUpNeitherTheSweepNorStartUp) {
  // A job directory that will not go away, not even for root: reached
  // through a link to /proc. Stored last, so the sweep (newest first) meets
  // it first.
  if (!std::filesystem::is_directory("/proc/1")) GTEST_SKIP() << "no /proc";
  std::filesystem::create_directories(dir_.File("jobs"));
  std::filesystem::create_directory_symlink("/proc", dir_.File("jobs/proc"));
  v1::Job old = StoredJob("0000000000d4", v1::SUCCEEDED);
  old.mutable_end_time()->set_seconds(2);
  v1::Job stuck = StoredJob("proc/1", v1::FAILED);
  stuck.mutable_end_time()->set_seconds(1);
  ASSERT_OK(Seed(*store_, old));
  ASSERT_OK(Seed(*store_, stuck));
  const std::filesystem::path old_dir = MakeJobDir(old.id());

  Start([](JobManager::Options& o) { o.keep_finished_jobs = absl::Hours(1); });
  ASSERT_NE(manager_, nullptr);
  EXPECT_THAT(store_->Get(old.id()), StatusIs(absl::StatusCode::kNotFound, HasSubstr(old.id())));
  EXPECT_FALSE(std::filesystem::exists(old_dir));
  EXPECT_OK(store_->Get(stuck.id()));
  EXPECT_TRUE(std::filesystem::exists("/proc/1"));
}

TEST_F(JobLimitsTest, KeepForeverSweepsNothing) {
  v1::Job old = StoredJob("0000000000c3", v1::CANCELLED);
  old.mutable_end_time()->set_seconds(1);
  ASSERT_OK(Seed(*store_, old));
  Start([](JobManager::Options&) {});
  EXPECT_OK(store_->Get(old.id()));
  auto swept = manager_->SweepFinishedJobs();
  ASSERT_OK(swept);
  EXPECT_EQ(*swept, 0);
}

TEST_F(JobLimitsTest, LongIdsAreNotEchoedBack) {
  Start([](JobManager::Options&) {});
  const std::string long_id(1 << 20, 'a');
  auto got = manager_->Get(long_id);
  EXPECT_THAT(got, StatusIs(absl::StatusCode::kNotFound, HasSubstr("1048576-byte id")));
  EXPECT_LT(got.status().message().size(), 100u);
  v1::JobSpec resume;
  resume.set_resume_from(long_id);
  auto submitted = manager_->Submit(resume);
  EXPECT_THAT(submitted, StatusIs(absl::StatusCode::kInvalidArgument,
                                  HasSubstr("resume_from: must be at most")));
  EXPECT_LT(submitted.status().message().size(), 100u);
}

TEST(RemoveTempFilesTest, RemovesOnlyTmpFilesRecursively) {
  TempDir dir;
  std::filesystem::create_directories(dir.File("jobs/abc"));
  std::filesystem::create_directories(dir.File("models/.staging/x"));
  for (const char* name : {"jobs/abc/checkpoint.pt.tmp", "models/.staging/x/w.tmp", "port.tmp",
                           "jobs/abc/checkpoint.pt", "jobs.db"}) {
    std::ofstream(dir.File(name)) << "x";
  }
  auto removed = RemoveTempFiles(dir.path());
  ASSERT_OK(removed);
  EXPECT_EQ(*removed, 3);
  EXPECT_FALSE(std::filesystem::exists(dir.File("jobs/abc/checkpoint.pt.tmp")));
  EXPECT_FALSE(std::filesystem::exists(dir.File("port.tmp")));
  EXPECT_TRUE(std::filesystem::exists(dir.File("jobs/abc/checkpoint.pt")));
  EXPECT_TRUE(std::filesystem::exists(dir.File("jobs.db")));
  auto missing = RemoveTempFiles(dir.File("nope"));
  ASSERT_OK(missing);
  EXPECT_EQ(*missing, 0);
}

TEST(RemoveTempFilesTest, LeavesTheOperatorsFoldersAlone) {
  // The default --data_root, <state_dir>/data, lies inside the swept folder.
  TempDir dir;
  std::filesystem::create_directories(dir.File("data/corpus"));
  std::filesystem::create_directories(dir.File("jobs/abc"));
  for (const char* name : {"data/train.tmp", "data/corpus/val.tmp", "jobs/abc/checkpoint.pt.tmp"}) {
    std::ofstream(dir.File(name)) << "x";
  }
  auto removed = RemoveTempFiles(dir.path(), {"/nonexistent/root", dir.path() + "/./data/"});
  ASSERT_OK(removed);
  EXPECT_EQ(*removed, 1);
  EXPECT_TRUE(std::filesystem::exists(dir.File("data/train.tmp")));
  EXPECT_TRUE(std::filesystem::exists(dir.File("data/corpus/val.tmp")));
  EXPECT_FALSE(std::filesystem::exists(dir.File("jobs/abc/checkpoint.pt.tmp")));
  // A kept state folder (--data_root=<state_dir>) is not swept at all.
  std::ofstream(dir.File("jobs/abc/checkpoint.pt.tmp")) << "x";
  auto none = RemoveTempFiles(dir.path(), {dir.path()});
  ASSERT_OK(none);
  EXPECT_EQ(*none, 0);
  EXPECT_TRUE(std::filesystem::exists(dir.File("jobs/abc/checkpoint.pt.tmp")));
}

}  // namespace
}  // namespace mantissa
