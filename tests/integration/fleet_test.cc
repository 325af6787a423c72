// A fleet of real mantissad workers sharing one PostgreSQL database and one
// --state_dir: any worker answers for any job, each job runs once per
// attempt, a job whose worker dies, stalls or shuts down resumes on another
// from its checkpoint, a database restart loses no job, and a model exported
// through one worker is served by every worker. A job over two nodes trains
// on two workers at once.

#include <google/protobuf/util/time_util.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/inference_client.h"
#include "tests/testing/postgres_server.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace mantissa {
namespace {

using google::protobuf::util::TimeUtil;
using testing::DaemonProcess;
using ::testing::HasSubstr;
using testing::IsTerminal;
using testing::Submit;
using testing::SyntheticMlpSpec;
using testing::WaitForJob;

using Stub = v1::TrainingService::Stub;

// A job of a few seconds on one thread (hidden 64 trains thousands of steps
// a second), so a worker can be stopped mid-run; periodic checkpoints only
// when `checkpoint_every` > 0.
v1::JobSpec LongSpec(int64_t steps, int64_t checkpoint_every = 0) {
  v1::JobSpec spec = SyntheticMlpSpec(steps);
  spec.set_checkpoint_every_n_steps(checkpoint_every);
  spec.set_progress_every_n_steps(100);
  spec.set_memory_baseline_steps(0);
  return spec;
}

int64_t Nanos(const google::protobuf::Timestamp& t) { return TimeUtil::TimestampToNanoseconds(t); }

// The job's attempts are numbered 1..n, each ended before the next began,
// only the last one FINISHED the job, and Job.attempt/worker are the last's.
void ExpectAttemptsInSequence(const v1::Job& job) {
  SCOPED_TRACE(job.ShortDebugString());
  ASSERT_GT(job.attempts_size(), 0);
  EXPECT_EQ(job.attempt(), job.attempts_size());
  EXPECT_EQ(job.worker(), job.attempts(job.attempts_size() - 1).worker());
  for (int i = 0; i < job.attempts_size(); ++i) {
    const v1::Attempt& a = job.attempts(i);
    EXPECT_EQ(a.number(), i + 1);
    EXPECT_LE(Nanos(a.start_time()), Nanos(a.end_time()));
    const bool last = i + 1 == job.attempts_size();
    EXPECT_EQ(a.end() == v1::Attempt::FINISHED, last) << "attempt " << a.number();
    if (i > 0) EXPECT_LE(Nanos(job.attempts(i - 1).end_time()), Nanos(a.start_time()));
  }
}

// No worker ran two of `jobs`' attempts at once (each runs one job at a
// time, --max_concurrent_jobs=1), judged from the attempts' records.
void ExpectNoWorkerRanTwoAtOnce(const std::vector<v1::Job>& jobs) {
  std::map<std::string, std::vector<std::pair<int64_t, int64_t>>> by_worker;
  for (const v1::Job& job : jobs) {
    for (const v1::Attempt& a : job.attempts()) {
      by_worker[a.worker()].push_back({Nanos(a.start_time()), Nanos(a.end_time())});
    }
  }
  for (auto& [worker, spans] : by_worker) {
    std::sort(spans.begin(), spans.end());
    for (size_t i = 1; i < spans.size(); ++i) {
      EXPECT_LE(spans[i - 1].second, spans[i].first) << worker << " ran two jobs at once";
    }
  }
}

// Every event of a WatchJob stream until the server ends it.
std::vector<v1::JobEvent> WatchToEnd(Stub& stub, const std::string& id) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  v1::WatchJobRequest request;
  request.set_job_id(id);
  std::unique_ptr<grpc::ClientReader<v1::JobEvent>> reader = stub.WatchJob(&context, request);
  std::vector<v1::JobEvent> events;
  v1::JobEvent event;
  while (reader->Read(&event)) events.push_back(event);
  const grpc::Status status = reader->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  return events;
}

absl::StatusOr<v1::ListJobsResponse> List(Stub& stub, const v1::ListJobsRequest& request) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::ListJobsResponse response;
  const grpc::Status status = stub.ListJobs(&context, request, &response);
  if (!status.ok()) return absl::UnknownError(status.error_message());
  return response;
}

