// The real mantissad on 127.0.0.1:0, driven over gRPC.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <memory>
#include <thread>

#include "tests/testing/bad_spec_cases.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/daemon_test.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace mantissa {
namespace {

using testing::FindSample;
using ::testing::HasSubstr;
using testing::Submit;
using testing::SyntheticMlpSpec;
using testing::WaitForJob;

using TrainingServiceTest = testing::DaemonTest;

TEST_F(TrainingServiceTest, SubmitWatchSucceedsWithFallingLoss) {
  v1::JobSpec spec = SyntheticMlpSpec(300);
  spec.set_progress_every_n_steps(20);
  auto submitted = Submit(*stub_, spec);
  ASSERT_TRUE(submitted.status.ok()) << submitted.status.error_message();
  EXPECT_EQ(submitted.job.state(), v1::QUEUED);
  EXPECT_EQ(submitted.job.effective_precision(), "32-true");
  EXPECT_EQ(submitted.job.spec().optimizer(), "adamw");  // defaults filled in

  grpc::ClientContext context;
  v1::WatchJobRequest request;
  request.set_job_id(submitted.job.id());
  auto reader = stub_->WatchJob(&context, request);
  std::vector<v1::JobEvent> events;
  v1::JobEvent event;
  while (reader->Read(&event)) events.push_back(event);
  ASSERT_TRUE(reader->Finish().ok());

  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.front().type(), v1::JobEvent::SNAPSHOT);
  EXPECT_EQ(events.back().type(), v1::JobEvent::FINISHED);
  const v1::Job& final_job = events.back().job();
  EXPECT_EQ(final_job.state(), v1::SUCCEEDED) << final_job.error();
  EXPECT_EQ(final_job.result().steps_completed(), 300);
  EXPECT_EQ(final_job.progress().step(), 300);
  EXPECT_GT(final_job.parameter_count(), 0);
  ASSERT_TRUE(final_job.result().has_eval_accuracy());
  EXPECT_GT(final_job.result().eval_accuracy(), 0.9);  // well-separated clusters

  std::vector<double> losses;
  for (const v1::JobEvent& e : events) {
    if (e.type() == v1::JobEvent::PROGRESS) losses.push_back(e.job().progress().loss());
  }
  ASSERT_GE(losses.size(), 2u);
  EXPECT_LT(losses.back(), losses.front() * 0.5);
  EXPECT_NEAR(final_job.result().final_loss(), losses.back(), 1e-9);
}

TEST_F(TrainingServiceTest, CancelRunningJobStopsWithinASecond) {
  auto submitted = Submit(*stub_, SyntheticMlpSpec(10'000'000));
  ASSERT_TRUE(submitted.status.ok());
  const std::string id = submitted.job.id();
  ASSERT_OK(WaitForJob(*stub_, id, [](const v1::Job& j) { return j.progress().step() > 0; }));

  grpc::ClientContext context;
  v1::CancelJobRequest request;
  request.set_job_id(id);
  v1::CancelJobResponse response;
  ASSERT_TRUE(stub_->CancelJob(&context, request, &response).ok());
  EXPECT_TRUE(response.job().cancel_requested());

  auto job = WaitForJob(*stub_, id, testing::IsTerminal, absl::Seconds(30));
  ASSERT_OK(job);
  EXPECT_EQ(job->state(), v1::CANCELLED);
  EXPECT_LT(job->progress().step(), 10'000'000);
}

TEST_F(TrainingServiceTest, CancelQueuedJobIsImmediate) {
  auto running = Submit(*stub_, SyntheticMlpSpec(10'000'000));
  auto queued = Submit(*stub_, SyntheticMlpSpec(10));
  ASSERT_TRUE(running.status.ok() && queued.status.ok());
  ASSERT_OK(WaitForJob(*stub_, running.job.id(),
                       [](const v1::Job& j) { return j.state() == v1::RUNNING; }));

  for (const std::string& id : {queued.job.id(), running.job.id()}) {
    grpc::ClientContext context;
    v1::CancelJobRequest request;
    request.set_job_id(id);
    v1::CancelJobResponse response;
    ASSERT_TRUE(stub_->CancelJob(&context, request, &response).ok());
    if (id == queued.job.id()) EXPECT_EQ(response.job().state(), v1::CANCELLED);
  }
  auto job = WaitForJob(*stub_, running.job.id(), testing::IsTerminal, absl::Seconds(30));
  ASSERT_OK(job);
  EXPECT_EQ(job->state(), v1::CANCELLED);

  // Cancelling again is refused: the job already ended.
  grpc::ClientContext context;
  v1::CancelJobRequest request;
  request.set_job_id(queued.job.id());
  v1::CancelJobResponse response;
  grpc::Status again = stub_->CancelJob(&context, request, &response);
  EXPECT_EQ(again.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(again.error_message(), HasSubstr("CANCELLED"));
}

// One refusal per status code through the real daemon: the code and message
// reach the client, nothing is stored and the daemon keeps serving. Every
// refusal is checked in-process in tests/training/spec_validation_test.cc.
class BadSpecTest : public testing::SharedDaemonTest,
                    public ::testing::WithParamInterface<testing::BadSpecCase> {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::make_unique<testing::TempDir>();
    StartSuiteDaemon({.state_dir = dir_->path()});
  }

  size_t JobCount() {
    grpc::ClientContext context;
    v1::ListJobsResponse response;
    EXPECT_TRUE(daemon_->NewStub()->ListJobs(&context, v1::ListJobsRequest(), &response).ok());
    return response.jobs_size();
  }
};

