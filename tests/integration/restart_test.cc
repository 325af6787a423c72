// Job state lives in SQLite under --state_dir: restarts, crashes and
// graceful shutdowns must never lose a job, and a job a shutdown stopped
// goes on where it stopped.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "tests/testing/daemon_process.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace mantissa {
namespace {

using testing::DaemonProcess;
using ::testing::HasSubstr;
using testing::Submit;
using testing::SyntheticMlpSpec;
using testing::WaitForJob;

class RestartTest : public ::testing::Test {
 protected:
  std::unique_ptr<DaemonProcess> Start(std::vector<std::string> extra_flags = {}) {
    auto daemon =
        DaemonProcess::Start({.state_dir = dir_.path(), .extra_flags = std::move(extra_flags)});
    EXPECT_OK(daemon);
    return daemon.ok() ? std::move(*daemon) : nullptr;
  }

  // Submits a job of kRunningSteps and a 30-step one queued behind it, waits
  // for the first to step, then stops the daemon with SIGTERM.
  // Empty ids when a step failed (the failure is recorded).
  struct RunningAndQueued {
    std::string running_id;
    std::string queued_id;
  };
  RunningAndQueued QueueBehindARunningJobThenStop() {
    auto daemon = Start();
    if (daemon == nullptr) return {};
    auto stub = daemon->NewStub();
    auto running = Submit(*stub, RunningSpec());
    auto queued = Submit(*stub, SyntheticMlpSpec(30));
    EXPECT_TRUE(running.status.ok() && queued.status.ok());
    if (!running.status.ok() || !queued.status.ok()) return {};
    EXPECT_OK(WaitForJob(*stub, running.job.id(),
                         [](const v1::Job& j) { return j.progress().step() >= 20; }));
    EXPECT_EQ(daemon->Terminate(), 0) << daemon->Log();
    return {running.job.id(), queued.job.id()};
  }

  // Long enough (seconds) for SIGTERM to land mid-run; no periodic
  // checkpoints, so only the shutdown's checkpoint can keep its work.
  static v1::JobSpec RunningSpec() {
    v1::JobSpec spec = SyntheticMlpSpec(kRunningSteps);
    spec.set_progress_every_n_steps(10);
    spec.set_memory_baseline_steps(0);
    return spec;
  }
  static constexpr int64_t kRunningSteps = 4000;

  static std::vector<v1::Job> List(v1::TrainingService::Stub& stub) {
    grpc::ClientContext context;
    v1::ListJobsResponse response;
    EXPECT_TRUE(stub.ListJobs(&context, v1::ListJobsRequest(), &response).ok());
    return {response.jobs().begin(), response.jobs().end()};
  }

  testing::TempDir dir_;
};

TEST_F(RestartTest, JobListSurvivesRestart) {
  std::string id;
  {
    auto daemon = Start();
    ASSERT_NE(daemon, nullptr);
    auto stub = daemon->NewStub();
    auto submitted = Submit(*stub, SyntheticMlpSpec(40));
    ASSERT_TRUE(submitted.status.ok());
    id = submitted.job.id();
    auto job = WaitForJob(*stub, id, testing::IsTerminal);
    ASSERT_OK(job);
    ASSERT_EQ(job->state(), v1::SUCCEEDED);
    EXPECT_EQ(daemon->Terminate(), 0) << daemon->Log();
  }
  auto daemon = Start();
  ASSERT_NE(daemon, nullptr);
  auto stub = daemon->NewStub();
  std::vector<v1::Job> jobs = List(*stub);
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].id(), id);
  EXPECT_EQ(jobs[0].state(), v1::SUCCEEDED);
  EXPECT_EQ(jobs[0].result().steps_completed(), 40);
  EXPECT_TRUE(jobs[0].result().has_eval_accuracy());
}