grpc::Status Cancel(Stub& stub, const std::string& id) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::CancelJobRequest request;
  request.set_job_id(id);
  v1::CancelJobResponse response;
  return stub.CancelJob(&context, request, &response);
}

// Polls GetJob like WaitForJob but rides out failed calls (the database may
// be down for a moment); the last job or the last error after `timeout`.
absl::StatusOr<v1::Job> WaitThroughOutages(Stub& stub, const std::string& id,
                                           const std::function<bool(const v1::Job&)>& predicate,
                                           absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::StatusOr<v1::Job> last = absl::DeadlineExceededError("no answer yet");
  while (absl::Now() < deadline) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::GetJobRequest request;
    request.set_job_id(id);
    v1::GetJobResponse response;
    const grpc::Status status = stub.GetJob(&context, request, &response);
    if (status.ok() && predicate(response.job())) return response.job();
    last = status.ok() ? absl::StatusOr<v1::Job>(response.job())
                       : absl::UnavailableError(status.error_message());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("job ", id, " never reached the condition; last: ",
                   last.ok() ? last->ShortDebugString() : std::string(last.status().message())));
}

// One PostgreSQL server for the suite; each test gets a database of its own
// and a fresh state folder that its workers share.
class FleetTest : public ::testing::Test {
 protected:
  struct Worker {
    std::unique_ptr<DaemonProcess> process;
    std::unique_ptr<Stub> stub;
  };

  static void SetUpTestSuite() {
    auto server = testing::PostgresServer::Start();
    if (server.ok()) {
      postgres_ = std::move(*server);
    } else {
      start_error_ = server.status();
    }
  }
  static void TearDownTestSuite() { postgres_.reset(); }

  void SetUp() override {
    if (absl::IsNotFound(start_error_)) GTEST_SKIP() << start_error_;
    ASSERT_NE(postgres_, nullptr) << start_error_;
    database_ =
        absl::AsciiStrToLower(::testing::UnitTest::GetInstance()->current_test_info()->name());
    database_.resize(std::min<size_t>(database_.size(), 63));
    ASSERT_OK(postgres_->CreateDatabase(database_));
    std::filesystem::create_directories(shared_state_dir());
  }

  void TearDown() override {
    // A healthy fleet logs no errors (the database restart's test aside).
    for (const auto& [id, worker] : workers_) {
      if (!expect_no_errors_) break;
      const std::string log = "\n" + worker.process->Log();
      EXPECT_EQ(log.find("\nE "), std::string::npos) << id << " logged an error";
    }
    // The workers' logs say what each did; they go with the temp dir.
    if (HasFailure()) std::printf("%s", Logs().c_str());
  }

  std::string shared_state_dir() const { return dir_.File("state"); }

  // Starts workers w0..w<n-1> together, as a fleet's pods start (their
  // schema migrations race on the fresh database). Each has its log and port
  // file in a folder of its own, and the job state in the shared folder (the
  // later --state_dir wins).
  void StartWorkers(int n, const std::vector<std::string>& flags = {}) {
    std::vector<absl::StatusOr<std::unique_ptr<DaemonProcess>>> started(n);
    std::vector<std::thread> threads;
    for (int i = 0; i < n; ++i) {
      threads.emplace_back(
          [this, i, &flags, &started] { started[i] = StartDaemon(absl::StrCat("w", i), flags); });
    }
    for (std::thread& t : threads) t.join();
    for (int i = 0; i < n; ++i) {
      ASSERT_NO_FATAL_FAILURE(Keep(absl::StrCat("w", i), std::move(started[i])));
    }
  }

  // Starts one more worker, `id`, into the fleet (after others stopped).
  void StartWorker(const std::string& id, const std::vector<std::string>& flags = {}) {
    ASSERT_NO_FATAL_FAILURE(Keep(id, StartDaemon(id, flags)));
  }

  absl::StatusOr<std::unique_ptr<DaemonProcess>> StartDaemon(
      const std::string& id, const std::vector<std::string>& flags) {
    std::filesystem::create_directories(dir_.File(id));
    std::vector<std::string> extra = {"--state_dir=" + shared_state_dir(),
                                      "--database=" + postgres_->uri(database_),
                                      "--worker_id=" + id};
    extra.insert(extra.end(), flags.begin(), flags.end());
    return DaemonProcess::Start({.state_dir = dir_.File(id), .extra_flags = extra});
  }