TEST_P(BadSpecTest, IsRejectedWithCodeAndChangesNothing) {
  auto stub = daemon_->NewStub();
  const size_t jobs_before = JobCount();
  v1::JobSpec spec = SyntheticMlpSpec(10);
  GetParam().mutate(spec);
  auto outcome = Submit(*stub, spec);
  EXPECT_EQ(outcome.status.error_code(), static_cast<grpc::StatusCode>(GetParam().code))
      << outcome.status.error_message();
  for (const std::string& part : GetParam().message_parts) {
    EXPECT_THAT(outcome.status.error_message(), HasSubstr(part));
  }
  EXPECT_EQ(JobCount(), jobs_before);
  // The daemon keeps serving.
  EXPECT_TRUE(Submit(*stub, SyntheticMlpSpec(1)).status.ok());
}

INSTANTIATE_TEST_SUITE_P(AllBadInputs, BadSpecTest,
                         ::testing::ValuesIn(testing::BadSpecCases(
                             {"UnknownModel", "StepsAndEpochs", "FP8OnCpu", "MissingDatasetDir"})),
                         [](const ::testing::TestParamInfo<testing::BadSpecCase>& info) {
                           return info.param.name;
                         });

TEST_F(TrainingServiceTest, UnknownJobIdIsNotFoundEverywhere) {
  {
    grpc::ClientContext context;
    v1::GetJobRequest request;
    request.set_job_id("nosuchjob");
    v1::GetJobResponse response;
    grpc::Status s = stub_->GetJob(&context, request, &response);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_THAT(s.error_message(), HasSubstr("nosuchjob"));
  }
  {
    grpc::ClientContext context;
    v1::CancelJobRequest request;
    request.set_job_id("nosuchjob");
    v1::CancelJobResponse response;
    EXPECT_EQ(stub_->CancelJob(&context, request, &response).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext context;
    v1::WatchJobRequest request;
    request.set_job_id("nosuchjob");
    auto reader = stub_->WatchJob(&context, request);
    v1::JobEvent event;
    EXPECT_FALSE(reader->Read(&event));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext context;
    v1::GetJobRequest request;  // empty id
    v1::GetJobResponse response;
    EXPECT_EQ(stub_->GetJob(&context, request, &response).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    grpc::ClientContext context;
    v1::ListJobsRequest request;
    request.add_states(static_cast<v1::JobState>(42));
    v1::ListJobsResponse response;
    EXPECT_EQ(stub_->ListJobs(&context, request, &response).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  EXPECT_TRUE(ListJobs().empty());
}

TEST_F(TrainingServiceTest, CapabilitiesDescribeCpuDevice) {
  grpc::ClientContext context;
  v1::GetCapabilitiesResponse caps;
  ASSERT_TRUE(stub_->GetCapabilities(&context, v1::GetCapabilitiesRequest(), &caps).ok());
  EXPECT_EQ(caps.device(), "cpu");
  EXPECT_FALSE(caps.libtorch_version().empty());
  EXPECT_GE(caps.intra_op_threads(), 1);
  EXPECT_EQ(caps.max_concurrent_jobs(), 1);
  ASSERT_EQ(caps.precisions_size(), 8);  // every Fabric value
  std::map<std::string, v1::PrecisionSupport> by_name;
  for (const auto& p : caps.precisions()) by_name[p.precision()] = p;
  EXPECT_TRUE(by_name["32-true"].supported());
  EXPECT_FALSE(by_name["transformer-engine"].supported());
  EXPECT_FALSE(by_name["transformer-engine"].reason().empty());
  EXPECT_THAT(std::vector<std::string>(caps.models().begin(), caps.models().end()),
              ::testing::Contains("mlp"));
}

TEST_F(TrainingServiceTest, MetricsShowTheJob) {
  auto submitted = Submit(*stub_, SyntheticMlpSpec(50));
  ASSERT_TRUE(submitted.status.ok());
  const std::string id = submitted.job.id();
  auto job = WaitForJob(*stub_, id, testing::IsTerminal);
  ASSERT_OK(job);
  ASSERT_EQ(job->state(), v1::SUCCEEDED);

  auto text = daemon_->ScrapeMetrics();
  ASSERT_OK(text);
  const std::string job_label = "job=\"" + id + "\"";
  EXPECT_EQ(FindSample(*text, "mantissa_jobs_submitted_total", {"precision=\"32-true\""}), 1.0);
  EXPECT_EQ(FindSample(*text, "mantissa_jobs_finished_total",
                       {"state=\"SUCCEEDED\"", "precision=\"32-true\""}),
            1.0);
  EXPECT_EQ(FindSample(*text, "mantissa_train_steps_total",
                       {job_label, "model=\"mlp\"", "precision=\"32-true\""}),
            50.0);
  EXPECT_EQ(
      FindSample(*text, "mantissa_train_step_duration_seconds_count", {"precision=\"32-true\""}),
      50.0);
  auto loss = FindSample(*text, "mantissa_train_loss", {job_label});
  ASSERT_TRUE(loss.has_value());
  EXPECT_NEAR(*loss, job->progress().loss(), 1e-6);
  EXPECT_GT(FindSample(*text, "mantissa_train_items_per_second", {job_label}).value_or(0), 0);
  EXPECT_EQ(FindSample(*text, "mantissa_jobs_running"), 0.0);
  EXPECT_EQ(FindSample(*text, "mantissa_jobs_queued"), 0.0);
}

TEST_F(TrainingServiceTest, LibTorchErrorFailsTheJobNotTheDaemon) {
  // 10M x 65536 floats (2.6 TB): LibTorch's allocator throws c10::Error.
  v1::JobSpec spec = SyntheticMlpSpec(10);
  (*spec.mutable_dataset_options())["train_size"] = "10000000";
  (*spec.mutable_dataset_options())["features"] = "65536";
  auto submitted = Submit(*stub_, spec);
  ASSERT_TRUE(submitted.status.ok()) << submitted.status.error_message();
  auto job = WaitForJob(*stub_, submitted.job.id(), testing::IsTerminal);
  ASSERT_OK(job);
  EXPECT_EQ(job->state(), v1::FAILED);
  EXPECT_THAT(job->error(), HasSubstr("job " + submitted.job.id() + ": "));
  EXPECT_THAT(job->error(), HasSubstr("allocate"));
  EXPECT_THAT(job->error(), ::testing::Not(HasSubstr("\n")));  // no C++ backtrace

  // The daemon lives on and trains the next job.
  auto next = Submit(*stub_, SyntheticMlpSpec(5));
  ASSERT_TRUE(next.status.ok());
  auto done = WaitForJob(*stub_, next.job.id(), testing::IsTerminal);
  ASSERT_OK(done);
  EXPECT_EQ(done->state(), v1::SUCCEEDED);
}

TEST_F(TrainingServiceTest, OutOfMemoryNamesWhatRanAndTheNextJobRuns) {
  // A batch of 2^20 items through a 2^20-wide hidden layer: its activations
  // (4 TiB) cannot be allocated, while the model itself (27M parameters) can.
  // The estimate refuses it before anything is allocated.
  v1::JobSpec spec = SyntheticMlpSpec(3);
  (*spec.mutable_model_options())["hidden"] = "1048576";
  (*spec.mutable_dataset_options())["features"] = "16";
  (*spec.mutable_dataset_options())["train_size"] = "1048576";
  (*spec.mutable_dataset_options())["test_size"] = "0";
  spec.set_batch_size(1048576);
  spec.set_precision("bf16-true");
  spec.set_memory_baseline_steps(0);
  auto submitted = Submit(*stub_, spec);
  ASSERT_TRUE(submitted.status.ok()) << submitted.status.error_message();
  auto job = WaitForJob(*stub_, submitted.job.id(), testing::IsTerminal);
  ASSERT_OK(job);
  EXPECT_EQ(job->state(), v1::FAILED);
  EXPECT_THAT(job->error(), HasSubstr("training needs an estimated "));
  EXPECT_THAT(job->error(), HasSubstr("activations of batch_size 1048576"));
  EXPECT_THAT(job->error(), HasSubstr(" is free"));
  EXPECT_THAT(job->error(), ::testing::Not(HasSubstr("\n")));

  auto next = Submit(*stub_, SyntheticMlpSpec(5));
  ASSERT_TRUE(next.status.ok());
  auto done = WaitForJob(*stub_, next.job.id(), testing::IsTerminal);
  ASSERT_OK(done);
  EXPECT_EQ(done->state(), v1::SUCCEEDED);
}

TEST_F(TrainingServiceTest, ConcurrentJobsRunTogetherWhenAllowed) {
  StartDaemon({"--max_concurrent_jobs=2"});
  auto a = Submit(*stub_, SyntheticMlpSpec(10'000'000));
  auto b = Submit(*stub_, SyntheticMlpSpec(10'000'000));
  ASSERT_TRUE(a.status.ok() && b.status.ok());
  for (const std::string& id : {a.job.id(), b.job.id()}) {
    ASSERT_OK(WaitForJob(*stub_, id, [](const v1::Job& j) { return j.progress().step() > 0; }));
  }
  for (const std::string& id : {a.job.id(), b.job.id()}) {
    grpc::ClientContext context;
    v1::CancelJobRequest request;
    request.set_job_id(id);
    v1::CancelJobResponse response;
    const grpc::Status status = stub_->CancelJob(&context, request, &response);
    // OK also when the stopped run ended before the request reached the store.
    ASSERT_TRUE(status.ok()) << status.error_code() << ": " << status.error_message();
  }
}

}  // namespace
}  // namespace mantissa
