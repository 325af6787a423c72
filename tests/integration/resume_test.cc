// Checkpoints and resume_from through the real daemon: a job interrupted by
// a cancellation (resumed by hand) or by SIGKILL (resumed by the restarted
// daemon as the job's next attempt) continues from its checkpoint and ends
// exactly where an uninterrupted run ends.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>

#include "tests/testing/daemon_test.h"
#include "tests/testing/subprocess.h"

namespace mantissa {
namespace {

using testing::DaemonTest;
using testing::IsTerminal;
using testing::RunCli;
using testing::Submit;
using testing::WaitForJob;

constexpr int64_t kSteps = 2000;

// Long enough (several seconds) for a cancellation or a kill to land mid-run.
v1::JobSpec LongSpec() {
  v1::JobSpec spec = testing::SyntheticMlpSpec(kSteps);
  (*spec.mutable_model_options())["hidden"] = "512,512";
  spec.set_checkpoint_every_n_steps(100);
  spec.set_progress_every_n_steps(50);
  spec.set_precision("bf16-mixed");
  spec.set_memory_baseline_steps(0);
  return spec;
}

v1::JobSpec ResumeSpec(const std::string& id) {
  v1::JobSpec spec;
  spec.set_resume_from(id);
  return spec;
}

std::string JobId(const std::string& json) {
  std::smatch m;
  return std::regex_search(json, m, std::regex(R"re("id":\s*"([0-9a-f]+)")re")) ? m[1].str() : "";
}

using ResumeTest = DaemonTest;

TEST_F(ResumeTest, ACancelledJobResumedWithTheCliEndsLikeAnUninterruptedRun) {
  const v1::Job whole = SubmitAndWait(LongSpec());
  ASSERT_EQ(whole.state(), v1::SUCCEEDED) << whole.error();

  auto submitted = Submit(*stub_, LongSpec());
  ASSERT_TRUE(submitted.status.ok()) << submitted.status.error_message();
  const std::string id = submitted.job.id();
  ASSERT_OK(WaitForJob(
      *stub_, id, [](const v1::Job& j) { return j.checkpoint().step() >= 100 || IsTerminal(j); }));
  auto cancel = RunCli({daemon_->server_flag(), "cancel", id});
  ASSERT_EQ(cancel.exit_code, 0) << cancel.err;
  auto cancelled = WaitForJob(*stub_, id, IsTerminal);
  ASSERT_OK(cancelled);
  ASSERT_EQ(cancelled->state(), v1::CANCELLED) << "finished before the cancellation landed";
  // Periodic checkpoints on: the job kept its work as it stopped.
  const int64_t stopped_at = cancelled->checkpoint().step();
  EXPECT_GE(stopped_at, cancelled->progress().step());  // progress is reported every 50
  EXPECT_GE(stopped_at, 100);
  EXPECT_LT(stopped_at, kSteps);

  auto resumed_cli = RunCli({daemon_->server_flag(), "--json", "resume", id, "--name=again"});
  ASSERT_EQ(resumed_cli.exit_code, 0) << resumed_cli.err;
  const std::string resumed_id = JobId(resumed_cli.out);
  ASSERT_FALSE(resumed_id.empty()) << resumed_cli.out;
  auto resumed = WaitForJob(*stub_, resumed_id, IsTerminal);
  ASSERT_OK(resumed);
  ASSERT_EQ(resumed->state(), v1::SUCCEEDED) << resumed->error();
  EXPECT_EQ(resumed->spec().resume_from(), id);
  EXPECT_EQ(resumed->spec().name(), "again");
  EXPECT_EQ(resumed->spec().steps(), kSteps);
  EXPECT_EQ(resumed->start_step(), stopped_at);
  EXPECT_EQ(resumed->result().steps_completed(), kSteps);
  EXPECT_EQ(resumed->progress().step(), kSteps);
  EXPECT_DOUBLE_EQ(resumed->result().final_loss(), whole.result().final_loss());
  EXPECT_DOUBLE_EQ(resumed->result().eval_accuracy(), whole.result().eval_accuracy());
}

TEST_F(ResumeTest, AJobKilledWithTheDaemonResumesByItselfAfterRestart) {
  auto submitted = Submit(*stub_, LongSpec());
  ASSERT_TRUE(submitted.status.ok()) << submitted.status.error_message();
  const std::string id = submitted.job.id();
  auto running = WaitForJob(
      *stub_, id, [](const v1::Job& j) { return j.checkpoint().step() >= 200 || IsTerminal(j); });
  ASSERT_OK(running);
  ASSERT_EQ(running->state(), v1::RUNNING) << "finished before the kill";
  daemon_->Kill();

  // What a crash in the middle of the next write would have left behind.
  const std::string job_dir = dir_.path() + "/jobs/" + id;
  { std::ofstream(job_dir + "/checkpoint.pt.tmp") << "torn"; }

  // The restarted daemon runs the job again as its second attempt, from
  // its newest checkpoint.
  StartDaemon({});
  auto resumed = WaitForJob(*stub_, id, IsTerminal);
  ASSERT_OK(resumed);
  ASSERT_EQ(resumed->state(), v1::SUCCEEDED) << resumed->error();
  EXPECT_EQ(resumed->attempt(), 2);
  ASSERT_EQ(resumed->attempts_size(), 2);
  EXPECT_EQ(resumed->attempts(0).end(), v1::Attempt::LEASE_EXPIRED);
  // The file may be one checkpoint ahead of the store if the kill came
  // between writing it and recording it.
  EXPECT_GE(resumed->start_step(), running->checkpoint().step());
  EXPECT_EQ(resumed->start_step() % 100, 0);
  EXPECT_EQ(resumed->attempts(1).start_step(), resumed->start_step());
  EXPECT_EQ(resumed->result().steps_completed(), kSteps);

  const v1::Job whole = SubmitAndWait(LongSpec());
  ASSERT_EQ(whole.state(), v1::SUCCEEDED) << whole.error();
  EXPECT_DOUBLE_EQ(resumed->result().final_loss(), whole.result().final_loss());
}

TEST_F(ResumeTest, ARestartSweepsStaleTmpFilesButNotTheDataRoot) {
  // <state_dir>/data, in the default --data_root, holds the operator's files.
  std::filesystem::create_directories(dir_.path() + "/data");
  std::filesystem::create_directories(dir_.path() + "/jobs/000000000001");
  const std::string dataset = dir_.path() + "/data/corpus.tmp";
  const std::string torn = dir_.path() + "/jobs/000000000001/checkpoint.pt.tmp";
  std::ofstream(dataset) << "1,2,0\n";
  std::ofstream(torn) << "torn";
  StartDaemon({"--data_root=/usr/share/datasets,<state_dir>/data"});
  EXPECT_TRUE(std::filesystem::exists(dataset));
  EXPECT_FALSE(std::filesystem::exists(torn));
}

TEST_F(ResumeTest, BadResumeRequestsAreRefusedAndCreateNothing) {
  const v1::Job done = SubmitAndWait(testing::SyntheticMlpSpec(5));
  ASSERT_EQ(done.state(), v1::SUCCEEDED);
  ASSERT_TRUE(std::filesystem::exists(done.checkpoint().path())) << done.checkpoint().path();

  // Cancelled while queued: it never wrote a checkpoint.
  auto blocker = Submit(*stub_, LongSpec());
  auto queued = Submit(*stub_, testing::SyntheticMlpSpec(5));
  ASSERT_TRUE(queued.status.ok());
  ASSERT_EQ(RunCli({daemon_->server_flag(), "cancel", queued.job.id()}).exit_code, 0);

  struct Case {
    v1::JobSpec spec;
    grpc::StatusCode code;
    std::string message;
  };
  v1::JobSpec with_steps = ResumeSpec(done.id());
  with_steps.set_steps(10);
  const std::vector<Case> cases = {
      {ResumeSpec("0000000000000000"), grpc::NOT_FOUND, "resume_from: no job"},
      {ResumeSpec(done.id()), grpc::FAILED_PRECONDITION, "already succeeded"},
      {ResumeSpec(blocker.job.id()), grpc::FAILED_PRECONDITION, "once it has ended"},
      {ResumeSpec(queued.job.id()), grpc::FAILED_PRECONDITION, "has no checkpoint"},
      {with_steps, grpc::INVALID_ARGUMENT, "set only name beside resume_from"},
  };
  const size_t jobs_before = ListJobs().size();
  for (const Case& c : cases) {
    auto outcome = Submit(*stub_, c.spec);
    EXPECT_EQ(outcome.status.error_code(), c.code)
        << c.message << ": " << outcome.status.error_message();
    EXPECT_NE(outcome.status.error_message().find(c.message), std::string::npos)
        << outcome.status.error_message();
  }
  EXPECT_EQ(ListJobs().size(), jobs_before);
}

}  // namespace
}  // namespace mantissa