  void Keep(const std::string& id, absl::StatusOr<std::unique_ptr<DaemonProcess>> started) {
    ASSERT_OK(started);
    Worker& worker = workers_[id];
    worker.process = std::move(*started);
    worker.stub = worker.process->NewStub();
  }

  Stub& stub(const std::string& id) { return *workers_.at(id).stub; }
  DaemonProcess& process(const std::string& id) { return *workers_.at(id).process; }

  // A worker other than `id` (for calls that must cross workers).
  std::string OtherThan(const std::string& id) const {
    for (const auto& [name, worker] : workers_) {
      if (name != id && worker.process != nullptr) return name;
    }
    return "";
  }

  // Submits through worker `via` and waits until a worker has trained it
  // past `step`; the job then (running), or an empty job after a failure.
  v1::Job SubmitAndWaitForStep(const std::string& via, const v1::JobSpec& spec, int64_t step,
                               bool checkpointed = false) {
    auto submitted = Submit(stub(via), spec);
    EXPECT_TRUE(submitted.status.ok()) << submitted.status.error_message();
    if (!submitted.status.ok()) return {};
    auto running = WaitForJob(stub(via), submitted.job.id(), [&](const v1::Job& j) {
      const int64_t reached = checkpointed ? j.checkpoint().step() : j.progress().step();
      return (j.state() == v1::RUNNING && reached >= step) || IsTerminal(j);
    });
    EXPECT_OK(running);
    if (!running.ok()) return {};
    EXPECT_EQ(running->state(), v1::RUNNING) << "ended before the test could stop it";
    EXPECT_TRUE(workers_.count(running->worker())) << running->worker();
    return running->state() == v1::RUNNING ? *running : v1::Job();
  }

  std::string Logs() const {
    std::string logs;
    for (const auto& [id, worker] : workers_) {
      absl::StrAppend(&logs, "--- ", id, " ---\n", worker.process->Log());
    }
    return logs;
  }

  static inline std::unique_ptr<testing::PostgresServer> postgres_;
  static inline absl::Status start_error_;
  testing::TempDir dir_;
  std::string database_;
  std::map<std::string, Worker> workers_;
  bool expect_no_errors_ = true;
};

TEST_F(FleetTest, AnyWorkerAnswersForAnyJob) {
  // A short lease: a cancellation reaches the worker at its next renewal.
  ASSERT_NO_FATAL_FAILURE(StartWorkers(2, {"--lease_seconds=2"}));
  Stub& a = stub("w0");
  Stub& b = stub("w1");

  // Watched through both workers: one of them runs it, the other follows
  // the store's events.
  auto submitted = Submit(a, LongSpec(6000));
  ASSERT_TRUE(submitted.status.ok()) << submitted.status.error_message();
  const std::string id = submitted.job.id();
  std::vector<v1::JobEvent> through_a;
  std::thread watch_a([&] { through_a = WatchToEnd(a, id); });
  std::vector<v1::JobEvent> through_b = WatchToEnd(b, id);
  watch_a.join();
  for (const std::vector<v1::JobEvent>* events : {&through_a, &through_b}) {
    ASSERT_GE(events->size(), 2u);
    EXPECT_EQ(events->front().type(), v1::JobEvent::SNAPSHOT);
    EXPECT_EQ(events->back().type(), v1::JobEvent::FINISHED);
    EXPECT_EQ(events->back().job().state(), v1::SUCCEEDED) << events->back().message();
  }
  auto got = WaitForJob(b, id, IsTerminal);
  ASSERT_OK(got);
  EXPECT_EQ(got->state(), v1::SUCCEEDED) << got->error();
  EXPECT_EQ(got->result().steps_completed(), 6000);
  EXPECT_DOUBLE_EQ(through_b.back().job().result().final_loss(), got->result().final_loss());
  EXPECT_DOUBLE_EQ(through_a.back().job().result().final_loss(), got->result().final_loss());

  // List through B pages through jobs submitted through A.
  std::vector<std::string> paged_ids;
  for (int i = 0; i < 3; ++i) {
    v1::JobSpec spec = SyntheticMlpSpec(5);
    spec.set_name("paged");
    auto s = Submit(a, spec);
    ASSERT_TRUE(s.status.ok()) << s.status.error_message();
    paged_ids.insert(paged_ids.begin(), s.job.id());  // List is newest first
  }
  v1::ListJobsRequest request;
  request.set_name("paged");
  request.set_limit(2);
  auto first = List(b, request);
  ASSERT_OK(first);
  ASSERT_EQ(first->jobs_size(), 2);
  ASSERT_FALSE(first->next_page_token().empty());
  request.set_page_token(first->next_page_token());
  auto second = List(b, request);
  ASSERT_OK(second);
  ASSERT_EQ(second->jobs_size(), 1);
  EXPECT_TRUE(second->next_page_token().empty());
  EXPECT_EQ(
      std::vector<std::string>({first->jobs(0).id(), first->jobs(1).id(), second->jobs(0).id()}),
      paged_ids);

  // Cancelled through the worker that does not run it.
  const v1::Job endless = SubmitAndWaitForStep("w0", LongSpec(100'000'000), 100);
  ASSERT_FALSE(endless.id().empty());
  const std::string runner = endless.worker();
  ASSERT_TRUE(Cancel(stub(OtherThan(runner)), endless.id()).ok());
  auto cancelled = WaitForJob(stub(OtherThan(runner)), endless.id(), IsTerminal, absl::Seconds(15));
  ASSERT_OK(cancelled);
  EXPECT_EQ(cancelled->state(), v1::CANCELLED) << cancelled->error();
  EXPECT_EQ(cancelled->worker(), runner);
  EXPECT_EQ(cancelled->attempts_size(), 1);
  ExpectAttemptsInSequence(*cancelled);
}