TEST_F(RestartTest, SigtermReleasesTheRunningJobWhichResumesWhereItStopped) {
  const auto [running_id, queued_id] = QueueBehindARunningJobThenStop();
  ASSERT_FALSE(running_id.empty());
  auto daemon = Start();
  ASSERT_NE(daemon, nullptr);
  auto stub = daemon->NewStub();
  auto resumed = WaitForJob(*stub, running_id, testing::IsTerminal);
  ASSERT_OK(resumed);
  ASSERT_EQ(resumed->state(), v1::SUCCEEDED) << resumed->error();
  EXPECT_EQ(resumed->attempt(), 2);
  ASSERT_EQ(resumed->attempts_size(), 2);
  EXPECT_EQ(resumed->attempts(0).end(), v1::Attempt::RELEASED);
  EXPECT_THAT(resumed->attempts(0).reason(), HasSubstr("shut down"));
  // The shutdown's checkpoint, not a periodic one: the job takes none.
  EXPECT_GE(resumed->attempts(1).start_step(), 20);
  EXPECT_EQ(resumed->start_step(), resumed->attempts(1).start_step());
  EXPECT_EQ(resumed->result().steps_completed(), kRunningSteps);
  // The queued job was kept and runs after the restart.
  auto queued = WaitForJob(*stub, queued_id, testing::IsTerminal);
  ASSERT_OK(queued);
  EXPECT_EQ(queued->state(), v1::SUCCEEDED);

  auto whole = Submit(*stub, RunningSpec());
  ASSERT_TRUE(whole.status.ok());
  auto uninterrupted = WaitForJob(*stub, whole.job.id(), testing::IsTerminal);
  ASSERT_OK(uninterrupted);
  EXPECT_DOUBLE_EQ(resumed->result().final_loss(), uninterrupted->result().final_loss());
}

// A queued job runs under the daemon that picks it up: its spec is checked
// again against that daemon's flags, and a job they no longer allow fails
// saying why instead of running outside today's limits.
TEST_F(RestartTest, AQueuedJobIsCheckedAgainAgainstTheFlagsOfTheDaemonThatRunsIt) {
  const std::string queued_id = QueueBehindARunningJobThenStop().queued_id;
  ASSERT_FALSE(queued_id.empty());
  auto daemon = Start({"--max_job_steps=20"});
  ASSERT_NE(daemon, nullptr);
  auto stub = daemon->NewStub();
  auto queued = WaitForJob(*stub, queued_id, testing::IsTerminal);
  ASSERT_OK(queued);
  EXPECT_EQ(queued->state(), v1::FAILED);
  EXPECT_THAT(queued->error(), HasSubstr("no longer passes this daemon's checks"));
  EXPECT_THAT(queued->error(), HasSubstr("steps"));
}

}  // namespace
}  // namespace mantissa

namespace mantissa {
namespace {

// A second daemon must not share a live daemon's port (SO_REUSEPORT would
// let it, splitting clients between the two): it refuses to start.
TEST(PortTest, SecondDaemonOnTheSamePortFailsToStart) {
  testing::TempDir first_dir, second_dir;
  auto first = testing::DaemonProcess::Start({.state_dir = first_dir.path()});
  ASSERT_OK(first);
  auto second = testing::DaemonProcess::Start(
      {.state_dir = second_dir.path(),
       .extra_flags = {"--grpc_address=" + (*first)->grpc_address()}});
  EXPECT_THAT(second, testing::StatusIs(absl::StatusCode::kInternal,
                                        ::testing::HasSubstr("--grpc_address")));
  auto third = testing::DaemonProcess::Start(
      {.state_dir = second_dir.path(),
       .extra_flags = {"--metrics_address=127.0.0.1:" + std::to_string((*first)->metrics_port())}});
  EXPECT_THAT(third, testing::StatusIs(absl::StatusCode::kInternal,
                                       ::testing::HasSubstr("--metrics_address")));
}

}  // namespace
}  // namespace mantissa