TEST_F(FleetTest, AJobOverTwoNodesTrainsOnTwoWorkersAtOnce) {
  ASSERT_NO_FATAL_FAILURE(StartWorkers(2));
  v1::JobSpec spec = SyntheticMlpSpec(20);
  spec.set_precision("32-true");
  spec.set_devices(1);
  spec.set_num_nodes(2);
  spec.set_memory_baseline_steps(0);
  auto submitted = Submit(stub("w0"), spec);
  ASSERT_TRUE(submitted.status.ok()) << submitted.status.error_message();
  const std::string id = submitted.job.id();
  auto done = WaitForJob(stub("w1"), id, IsTerminal, absl::Seconds(60));
  ASSERT_OK(done);
  ASSERT_EQ(done->state(), v1::SUCCEEDED) << done->error();
  EXPECT_EQ(done->attempt(), 1);
  EXPECT_EQ(done->result().steps_completed(), 20);
  EXPECT_EQ(done->world_size(), 2);
  EXPECT_EQ(done->global_batch_size(), 64);
  ASSERT_EQ(done->nodes_size(), 2) << done->ShortDebugString();
  EXPECT_EQ(done->nodes(0), done->worker());
  EXPECT_NE(done->nodes(1), done->nodes(0));
  EXPECT_TRUE(workers_.count(done->nodes(1))) << done->nodes(1);
  // The other worker ran node 1 (rank 1) to its end, which it may log a
  // moment after node 0 wrote the job's.
  const std::string follower_end = absl::StrCat("job ", id, ": node 1 of 2 (attempt 1, node 0 on ",
                                                done->worker(), ") ended: OK");
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (process(done->nodes(1)).Log().find(follower_end) == std::string::npos &&
         absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_THAT(process(done->nodes(1)).Log(), HasSubstr(follower_end));
}

TEST_F(FleetTest, AKilledRankOfATwoNodeJobRequeuesTheWholeJob) {
  ASSERT_NO_FATAL_FAILURE(StartWorkers(2));
  // Node 0's ranks fail on the lost peer; that is logged as an error.
  expect_no_errors_ = false;
  constexpr int64_t kSteps = 1500;
  v1::JobSpec spec = LongSpec(kSteps, 500);
  spec.set_precision("32-true");
  spec.set_num_nodes(2);
  // Overlapping classes keep the loss (and the gradients) away from zero,
  // where denormals slow the steps down many times.
  (*spec.mutable_dataset_options())["noise"] = "30";
  const absl::Time start = absl::Now();
  const v1::Job running = SubmitAndWaitForStep("w0", spec, 500, true);
  ASSERT_FALSE(running.id().empty());
  ASSERT_EQ(running.nodes_size(), 2);
  const std::string follower = running.nodes(1);
  // The follower's launcher logs "job <id>: rank 1 of 2 started (pid N)".
  const std::string started = absl::StrCat("job ", running.id(), ": rank 1 of 2 started (pid ");
  const std::string log = process(follower).Log();
  const size_t at = log.find(started);
  ASSERT_NE(at, std::string::npos) << log;
  const pid_t rank1 = std::atoi(log.c_str() + at + started.size());
  ASSERT_GT(rank1, 0);
  std::printf("checkpoint at %lld after %s; killing rank 1 (pid %d) on %s\n",
              static_cast<long long>(running.checkpoint().step()),
              absl::FormatDuration(absl::Now() - start).c_str(), rank1, follower.c_str());
  ASSERT_EQ(kill(rank1, SIGKILL), 0);

  auto done = WaitForJob(stub("w0"), running.id(), IsTerminal, absl::Seconds(60));
  ASSERT_OK(done);
  std::printf("ended after %s\n", absl::FormatDuration(absl::Now() - start).c_str());
  ASSERT_EQ(done->state(), v1::SUCCEEDED) << done->error();
  ASSERT_EQ(done->attempts_size(), 2) << done->ShortDebugString();
  ExpectAttemptsInSequence(*done);
  EXPECT_EQ(done->attempts(0).end(), v1::Attempt::LEASE_EXPIRED);
  EXPECT_THAT(done->attempts(0).reason(), HasSubstr("rank")) << done->attempts(0).reason();
  EXPECT_GE(done->attempts(1).start_step(), 500);
  EXPECT_EQ(done->nodes_size(), 2);
  EXPECT_EQ(done->result().steps_completed(), kSteps);
}

TEST_F(FleetTest, AFollowerShuttingDownReleasesATwoNodeJobWithACheckpoint) {
  ASSERT_NO_FATAL_FAILURE(StartWorkers(2));
  constexpr int64_t kSteps = 2000;
  v1::JobSpec spec = LongSpec(kSteps, 1000);
  spec.set_precision("32-true");
  spec.set_num_nodes(2);
  (*spec.mutable_dataset_options())["noise"] = "30";
  // A release is no failure: one attempt allowed is enough to finish.
  spec.set_max_attempts(1);
  const absl::Time start = absl::Now();
  const v1::Job running = SubmitAndWaitForStep("w0", spec, 300);
  ASSERT_FALSE(running.id().empty());
  ASSERT_EQ(running.nodes_size(), 2);
  const std::string leader = running.worker();
  const std::string follower = running.nodes(1);
  ASSERT_NE(follower, leader);
  std::printf("step %lld after %s; stopping %s (node 1)\n",
              static_cast<long long>(running.progress().step()),
              absl::FormatDuration(absl::Now() - start).c_str(), follower.c_str());
  EXPECT_EQ(process(follower).Terminate(), 0) << process(follower).Log();

  // Node 0 stops with the follower, checkpoints and gives the job back.
  auto released = WaitForJob(
      stub(leader), running.id(),
      [](const v1::Job& j) { return j.state() == v1::QUEUED || IsTerminal(j); }, absl::Seconds(30));
  ASSERT_OK(released);
  ASSERT_EQ(released->state(), v1::QUEUED) << released->ShortDebugString();
  ASSERT_EQ(released->attempts_size(), 1) << released->ShortDebugString();
  const v1::Attempt& first = released->attempts(0);
  EXPECT_EQ(first.worker(), leader);
  EXPECT_EQ(first.end(), v1::Attempt::RELEASED);
  EXPECT_EQ(first.reason().rfind("released: ", 0), 0u) << first.reason();
  EXPECT_THAT(first.reason(), HasSubstr("another node of the job shuts down"));
  // Every rank stopped at the step of the checkpoint, not a periodic one.
  const int64_t stopped = released->checkpoint().step();
  EXPECT_GE(stopped, running.progress().step());
  EXPECT_LT(stopped, kSteps);
  EXPECT_THAT(first.reason(), HasSubstr(absl::StrCat("stopped at step ", stopped, " ")));

  // A fresh worker makes two again: the job resumes where it stopped.
  ASSERT_NO_FATAL_FAILURE(StartWorker("w2"));
  auto done = WaitForJob(stub(leader), running.id(), IsTerminal, absl::Seconds(60));
  ASSERT_OK(done);
  std::printf("ended after %s\n", absl::FormatDuration(absl::Now() - start).c_str());
  ASSERT_EQ(done->state(), v1::SUCCEEDED) << done->error();
  ASSERT_EQ(done->attempts_size(), 2) << done->ShortDebugString();
  ExpectAttemptsInSequence(*done);
  EXPECT_EQ(done->attempts(0).end(), v1::Attempt::RELEASED);
  EXPECT_EQ(done->attempts(1).start_step(), stopped);
  EXPECT_GT(done->attempts(1).start_step(), 0);
  ASSERT_EQ(done->nodes_size(), 2);
  EXPECT_NE(std::find(done->nodes().begin(), done->nodes().end(), "w2"), done->nodes().end())
      << done->ShortDebugString();
  EXPECT_EQ(done->result().steps_completed(), kSteps);
}

TEST_F(FleetTest, ThirtyJobsOverThreeWorkersRunOncePerAttempt) {
  ASSERT_NO_FATAL_FAILURE(StartWorkers(3));
  const std::vector<std::string> via = {"w0", "w1", "w2"};
  std::vector<std::string> ids;
  for (int i = 0; i < 30; ++i) {
    auto s = Submit(stub(via[i % 3]), SyntheticMlpSpec(200));
    ASSERT_TRUE(s.status.ok()) << s.status.error_message();
    ids.push_back(s.job.id());
  }
  std::vector<v1::Job> jobs;
  std::map<std::string, int> jobs_per_worker;
  for (const std::string& id : ids) {
    auto job = WaitForJob(stub("w1"), id, IsTerminal, absl::Seconds(60));
    ASSERT_OK(job);
    EXPECT_EQ(job->state(), v1::SUCCEEDED) << job->error();
    EXPECT_EQ(job->attempt(), 1);
    ASSERT_EQ(job->attempts_size(), 1) << job->ShortDebugString();
    ExpectAttemptsInSequence(*job);
    EXPECT_TRUE(workers_.count(job->worker())) << job->worker();
    ++jobs_per_worker[job->worker()];
    jobs.push_back(*job);
  }
  EXPECT_GT(jobs_per_worker.size(), 1u) << "one worker ran every job";
  ExpectNoWorkerRanTwoAtOnce(jobs);
  for (const auto& [worker, count] : jobs_per_worker) {
    std::printf("worker %s ran %d of the 30 jobs\n", worker.c_str(), count);
  }
}

TEST_F(FleetTest, KilledWorkersJobResumesElsewhereWithTheSameLoss) {
  ASSERT_NO_FATAL_FAILURE(StartWorkers(3, {"--lease_seconds=2"}));
  constexpr int64_t kSteps = 10000;
  // The uninterrupted run trains on another worker meanwhile.
  auto whole = Submit(stub("w0"), LongSpec(kSteps, 1000));
  ASSERT_TRUE(whole.status.ok()) << whole.status.error_message();
  const v1::Job running = SubmitAndWaitForStep("w0", LongSpec(kSteps, 1000), 1000, true);
  ASSERT_FALSE(running.id().empty());
  const std::string victim = running.worker();
  process(victim).Kill();
  Stub& other = stub(OtherThan(victim));

  auto resumed = WaitForJob(other, running.id(), IsTerminal, absl::Seconds(60));
  ASSERT_OK(resumed);
  ASSERT_EQ(resumed->state(), v1::SUCCEEDED) << resumed->error();
  EXPECT_EQ(resumed->attempt(), 2);
  ASSERT_EQ(resumed->attempts_size(), 2);
  ExpectAttemptsInSequence(*resumed);
  EXPECT_EQ(resumed->attempts(0).worker(), victim);
  EXPECT_EQ(resumed->attempts(0).end(), v1::Attempt::LEASE_EXPIRED);
  EXPECT_NE(resumed->attempts(1).worker(), victim);
  // The file may be one checkpoint ahead of the store if the kill came
  // between writing it and recording it.
  EXPECT_GE(resumed->attempts(1).start_step(), running.checkpoint().step());
  EXPECT_EQ(resumed->attempts(1).start_step() % 1000, 0);
  EXPECT_EQ(resumed->start_step(), resumed->attempts(1).start_step());
  EXPECT_EQ(resumed->result().steps_completed(), kSteps);

  auto uninterrupted = WaitForJob(other, whole.job.id(), IsTerminal, absl::Seconds(60));
  ASSERT_OK(uninterrupted);
  ASSERT_EQ(uninterrupted->state(), v1::SUCCEEDED) << uninterrupted->error();
  EXPECT_EQ(uninterrupted->attempts_size(), 1);
  EXPECT_DOUBLE_EQ(resumed->result().final_loss(), uninterrupted->result().final_loss());
}

TEST_F(FleetTest, StaleWorkerAfterSigstopChangesNothing) {
  ASSERT_NO_FATAL_FAILURE(StartWorkers(2, {"--lease_seconds=2"}));
  constexpr int64_t kSteps = 16000;
  const v1::Job running = SubmitAndWaitForStep("w0", LongSpec(kSteps, 1000), 1000, true);
  ASSERT_FALSE(running.id().empty());
  const std::string stale = running.worker();
  const std::string taker = OtherThan(stale);
  const absl::Time stopped = absl::Now();
  process(stale).SendSignal(SIGSTOP);

  // Stopped past two leases, while the other worker takes the job over.
  auto taken = WaitForJob(
      stub(taker), running.id(),
      [](const v1::Job& j) {
        return (j.attempt() == 2 && j.state() == v1::RUNNING) || IsTerminal(j);
      },
      absl::Seconds(30));
  absl::SleepFor(stopped + absl::Milliseconds(4200) - absl::Now());
  process(stale).SendSignal(SIGCONT);
  ASSERT_OK(taken);
  ASSERT_EQ(taken->attempt(), 2) << taken->ShortDebugString();
  EXPECT_EQ(taken->worker(), taker);

  auto done = WaitForJob(stub(taker), running.id(), IsTerminal, absl::Seconds(60));
  ASSERT_OK(done);
  EXPECT_EQ(done->state(), v1::SUCCEEDED) << done->error();
  EXPECT_EQ(done->attempt(), 2);
  EXPECT_EQ(done->worker(), taker);
  ASSERT_EQ(done->attempts_size(), 2) << done->ShortDebugString();
  ExpectAttemptsInSequence(*done);
  EXPECT_EQ(done->attempts(0).worker(), stale);
  EXPECT_EQ(done->attempts(0).end(), v1::Attempt::LEASE_EXPIRED);
  EXPECT_EQ(done->attempts(1).worker(), taker);
  EXPECT_EQ(done->result().steps_completed(), kSteps);

  // The stale worker noticed and stopped training it.
  const std::string lost = absl::StrCat("job ", running.id(), ": stopped without writing");
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline && process(stale).Log().find(lost) == std::string::npos) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_THAT(process(stale).Log(), HasSubstr(lost));
  auto after = WaitForJob(stub(stale), running.id(), IsTerminal);
  ASSERT_OK(after);
  EXPECT_EQ(after->worker(), taker);
  EXPECT_EQ(after->attempts_size(), 2);
}

TEST_F(FleetTest, PostgresRestartLosesNoJob) {
  expect_no_errors_ = false;  // the workers say that the database is gone
  ASSERT_NO_FATAL_FAILURE(StartWorkers(2, {"--lease_seconds=2"}));
  constexpr int64_t kSteps = 3000;
  std::vector<std::string> ids;
  for (int i = 0; i < 6; ++i) {
    auto s = Submit(stub(i % 2 == 0 ? "w0" : "w1"), LongSpec(kSteps, 1000));
    ASSERT_TRUE(s.status.ok()) << s.status.error_message();
    ids.push_back(s.job.id());
  }
  ASSERT_OK(WaitForJob(stub("w0"), ids[0], [](const v1::Job& j) {
    return j.progress().step() >= 100 || IsTerminal(j);
  }));
  ASSERT_OK(postgres_->Restart());

  int retried = 0;
  std::vector<v1::Job> jobs;
  for (const std::string& id : ids) {
    auto job = WaitThroughOutages(stub("w1"), id, IsTerminal, absl::Seconds(60));
    ASSERT_OK(job);
    EXPECT_EQ(job->state(), v1::SUCCEEDED) << job->error();
    ExpectAttemptsInSequence(*job);
    EXPECT_EQ(job->result().steps_completed(), kSteps);
    retried += job->attempt() > 1;
    jobs.push_back(*job);
  }
  ExpectNoWorkerRanTwoAtOnce(jobs);
  std::printf("%d of %zu jobs needed a second attempt\n", retried, ids.size());
}

TEST_F(FleetTest, SigtermedWorkersJobResumesFromWhereItStopped) {
  ASSERT_NO_FATAL_FAILURE(StartWorkers(2));
  constexpr int64_t kSteps = 12000;
  const v1::Job running = SubmitAndWaitForStep("w0", LongSpec(kSteps), 500);
  ASSERT_FALSE(running.id().empty());
  const std::string stopped = running.worker();
  const std::string taker = OtherThan(stopped);
  EXPECT_EQ(process(stopped).Terminate(), 0) << process(stopped).Log();

  auto resumed = WaitForJob(stub(taker), running.id(), IsTerminal, absl::Seconds(60));
  ASSERT_OK(resumed);
  ASSERT_EQ(resumed->state(), v1::SUCCEEDED) << resumed->error();
  EXPECT_EQ(resumed->attempt(), 2);
  ASSERT_EQ(resumed->attempts_size(), 2);
  ExpectAttemptsInSequence(*resumed);
  EXPECT_EQ(resumed->attempts(0).worker(), stopped);
  EXPECT_EQ(resumed->attempts(0).end(), v1::Attempt::RELEASED);
  EXPECT_THAT(resumed->attempts(0).reason(), HasSubstr("shut down"));
  EXPECT_EQ(resumed->attempts(1).worker(), taker);
  // The shutdown's checkpoint (the spec asks for none): where it stopped.
  EXPECT_GE(resumed->attempts(1).start_step(), running.progress().step());
  EXPECT_LT(resumed->attempts(1).start_step(), kSteps);
  EXPECT_EQ(resumed->start_step(), resumed->attempts(1).start_step());
  EXPECT_EQ(resumed->result().steps_completed(), kSteps);
}

TEST_F(FleetTest, ExportThroughOneInferThroughAnother) {
  ASSERT_NO_FATAL_FAILURE(StartWorkers(2));
  auto trained = Submit(stub("w0"), SyntheticMlpSpec(30));
  ASSERT_TRUE(trained.status.ok()) << trained.status.error_message();
  auto job = WaitForJob(stub("w0"), trained.job.id(), IsTerminal);
  ASSERT_OK(job);
  ASSERT_EQ(job->state(), v1::SUCCEEDED) << job->error();

  testing::InferenceClient a(process("w0").grpc_address());
  testing::InferenceClient b(process("w1").grpc_address());
  for (testing::InferenceClient* client : {&a, &b}) {
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (absl::Now() < deadline && !client->ServerReady().value_or(false)) {
      absl::SleepFor(absl::Milliseconds(20));
    }
    ASSERT_TRUE(client->ServerReady().value_or(false));
  }
  v1::ModelVersionStatus exported;
  const grpc::Status status = a.Export(job->id(), "shared", "32-true", &exported);
  ASSERT_TRUE(status.ok()) << status.error_message();

  // Served by the other worker within a few seconds, without a load call.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline && !b.ModelReady("shared").value_or(false)) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_TRUE(b.ModelReady("shared").value_or(false)) << "not served by the other worker";
  const inference::ModelInferRequest request =
      testing::FloatRequest("shared", "input", {2, 32}, testing::PseudoRandomFloats(64, 3));
  inference::ModelInferResponse from_a, from_b;
  ASSERT_TRUE(a.Infer(request, &from_a).ok());
  const grpc::Status inferred = b.Infer(request, &from_b);
  ASSERT_TRUE(inferred.ok()) << inferred.error_message();
  auto logits_a = testing::OutputFloats(from_a);
  auto logits_b = testing::OutputFloats(from_b);
  ASSERT_OK(logits_a);
  ASSERT_OK(logits_b);
  EXPECT_FALSE(logits_b->empty());
  EXPECT_EQ(*logits_a, *logits_b) << "the workers serve different weights";
}

}  // namespace
}  // namespace mantissa
