#include "client/training_commands.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"
#include "mantissa/v1/training.grpc.pb.h"
#include "tests/client/cli_binary.h"
#include "tests/client/test_jobs.h"

namespace mantissa::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

// Answers from canned data and records what the CLI sent.
class FakeTrainingService final : public v1::TrainingService::Service {
 public:
  grpc::Status SubmitJob(grpc::ServerContext*, const v1::SubmitJobRequest* request,
                         v1::SubmitJobResponse* response) override {
    std::lock_guard<std::mutex> lock(mutex);
    submitted = request->spec();
    submissions.push_back(request->spec());
    const std::string& precision = request->spec().precision();
    if (auto refusal = refusals.find(precision); refusal != refusals.end()) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, refusal->second);
    }
    v1::Job* job = response->mutable_job();
    *job = RunningJob();
    job->set_state(v1::QUEUED);
    *job->mutable_spec() = request->spec();
    // With outcomes per precision, every job gets its own id and WatchJob
    // plays that job to its outcome.
    if (auto outcome = outcomes.find(precision); outcome != outcomes.end()) {
      job->set_id(absl::StrCat("c", submissions.size()));
      v1::Job done = outcome->second;
      done.set_id(job->id());
      *done.mutable_spec() = request->spec();
      finished[job->id()] = {*job, done};
    }
    return grpc::Status::OK;
  }

  grpc::Status GetJob(grpc::ServerContext*, const v1::GetJobRequest* request,
                      v1::GetJobResponse* response) override {
    if (request->job_id() == "busy") {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the daemon is shutting down");
    }
    if (request->job_id() != "j1") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND,
                          absl::StrCat("no job '", request->job_id(), "'"));
    }
    *response->mutable_job() = get_job;
    return grpc::Status::OK;
  }

  grpc::Status ListJobs(grpc::ServerContext* context, const v1::ListJobsRequest* request,
                        v1::ListJobsResponse* response) override {
    list_request = *request;
    for (const v1::Job& job : jobs) *response->add_jobs() = job;
    response->set_next_page_token(next_page_token);
    for (const auto& [key, value] : list_trailers) context->AddTrailingMetadata(key, value);
    return grpc::Status::OK;
  }

  grpc::Status CancelJob(grpc::ServerContext*, const v1::CancelJobRequest* request,
                         v1::CancelJobResponse* response) override {
    *response->mutable_job() = RunningJob();
    response->mutable_job()->set_id(request->job_id());
    if (request->job_id() == "queued") {
      response->mutable_job()->set_state(v1::CANCELLED);
    } else {
      response->mutable_job()->set_cancel_requested(true);
    }
    return grpc::Status::OK;
  }

  grpc::Status WatchJob(grpc::ServerContext*, const v1::WatchJobRequest* request,
                        grpc::ServerWriter<v1::JobEvent>* writer) override {
    if (request->job_id() == "missing") return grpc::Status(grpc::StatusCode::NOT_FOUND, "no job");
    std::vector<v1::JobEvent> to_send = events;
    {
      std::lock_guard<std::mutex> lock(mutex);
      watched.push_back(request->job_id());
      if (auto job = finished.find(request->job_id()); job != finished.end()) {
        to_send = {MakeEvent(v1::JobEvent::SNAPSHOT, job->second.first),
                   MakeEvent(v1::JobEvent::FINISHED, job->second.second)};
      }
    }
    for (const v1::JobEvent& event : to_send) writer->Write(event);
    return grpc::Status::OK;
  }

  grpc::Status GetCapabilities(grpc::ServerContext*, const v1::GetCapabilitiesRequest*,
                               v1::GetCapabilitiesResponse* response) override {
    response->set_device("cpu");
    response->set_device_name("x86_64");
    response->set_libtorch_version("2.3.0");
    response->set_mantissa_version("0.1.0");
    response->set_intra_op_threads(8);
    response->set_max_concurrent_jobs(2);
    response->set_worker_id("w1");
    response->set_job_store("postgresql");
    v1::PrecisionSupport* full = response->add_precisions();
    full->set_precision("32-true");
    full->set_supported(true);
    full->set_runs_as("32-true");
    full->add_aliases("32");
    full->add_aliases("fp32");
    v1::PrecisionSupport* half = response->add_precisions();
    half->set_precision("16-true");
    half->set_reason("no fp16 kernels on cpu");
    response->add_models("mlp");
    response->add_datasets("synthetic");
    response->add_optimizers("sgd");
    response->add_optimizers("adamw");
    return grpc::Status::OK;
  }

  static v1::JobEvent MakeEvent(v1::JobEvent::Type type, const v1::Job& job) {
    v1::JobEvent event;
    event.set_type(type);
    *event.mutable_job() = job;
    return event;
  }

  std::mutex mutex;
  v1::Job get_job = RunningJob();  // what GetJob answers for "j1"
  v1::JobSpec submitted;
  std::vector<v1::JobSpec> submissions;
  std::vector<std::string> watched;
  v1::ListJobsRequest list_request;
  std::vector<v1::Job> jobs;
  std::string next_page_token;  // what ListJobs answers with
  std::map<std::string, std::string> list_trailers;
  std::vector<v1::JobEvent> events;
  // Precision -> the FAILED_PRECONDITION message SubmitJob answers with.
  std::map<std::string, std::string> refusals;
  // Precision -> how its job ends.
  std::map<std::string, v1::Job> outcomes;
  // Job id -> (as submitted, as finished).
  std::map<std::string, std::pair<v1::Job, v1::Job>> finished;
};

v1::JobEvent Event(v1::JobEvent::Type type, const v1::Job& job) {
  return FakeTrainingService::MakeEvent(type, job);
}

std::vector<std::string> Labels(const std::vector<CompareEntry>& entries) {
  std::vector<std::string> labels;
  for (const CompareEntry& entry : entries) labels.push_back(entry.label);
  return labels;
}

// Entries that name only a precision.
std::vector<CompareEntry> Entries(const std::vector<std::string>& precisions) {
  std::vector<CompareEntry> entries;
  for (const std::string& precision : precisions) entries.push_back({precision, precision, {}});
  return entries;
}

class CommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // A real loopback port rather than an in-process channel: telling a down
    // daemon from an error it sent depends on the channel's connectivity.
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_NE(port_, 0);
    client_ = TrainingClient::Connect(absl::StrCat("127.0.0.1:", port_));
    io_.out = &out_;
    io_.err = &err_;
    io_.time_zone = absl::UTCTimeZone();
  }

  void TearDown() override { server_->Shutdown(); }

  void SucceedingEvents(v1::JobState final_state) {
    v1::Job queued = RunningJob();
    queued.set_state(v1::QUEUED);
    v1::Job done = SucceededJob();
    done.set_state(final_state);
    if (final_state == v1::FAILED) done.set_error("loss became NaN");
    service_.events = {Event(v1::JobEvent::SNAPSHOT, queued),
                       Event(v1::JobEvent::PROGRESS, RunningJob()),
                       Event(v1::JobEvent::FINISHED, done)};
  }

  FakeTrainingService service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<TrainingClient> client_;
  std::ostringstream out_;
  std::ostringstream err_;
  CommandIo io_;
};

TEST(BuildJobSpecTest, SetsOnlyTheGivenFields) {
  SubmitOptions options;
  options.model = "mlp";
  options.steps = 0;  // given, so sent even though it is zero
  auto spec = BuildJobSpec(options);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->model(), "mlp");
  EXPECT_TRUE(spec->has_steps());
  EXPECT_FALSE(spec->has_epochs());
  EXPECT_FALSE(spec->has_batch_size());
  EXPECT_FALSE(spec->has_lr());
  EXPECT_FALSE(spec->has_weight_decay());
  EXPECT_FALSE(spec->has_momentum());
  EXPECT_FALSE(spec->has_progress_every_n_steps());
  EXPECT_FALSE(spec->has_eval());
  EXPECT_FALSE(spec->has_eps());
  EXPECT_FALSE(spec->has_gradient_clip_norm());
  EXPECT_FALSE(spec->has_memory_baseline_steps());
  EXPECT_FALSE(spec->has_grad_scaler());
  EXPECT_FALSE(spec->has_nesterov());
  EXPECT_FALSE(spec->has_accumulate_grad_batches());
  EXPECT_FALSE(spec->has_checkpoint_every_n_steps());
  EXPECT_FALSE(spec->has_fp8());
  EXPECT_FALSE(spec->has_cuda_graph());
  EXPECT_EQ(spec->resume_from(), "");
}

TEST(BuildJobSpecTest, SetsNesterovAccumulationCheckpointsAndResume) {
  SubmitOptions options;
  options.nesterov = true;
  options.accumulate_grad_batches = 4;
  options.checkpoint_every_n_steps = 200;
  options.resume_from = "j7";
  auto spec = BuildJobSpec(options);
  ASSERT_TRUE(spec.ok()) << spec.status();
  ASSERT_TRUE(spec->has_nesterov());
  EXPECT_TRUE(spec->nesterov());
  ASSERT_TRUE(spec->has_accumulate_grad_batches());
  EXPECT_EQ(spec->accumulate_grad_batches(), 4);
  ASSERT_TRUE(spec->has_checkpoint_every_n_steps());
  EXPECT_EQ(spec->checkpoint_every_n_steps(), 200);
  EXPECT_EQ(spec->resume_from(), "j7");
}

TEST(BuildJobSpecTest, ExplicitFalseNesterovAndZeroCheckpointIntervalAreSent) {
  SubmitOptions options;
  options.nesterov = false;
  options.checkpoint_every_n_steps = 0;  // "only at the end", given explicitly
  auto spec = BuildJobSpec(options);
  ASSERT_TRUE(spec.ok()) << spec.status();
  ASSERT_TRUE(spec->has_nesterov());
  EXPECT_FALSE(spec->nesterov());
  ASSERT_TRUE(spec->has_checkpoint_every_n_steps());
  EXPECT_EQ(spec->checkpoint_every_n_steps(), 0);
  EXPECT_FALSE(spec->has_accumulate_grad_batches());
}

TEST(BuildJobSpecTest, EmptyResumeFromIsAUsageError) {
  for (const char* empty : {"", "  "}) {
    SubmitOptions options;
    options.resume_from = empty;
    auto spec = BuildJobSpec(options);
    ASSERT_FALSE(spec.ok()) << "'" << empty << "'";
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(spec.status().message()), StartsWith("--resume-from is empty"));
  }
}

TEST(BuildJobSpecTest, MaxDurationAndKeepCheckpointsAreSent) {
  SubmitOptions options;
  options.max_duration = "1h30m";
  options.keep_checkpoints = 3;
  auto spec = BuildJobSpec(options);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->max_duration().seconds(), 5400);
  EXPECT_EQ(spec->max_duration().nanos(), 0);
  EXPECT_EQ(spec->keep_checkpoints(), 3);
  options.max_duration = "250ms";
  spec = BuildJobSpec(options);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->max_duration().seconds(), 0);
  EXPECT_EQ(spec->max_duration().nanos(), 250'000'000);
  for (const char* bad : {"5x", "0s", "-1m", "inf"}) {
    options.max_duration = bad;
    auto refused = BuildJobSpec(options);
    ASSERT_FALSE(refused.ok()) << bad;
    EXPECT_NE(std::string(refused.status().message()).find("--max-duration"), std::string::npos);
  }
}

TEST(BuildJobSpecTest, DevicesAndNumNodesAreSentOnlyWhenGiven) {
  SubmitOptions options;
  auto spec = BuildJobSpec(options);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_FALSE(spec->has_devices());
  EXPECT_FALSE(spec->has_num_nodes());
  options.devices = 2;
  options.num_nodes = 0;  // given, so sent: the daemon refuses it with its range
  spec = BuildJobSpec(options);
  ASSERT_TRUE(spec.ok()) << spec.status();
  ASSERT_TRUE(spec->has_devices());
  EXPECT_EQ(spec->devices(), 2);
  ASSERT_TRUE(spec->has_num_nodes());
  EXPECT_EQ(spec->num_nodes(), 0);
}

TEST(BuildJobSpecTest, DevicesAndNumNodesMustFitTheirFields) {
  SubmitOptions options;
  options.devices = int64_t{1} << 32;
  auto refused = BuildJobSpec(options);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(refused.status().message(), "--devices: '4294967296' is out of range");
  options.devices.reset();
  options.num_nodes = -(int64_t{1} << 40);
  refused = BuildJobSpec(options);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().message(), "--num-nodes: '-1099511627776' is out of range");
}

TEST(BuildResumeSpecTest, SetsOnlyTheJobAndTheName) {
  auto spec = BuildResumeSpec("j7", ResumeOptions());
  ASSERT_TRUE(spec.ok()) << spec.status();
  v1::JobSpec expected;
  expected.set_resume_from("j7");
  EXPECT_EQ(spec->SerializeAsString(), expected.SerializeAsString()) << spec->DebugString();

  ResumeOptions named;
  named.name = "second half";
  spec = BuildResumeSpec("j7", named);
  ASSERT_TRUE(spec.ok()) << spec.status();
  expected.set_name("second half");
  EXPECT_EQ(spec->SerializeAsString(), expected.SerializeAsString()) << spec->DebugString();
}

TEST(BuildResumeSpecTest, EmptyJobIsAUsageError) {
  for (const char* empty : {"", " "}) {
    auto spec = BuildResumeSpec(empty, ResumeOptions());
    ASSERT_FALSE(spec.ok()) << "'" << empty << "'";
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(spec.status().message()), StartsWith("JOB is empty"));
  }
}

TEST(BuildJobSpecTest, SetsThePrecisionSettings) {
  SubmitOptions options;
  options.eps = 1e-6;
  options.gradient_clip_norm = 1.0;
  options.memory_baseline_steps = 0;  // given, so "off" reaches the daemon
  options.grad_scaler_enabled = true;
  options.grad_scaler_init_scale = 1024;
  options.grad_scaler_growth_factor = 4;
  options.grad_scaler_backoff_factor = 0.25;
  options.grad_scaler_growth_interval = 100;
  auto spec = BuildJobSpec(options);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_DOUBLE_EQ(spec->eps(), 1e-6);
  EXPECT_DOUBLE_EQ(spec->gradient_clip_norm(), 1.0);
  ASSERT_TRUE(spec->has_memory_baseline_steps());
  EXPECT_EQ(spec->memory_baseline_steps(), 0);
  const v1::GradScalerSettings& scaler = spec->grad_scaler();
  ASSERT_TRUE(scaler.has_enabled());
  EXPECT_TRUE(scaler.enabled());
  EXPECT_DOUBLE_EQ(scaler.init_scale(), 1024);
  EXPECT_DOUBLE_EQ(scaler.growth_factor(), 4);
  EXPECT_DOUBLE_EQ(scaler.backoff_factor(), 0.25);
  EXPECT_EQ(scaler.growth_interval(), 100);
}

TEST(BuildJobSpecTest, ExplicitlyDisabledScalerIsSent) {
  SubmitOptions options;
  options.grad_scaler_enabled = false;
  auto spec = BuildJobSpec(options);
  ASSERT_TRUE(spec.ok()) << spec.status();
  ASSERT_TRUE(spec->has_grad_scaler());
  ASSERT_TRUE(spec->grad_scaler().has_enabled());
  EXPECT_FALSE(spec->grad_scaler().enabled());
  EXPECT_FALSE(spec->grad_scaler().has_init_scale());
  EXPECT_FALSE(spec->grad_scaler().has_growth_interval());
}

TEST(BuildJobSpecTest, OneScalerSettingLeavesTheOthersUnset) {
  SubmitOptions options;
  options.grad_scaler_growth_interval = 50;
  auto spec = BuildJobSpec(options);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_FALSE(spec->grad_scaler().has_enabled());
  EXPECT_FALSE(spec->grad_scaler().has_init_scale());
  EXPECT_EQ(spec->grad_scaler().growth_interval(), 50);
}

TEST(BuildJobSpecTest, SetsTheFp8RecipeAndCudaGraph) {
  SubmitOptions options;
  options.precision = "transformer-engine";
  options.fp8_format = "E4M3";
  options.fp8_amax_history_len = 16;
  options.fp8_amax_compute_algo = "most_recent";
  options.fp8_margin = 0;  // given, so sent even though it is the default
  options.cuda_graph = false;
  auto spec = BuildJobSpec(options);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->fp8().fp8_format(), "E4M3");
  EXPECT_EQ(spec->fp8().amax_history_len(), 16);
  EXPECT_EQ(spec->fp8().amax_compute_algo(), "most_recent");
  ASSERT_TRUE(spec->fp8().has_margin());
  EXPECT_EQ(spec->fp8().margin(), 0);
  ASSERT_TRUE(spec->has_cuda_graph());
  EXPECT_FALSE(spec->cuda_graph());
}

TEST(BuildJobSpecTest, Bf16UpdateIsSentOnlyWhenGiven) {
  SubmitOptions options;
  auto unset = BuildJobSpec(options);
  ASSERT_TRUE(unset.ok()) << unset.status();
  EXPECT_EQ(unset->bf16_update(), "");
  // The daemon knows the valid values; any text is passed on for it to check.
  options.bf16_update = "kahan";
  auto spec = BuildJobSpec(options);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->bf16_update(), "kahan");
}

TEST(BuildJobSpecTest, OneFp8SettingLeavesTheOthersUnset) {
  SubmitOptions options;
  options.fp8_margin = 1;
  auto spec = BuildJobSpec(options);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->fp8().fp8_format(), "");
  EXPECT_FALSE(spec->fp8().has_amax_history_len());
  EXPECT_EQ(spec->fp8().margin(), 1);
}

TEST(BuildCompareRequestTest, SplitsThePrecisionsAndKeepsTheSpec) {
  CompareOptions options;
  options.spec.model = "mlp";
  options.spec.steps = 20;
  options.spec.grad_scaler_enabled = false;
  options.spec.accumulate_grad_batches = 2;
  options.spec.checkpoint_every_n_steps = 10;
  options.precisions = "32-true, bf16-mixed,16-mixed";
  auto request = BuildCompareRequest(options);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_THAT(Labels(request->entries), ElementsAre("32-true", "bf16-mixed", "16-mixed"));
  for (const CompareEntry& entry : request->entries) {
    EXPECT_EQ(entry.precision, entry.label);
    EXPECT_FALSE(entry.bf16_update.has_value());
  }
  EXPECT_EQ(request->spec.model(), "mlp");
  EXPECT_EQ(request->spec.steps(), 20);
  EXPECT_EQ(request->spec.accumulate_grad_batches(), 2);
  EXPECT_EQ(request->spec.checkpoint_every_n_steps(), 10);
  EXPECT_FALSE(request->spec.grad_scaler().enabled());
  EXPECT_TRUE(request->spec.precision().empty());
}

TEST(BuildCompareRequestTest, EntriesMayNameAnUpdateRounding) {
  CompareOptions options;
  options.spec.bf16_update = "stochastic";
  options.precisions = "bf16-mixed, bf16-true,bf16-true:kahan , 16-true : nearest";
  auto request = BuildCompareRequest(options);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_THAT(Labels(request->entries),
              ElementsAre("bf16-mixed", "bf16-true", "bf16-true:kahan", "16-true:nearest"));
  const std::vector<CompareEntry>& entries = request->entries;
  EXPECT_EQ(entries[2].precision, "bf16-true");
  EXPECT_EQ(entries[2].bf16_update, "kahan");
  EXPECT_EQ(entries[3].precision, "16-true");
  EXPECT_EQ(entries[3].bf16_update, "nearest");
  EXPECT_FALSE(entries[1].bf16_update.has_value());
  // --bf16-update is the default of the entries that name none.
  EXPECT_EQ(request->spec.bf16_update(), "stochastic");
  // The same precision with and without an update are two entries.
  options.precisions = "bf16-true,bf16-true:nearest";
  EXPECT_TRUE(BuildCompareRequest(options).ok());
}

TEST(BuildCompareRequestTest, AnEmptyPartOfAnEntryIsNamed) {
  CompareOptions options;
  options.precisions = "bf16-true:";
  auto no_update = BuildCompareRequest(options);
  ASSERT_FALSE(no_update.ok());
  EXPECT_EQ(no_update.status().message(),
            "--precisions: 'bf16-true:' has no update after the ':'; give nearest, stochastic or "
            "kahan");
  options.precisions = "32-true, :kahan";
  auto no_precision = BuildCompareRequest(options);
  ASSERT_FALSE(no_precision.ok());
  EXPECT_EQ(no_precision.status().message(),
            "--precisions: ':kahan' has no precision before the ':'");
}

TEST(BuildCompareRequestTest, PrecisionsAreRequiredAndNonEmpty) {
  CompareOptions options;
  auto missing = BuildCompareRequest(options);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(missing.status().message()), StartsWith("--precisions is required"));

  for (const char* bad :
       {"", " ", "32-true,,bf16-mixed", "32-true,", "32-true,32-true",
        "bf16-true:", "bf16-true: ", ":kahan", "bf16-true:kahan,bf16-true : kahan"}) {
    options.precisions = bad;
    auto request = BuildCompareRequest(options);
    ASSERT_FALSE(request.ok()) << bad;
    EXPECT_EQ(request.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(request.status().message()), StartsWith("--precisions")) << bad;
  }

  options.precisions = "32-true";
  options.spec.model_options = {"hidden"};
  EXPECT_FALSE(BuildCompareRequest(options).ok());
}

TEST(BuildJobSpecTest, FillsEveryField) {
  SubmitOptions options;
  options.model = "mlp";
  options.dataset = "synthetic";
  options.precision = "bf16-mixed";
  options.epochs = 3;
  options.batch_size = 32;
  options.optimizer = "sgd";
  options.lr = 0.1;
  options.weight_decay = 0.5;
  options.momentum = 0.9;
  options.seed = 42;
  options.name = "run";
  options.progress_every_n_steps = 5;
  options.eval_every_n_steps = 50;
  options.eval_max_batches = 4;
  options.eval_batch_size = 256;
  options.no_eval = true;
  options.model_options = {"hidden=128", "act=gelu=fast"};
  options.dataset_options = {"size="};
  auto spec = BuildJobSpec(options);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->dataset(), "synthetic");
  EXPECT_EQ(spec->precision(), "bf16-mixed");
  EXPECT_EQ(spec->epochs(), 3);
  EXPECT_EQ(spec->batch_size(), 32);
  EXPECT_EQ(spec->optimizer(), "sgd");
  EXPECT_DOUBLE_EQ(spec->lr(), 0.1);
  EXPECT_DOUBLE_EQ(spec->weight_decay(), 0.5);
  EXPECT_DOUBLE_EQ(spec->momentum(), 0.9);
  EXPECT_EQ(spec->seed(), 42u);
  EXPECT_EQ(spec->name(), "run");
  EXPECT_EQ(spec->progress_every_n_steps(), 5);
  EXPECT_EQ(spec->eval().every_n_steps(), 50);
  EXPECT_EQ(spec->eval().max_batches(), 4);
  EXPECT_EQ(spec->eval().batch_size(), 256);
  EXPECT_TRUE(spec->eval().disabled());
  EXPECT_EQ(spec->model_options().at("hidden"), "128");
  EXPECT_EQ(spec->model_options().at("act"), "gelu=fast");
  EXPECT_EQ(spec->dataset_options().at("size"), "");
}

TEST(BuildJobSpecTest, OptionWithoutEqualsIsAUsageError) {
  SubmitOptions options;
  options.dataset_options = {"size"};
  auto spec = BuildJobSpec(options);
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(spec.status().message(), "--dataset-option: 'size' is not KEY=VALUE");

  options.dataset_options = {"=1"};
  EXPECT_FALSE(BuildJobSpec(options).ok());
}

TEST(BuildJobSpecTest, RepeatedKeyIsAUsageError) {
  SubmitOptions options;
  options.model_options = {"hidden=1", "hidden=2"};
  auto spec = BuildJobSpec(options);
  ASSERT_FALSE(spec.ok());
  EXPECT_THAT(std::string(spec.status().message()), HasSubstr("--model-option"));
}

TEST(BuildListRequestTest, StatesAreCaseInsensitive) {
  ListOptions options;
  options.states = {"running", "Queued"};
  options.limit = 5;
  auto request = BuildListRequest(options);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_THAT(request->states(), ElementsAre(v1::RUNNING, v1::QUEUED));
  EXPECT_EQ(request->limit(), 5);
}

TEST(BuildListRequestTest, RejectsUnknownStatesAndHugeLimits) {
  ListOptions options;
  options.states = {"done"};
  auto bad_state = BuildListRequest(options);
  ASSERT_FALSE(bad_state.ok());
  EXPECT_THAT(std::string(bad_state.status().message()), StartsWith("--state: "));

  ListOptions big;
  big.limit = int64_t{1} << 40;
  auto bad_limit = BuildListRequest(big);
  ASSERT_FALSE(bad_limit.ok());
  EXPECT_THAT(std::string(bad_limit.status().message()), StartsWith("--limit: "));
}

TEST(BuildListRequestTest, SendsTheFiltersAndThePageToken) {
  ListOptions options;
  options.model = "mlp";
  options.precision = "bf16-mixed";
  options.name = "sweep 3";
  options.limit = 2;
  options.page_token = "p42";
  auto request = BuildListRequest(options);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->model(), "mlp");
  EXPECT_EQ(request->precision(), "bf16-mixed");
  EXPECT_EQ(request->name(), "sweep 3");
  EXPECT_EQ(request->limit(), 2);
  EXPECT_EQ(request->page_token(), "p42");

  auto none = BuildListRequest(ListOptions());
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(none->SerializeAsString(), "");
}

TEST(BuildListRequestTest, EmptyFiltersAndNegativeLimitsAreUsageErrors) {
  ListOptions empty_model;
  empty_model.model = "";
  auto model = BuildListRequest(empty_model);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().message(), "--model: is empty; leave the flag out for any");

  ListOptions empty_token;
  empty_token.page_token = "";
  auto token = BuildListRequest(empty_token);
  ASSERT_FALSE(token.ok());
  EXPECT_THAT(std::string(token.status().message()), StartsWith("--page-token: is empty"));

  ListOptions negative;
  negative.limit = -1;
  auto limit = BuildListRequest(negative);
  ASSERT_FALSE(limit.ok());
  EXPECT_EQ(limit.status().message(), "--limit: must be >= 0 (0 = all), got -1");
}

TEST_F(CommandsTest, SubmitSendsTheSpecAndPrintsTheJob) {
  SubmitOptions options;
  options.model = "mlp";
  options.precision = "16-mixed";
  options.steps = 10;
  const v1::JobSpec spec = BuildJobSpec(options).value();
  EXPECT_EQ(RunSubmit(*client_, spec, /*wait=*/false, io_), kExitOk);
  EXPECT_EQ(service_.submitted.model(), "mlp");
  EXPECT_EQ(service_.submitted.steps(), 10);
  EXPECT_FALSE(service_.submitted.has_epochs());
  EXPECT_EQ(out_.str(),
            "job j1 submitted: QUEUED, precision bf16-mixed (requested 16-mixed)\n"
            "warning: 16-mixed runs as bf16-mixed on cpu\n");
  EXPECT_EQ(err_.str(), "");
}

TEST_F(CommandsTest, SubmitJsonPrintsTheResponse) {
  io_.json = true;
  EXPECT_EQ(RunSubmit(*client_, v1::JobSpec(), /*wait=*/false, io_), kExitOk);
  v1::SubmitJobResponse parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(out_.str(), &parsed).ok()) << out_.str();
  EXPECT_EQ(parsed.job().id(), "j1");
  EXPECT_EQ(parsed.job().state(), v1::QUEUED);
}

TEST_F(CommandsTest, SubmitWaitExitsZeroOnlyOnSuccess) {
  SucceedingEvents(v1::SUCCEEDED);
  EXPECT_EQ(RunSubmit(*client_, v1::JobSpec(), /*wait=*/true, io_), kExitOk);
  EXPECT_THAT(out_.str(), HasSubstr("job j1 submitted"));
  EXPECT_THAT(out_.str(), HasSubstr("step 100/938 epoch 1/1"));
  EXPECT_THAT(out_.str(), HasSubstr("job j1 SUCCEEDED in 1m05s: final loss 0.3012, eval accuracy "
                                    "88.45%"));
  // submit already named the job; the watch does not announce it again.
  EXPECT_THAT(out_.str(), Not(HasSubstr("job j1: QUEUED")));

  SucceedingEvents(v1::FAILED);
  out_.str("");
  EXPECT_EQ(RunSubmit(*client_, v1::JobSpec(), /*wait=*/true, io_), kExitFailure);
  EXPECT_THAT(out_.str(), HasSubstr("job j1 FAILED: loss became NaN\n"));
}

TEST_F(CommandsTest, ResumeSubmitsTheResumeSpecAndNamesTheJobItContinues) {
  const v1::JobSpec spec = BuildResumeSpec("j0", ResumeOptions()).value();
  EXPECT_EQ(RunSubmit(*client_, spec, /*wait=*/false, io_), kExitOk);
  EXPECT_EQ(service_.submitted.resume_from(), "j0");
  EXPECT_EQ(service_.submitted.model(), "");
  EXPECT_FALSE(service_.submitted.has_steps());
  EXPECT_EQ(out_.str(),
            "job j1 submitted: QUEUED, precision bf16-mixed, resuming job j0\n"
            "warning: 16-mixed runs as bf16-mixed on cpu\n");
  EXPECT_EQ(err_.str(), "");
}

TEST_F(CommandsTest, ResumeWaitFollowsTheJobAndPrintsCheckpoints) {
  v1::Job queued = RunningJob();
  queued.set_state(v1::QUEUED);
  v1::Job checkpointed = RunningJob();
  checkpointed.mutable_checkpoint()->set_step(100);
  checkpointed.mutable_checkpoint()->set_path("/state/jobs/j1/checkpoint.pt");
  checkpointed.mutable_checkpoint()->set_bytes(1258291);
  v1::Job done = SucceededJob();
  service_.events = {Event(v1::JobEvent::SNAPSHOT, queued),
                     Event(v1::JobEvent::CHECKPOINT, checkpointed),
                     Event(v1::JobEvent::FINISHED, done)};
  const v1::JobSpec spec = BuildResumeSpec("j0", ResumeOptions()).value();
  EXPECT_EQ(RunSubmit(*client_, spec, /*wait=*/true, io_), kExitOk);
  EXPECT_THAT(out_.str(), HasSubstr("resuming job j0\n"));
  EXPECT_THAT(out_.str(),
              HasSubstr("checkpoint at step 100: /state/jobs/j1/checkpoint.pt (1.20 MiB)\n"));
  EXPECT_THAT(out_.str(), HasSubstr("job j1 SUCCEEDED in 1m05s"));

  done.set_state(v1::CANCELLED);
  service_.events.back() = Event(v1::JobEvent::FINISHED, done);
  out_.str("");
  EXPECT_EQ(RunSubmit(*client_, spec, /*wait=*/true, io_), kExitFailure);
  EXPECT_THAT(out_.str(), HasSubstr("job j1 CANCELLED at step 938/938\n"));
}

TEST_F(CommandsTest, WatchPrintsEventsAndTheOutcome) {
  SucceedingEvents(v1::SUCCEEDED);
  EXPECT_EQ(RunWatch(*client_, "j1", io_), kExitOk);
  EXPECT_EQ(out_.str(),
            "job j1: QUEUED\n"
            "step 100/938 epoch 1/1 loss 0.5123 12345 items/s\n"
            "job j1 SUCCEEDED in 1m05s: final loss 0.3012, eval accuracy 88.45%, eval loss "
            "0.3100\n");
}

TEST_F(CommandsTest, WatchOfACancelledJobFails) {
  SucceedingEvents(v1::CANCELLED);
  EXPECT_EQ(RunWatch(*client_, "j1", io_), kExitFailure);
}

TEST_F(CommandsTest, WatchEndingEarlyFails) {
  service_.events = {Event(v1::JobEvent::SNAPSHOT, RunningJob())};
  EXPECT_EQ(RunWatch(*client_, "j1", io_), kExitFailure);
  EXPECT_THAT(out_.str(), HasSubstr("job j1 is RUNNING\n"));
  EXPECT_THAT(err_.str(), HasSubstr("before job j1 finished"));
}

TEST_F(CommandsTest, WatchJsonPrintsOneEventPerLine) {
  SucceedingEvents(v1::SUCCEEDED);
  io_.json = true;
  EXPECT_EQ(RunWatch(*client_, "j1", io_), kExitOk);
  std::vector<std::string> lines = absl::StrSplit(out_.str(), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u) << out_.str();
  v1::JobEvent last;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(lines[2], &last).ok());
  EXPECT_EQ(last.type(), v1::JobEvent::FINISHED);
  EXPECT_EQ(last.job().state(), v1::SUCCEEDED);
}

TEST_F(CommandsTest, WatchErrorsFromTheDaemonAreReported) {
  EXPECT_EQ(RunWatch(*client_, "missing", io_), kExitFailure);
  EXPECT_EQ(err_.str(), "mantissa: NOT_FOUND: no job\n");
}

TEST_F(CommandsTest, GetPrintsTheJobView) {
  EXPECT_EQ(RunGet(*client_, "j1", io_), kExitOk);
  EXPECT_THAT(out_.str(), StartsWith("ID:             j1\n"));
  EXPECT_THAT(out_.str(), HasSubstr("State:          RUNNING\n"));
}

TEST_F(CommandsTest, GetJsonPrintsZeroFieldsToo) {
  io_.json = true;
  EXPECT_EQ(RunGet(*client_, "j1", io_), kExitOk);
  EXPECT_THAT(out_.str(), HasSubstr("\"state\": \"RUNNING\""));
  EXPECT_THAT(out_.str(), HasSubstr("\"cancelRequested\": false"));
  v1::GetJobResponse parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(out_.str(), &parsed).ok());
  EXPECT_EQ(parsed.job().progress().step(), 100);
  // Unset optional fields stay absent rather than reading as 0.
  EXPECT_FALSE(parsed.job().result().has_eval_accuracy());
  EXPECT_FALSE(parsed.job().has_checkpoint());
}

TEST_F(CommandsTest, GetJsonCarriesTheCheckpointAndStartStep) {
  v1::Job resumed = RunningJob();
  resumed.mutable_spec()->set_resume_from("j0");
  resumed.set_start_step(400);
  resumed.mutable_checkpoint()->set_step(500);
  resumed.mutable_checkpoint()->set_path("/state/jobs/j1/checkpoint.pt");
  resumed.mutable_checkpoint()->set_bytes(2048);
  resumed.mutable_checkpoint()->mutable_time()->set_seconds(1700000060);
  resumed.mutable_result()->set_eval_perplexity(12.5);
  service_.get_job = resumed;
  io_.json = true;
  EXPECT_EQ(RunGet(*client_, "j1", io_), kExitOk);
  EXPECT_THAT(out_.str(), HasSubstr("\"startStep\": \"400\""));
  EXPECT_THAT(out_.str(), HasSubstr("\"resumeFrom\": \"j0\""));
  EXPECT_THAT(out_.str(), HasSubstr("\"evalPerplexity\": 12.5"));
  EXPECT_THAT(out_.str(), HasSubstr("\"time\": \"2023-11-14T22:14:20Z\""));
  v1::GetJobResponse parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(out_.str(), &parsed).ok());
  EXPECT_EQ(parsed.job().checkpoint().step(), 500);
  EXPECT_EQ(parsed.job().checkpoint().path(), "/state/jobs/j1/checkpoint.pt");
  EXPECT_EQ(parsed.job().checkpoint().bytes(), 2048);
}

TEST_F(CommandsTest, ServerErrorsNameTheirCode) {
  EXPECT_EQ(RunGet(*client_, "nope", io_), kExitFailure);
  EXPECT_EQ(err_.str(), "mantissa: NOT_FOUND: no job 'nope'\n");
  EXPECT_EQ(out_.str(), "");
}

TEST_F(CommandsTest, UnavailableFromAConnectedDaemonIsNotAConnectionError) {
  EXPECT_EQ(RunGet(*client_, "busy", io_), kExitFailure);
  EXPECT_EQ(err_.str(), "mantissa: UNAVAILABLE: the daemon is shutting down\n");
}

TEST_F(CommandsTest, ListPassesTheFilterAndPrintsATable) {
  service_.jobs = {SucceededJob()};
  v1::ListJobsRequest request;
  request.add_states(v1::SUCCEEDED);
  request.set_limit(3);
  EXPECT_EQ(RunList(*client_, request, io_), kExitOk);
  EXPECT_THAT(service_.list_request.states(), ElementsAre(v1::SUCCEEDED));
  EXPECT_EQ(service_.list_request.limit(), 3);
  std::vector<std::string> lines = absl::StrSplit(out_.str(), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_THAT(lines[0], StartsWith("ID  NAME      MODEL  DATASET    PRECISION   STATE"));
  EXPECT_THAT(lines[1], StartsWith("j1  baseline  mlp    synthetic  bf16-mixed  SUCCEEDED"));
}

TEST_F(CommandsTest, ListEndsWithTheNextPageWhenThereIsOne) {
  service_.jobs = {SucceededJob()};
  service_.next_page_token = "p17";
  v1::ListJobsRequest request;
  request.set_limit(1);
  request.set_name("baseline");
  EXPECT_EQ(RunList(*client_, request, io_), kExitOk);
  EXPECT_EQ(service_.list_request.name(), "baseline");
  std::vector<std::string> lines = absl::StrSplit(out_.str(), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[2], "next page: --page-token p17");
  EXPECT_EQ(err_.str(), "");
}

TEST_F(CommandsTest, ListJsonCarriesTheTokenAndNoNextPageLine) {
  service_.jobs = {SucceededJob()};
  service_.next_page_token = "p17";
  io_.json = true;
  EXPECT_EQ(RunList(*client_, v1::ListJobsRequest(), io_), kExitOk);
  EXPECT_THAT(out_.str(), HasSubstr("\"nextPageToken\": \"p17\""));
  EXPECT_THAT(out_.str(), Not(HasSubstr("next page:")));
}

TEST_F(CommandsTest, ListSaysWhatTheSizeCapLeftOutOrSkipped) {
  service_.jobs = {SucceededJob()};
  service_.next_page_token = "p9";
  service_.list_trailers = {{"mantissa-jobs-left-out", "2"}, {"mantissa-jobs-skipped", "1"}};
  EXPECT_EQ(RunList(*client_, v1::ListJobsRequest(), io_), kExitOk);
  EXPECT_THAT(out_.str(), HasSubstr("next page: --page-token p9\n"));
  EXPECT_THAT(err_.str(), HasSubstr("mantissa: 2 older job(s) not shown: the answer is capped at "
                                    "4 MiB; the next page starts with them"));
  EXPECT_THAT(err_.str(), HasSubstr("mantissa: 1 job(s) skipped: each record is larger than an "
                                    "answer may be (4 MiB)\n"));
}

TEST_F(CommandsTest, EmptyList) {
  EXPECT_EQ(RunList(*client_, v1::ListJobsRequest(), io_), kExitOk);
  EXPECT_EQ(out_.str(), "no jobs\n");
}

TEST_F(CommandsTest, CancelMessages) {
  EXPECT_EQ(RunCancel(*client_, "queued", io_), kExitOk);
  EXPECT_EQ(out_.str(), "job queued cancelled\n");
  out_.str("");
  EXPECT_EQ(RunCancel(*client_, "abc", io_), kExitOk);
  EXPECT_EQ(out_.str(), "cancellation requested for job abc (running; it stops within one step)\n");
}

TEST_F(CommandsTest, Capabilities) {
  EXPECT_EQ(RunCapabilities(*client_, io_), kExitOk);
  EXPECT_EQ(out_.str(),
            "Device:               cpu\n"
            "Device name:          x86_64\n"
            "LibTorch:             2.3.0\n"
            "mantissad:            0.1.0\n"
            "Intra-op threads:     8\n"
            "Max concurrent jobs:  2\n"
            "Worker:               w1\n"
            "Job store:            postgresql\n"
            "\n"
            "PRECISION  SUPPORTED  RUNS AS  ALIASES   REASON\n"
            "32-true    yes        32-true  32, fp32\n"
            "16-true    no         -        -         no fp16 kernels on cpu\n"
            "\n"
            "Models:      mlp\n"
            "Datasets:    synthetic\n"
            "Optimizers:  sgd, adamw\n");
}

class CompareTest : public CommandsTest {
 protected:
  // 16-true is refused; the others succeed with their own numbers.
  void SetUp() override {
    CommandsTest::SetUp();
    service_.refusals["16-true"] = "16-true needs a CUDA device; this daemon runs on cpu";
    v1::Job full = SucceededJob();
    full.set_effective_precision("32-true");
    full.mutable_progress()->set_step_seconds(0.004);
    full.mutable_progress()->set_items_per_second(16000);
    full.mutable_memory()->set_peak_bytes(2621440);
    full.mutable_memory()->set_baseline_fp32_peak_bytes(2621440);
    full.mutable_memory()->set_savings_ratio(0);
    full.mutable_memory()->set_exact(true);
    service_.outcomes["32-true"] = full;
    v1::Job mixed = ScaledJob();
    mixed.set_effective_precision("bf16-mixed");
    mixed.mutable_progress()->set_step_seconds(0.003);
    mixed.mutable_progress()->set_items_per_second(21333);
    mixed.mutable_memory()->set_exact(true);
    service_.outcomes["16-mixed"] = mixed;
    request_.spec.set_model("mlp");
    request_.spec.set_steps(200);
    request_.entries = Entries({"32-true", "16-true", "16-mixed"});
  }

  CompareRequest request_;
};

TEST_F(CompareTest, RunsEveryPrecisionAndListsTheRefusedOne) {
  EXPECT_EQ(RunCompare(*client_, request_, io_), kExitOk);
  ASSERT_EQ(service_.submissions.size(), 3u);
  EXPECT_EQ(service_.submissions[0].precision(), "32-true");
  EXPECT_EQ(service_.submissions[1].precision(), "16-true");
  EXPECT_EQ(service_.submissions[2].precision(), "16-mixed");
  for (const v1::JobSpec& spec : service_.submissions) {
    EXPECT_EQ(spec.model(), "mlp");
    EXPECT_EQ(spec.steps(), 200);
  }
  // Only the submitted jobs are waited for, in order.
  EXPECT_THAT(service_.watched, ElementsAre("c1", "c3"));
  EXPECT_EQ(out_.str(),
            "PRECISION  RUNS AS     STATE      STEP MS  ITEMS/S  PEAK MEM  FP32 BASELINE  SAVINGS"
            "  SKIPPED  FINAL LOSS  ACCURACY\n"
            "32-true    32-true     SUCCEEDED     4.00    16000  2.50 MiB       2.50 MiB     0.0%"
            "        -      0.3012    88.45%\n"
            "16-true    -           refused          -        -         -              -        -"
            "        -           -         -\n"
            "16-mixed   bf16-mixed  SUCCEEDED     3.00    21333  1.50 MiB       2.50 MiB    40.0%"
            "        3      0.3012    88.45%\n"
            "\n"
            "16-true refused: 16-true needs a CUDA device; this daemon runs on cpu\n");
  EXPECT_EQ(err_.str(),
            "submitted 32-true as job c1\n"
            "16-true refused: FAILED_PRECONDITION: 16-true needs a CUDA device; this daemon runs "
            "on cpu\n"
            "submitted 16-mixed as job c3\n"
            "32-true SUCCEEDED (1/2)\n"
            "16-mixed SUCCEEDED (2/2)\n");
}

TEST_F(CompareTest, AJobThatDoesNotSucceedFailsTheCommand) {
  v1::Job failed = service_.outcomes["16-mixed"];
  failed.set_state(v1::FAILED);
  failed.set_error("loss became NaN");
  service_.outcomes["16-mixed"] = failed;
  EXPECT_EQ(RunCompare(*client_, request_, io_), kExitFailure);
  EXPECT_THAT(out_.str(), HasSubstr("\n16-mixed   bf16-mixed  FAILED "));
  EXPECT_THAT(out_.str(), HasSubstr("\n16-mixed FAILED: loss became NaN\n"));
  EXPECT_THAT(err_.str(), HasSubstr("16-mixed FAILED (2/2)\n"));
}

TEST_F(CompareTest, EveryPrecisionRefusedFails) {
  request_.entries = Entries({"16-true"});
  EXPECT_EQ(RunCompare(*client_, request_, io_), kExitFailure);
  EXPECT_THAT(out_.str(), HasSubstr("16-true    -        refused"));
  EXPECT_THAT(err_.str(), HasSubstr("mantissa: the daemon refused every precision\n"));
  EXPECT_THAT(service_.watched, ::testing::IsEmpty());
}

TEST_F(CompareTest, JsonHoldsTheJobsAndTheRefusals) {
  io_.json = true;
  EXPECT_EQ(RunCompare(*client_, request_, io_), kExitOk);
  google::protobuf::Struct parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(out_.str(), &parsed).ok()) << out_.str();
  const auto& jobs = parsed.fields().at("jobs").list_value();
  ASSERT_EQ(jobs.values_size(), 2);
  EXPECT_EQ(jobs.values(0).struct_value().fields().at("id").string_value(), "c1");
  EXPECT_EQ(jobs.values(1).struct_value().fields().at("state").string_value(), "SUCCEEDED");
  const auto& refused = parsed.fields().at("refused").list_value();
  ASSERT_EQ(refused.values_size(), 1);
  EXPECT_EQ(refused.values(0).struct_value().fields().at("precision").string_value(), "16-true");
  EXPECT_EQ(refused.values(0).struct_value().fields().at("error").string_value(),
            "16-true needs a CUDA device; this daemon runs on cpu");
}

TEST_F(CompareTest, EachEntrySubmitsItsUpdateRoundingAndLabelsItsRow) {
  v1::Job half = SucceededJob();
  half.set_effective_precision("bf16-true");
  service_.outcomes["bf16-true"] = half;
  request_.spec.set_bf16_update("stochastic");
  request_.entries = Entries({"bf16-true"});
  request_.entries.push_back({"bf16-true:kahan", "bf16-true", "kahan"});
  EXPECT_EQ(RunCompare(*client_, request_, io_), kExitOk);
  ASSERT_EQ(service_.submissions.size(), 2u);
  EXPECT_EQ(service_.submissions[0].precision(), "bf16-true");
  EXPECT_EQ(service_.submissions[0].bf16_update(), "stochastic");
  EXPECT_EQ(service_.submissions[1].precision(), "bf16-true");
  EXPECT_EQ(service_.submissions[1].bf16_update(), "kahan");
  EXPECT_THAT(out_.str(), HasSubstr("\nbf16-true        bf16-true  SUCCEEDED "));
  EXPECT_THAT(out_.str(), HasSubstr("\nbf16-true:kahan  bf16-true  SUCCEEDED "));
  EXPECT_EQ(err_.str(),
            "submitted bf16-true as job c1\n"
            "submitted bf16-true:kahan as job c2\n"
            "bf16-true SUCCEEDED (1/2)\n"
            "bf16-true:kahan SUCCEEDED (2/2)\n");
}

TEST_F(CompareTest, AJobTheWatchLeavesUnfinishedFailsTheCommand) {
  service_.outcomes.clear();  // every job gets id j1, whose watch the fake ends at once
  service_.events = {};
  request_.entries = Entries({"32-true"});
  EXPECT_EQ(RunCompare(*client_, request_, io_), kExitFailure);
  // The watch ended without a terminal state and GetJob says RUNNING.
  EXPECT_THAT(err_.str(), HasSubstr("before job j1 finished"));
  EXPECT_THAT(out_.str(), HasSubstr("32-true    bf16-mixed  RUNNING"));
}

// Runs the `mantissa` binary against the fake daemon, so that the flags and
// the command table (client/command_table.h) are covered too.
class CliBinaryTest : public CommandsTest {
 protected:
  using Result = CliResult;

  Result Run(std::vector<std::string> args) {
    args.insert(args.begin(), absl::StrCat("--server=127.0.0.1:", port_));
    return RunCliBinary(std::move(args));
  }
};

TEST_F(CliBinaryTest, SubmitFlagsReachTheSpec) {
  const Result result =
      Run({"submit", "--model=mlp", "--optimizer=sgd", "--momentum=0.9", "--nesterov",
           "--accumulate-grad-batches=4", "--checkpoint-every", "200"});
  EXPECT_EQ(result.exit_code, kExitOk) << result.err;
  EXPECT_THAT(result.out, StartsWith("job j1 submitted: QUEUED"));
  const v1::JobSpec& spec = service_.submitted;
  EXPECT_EQ(spec.model(), "mlp");
  EXPECT_TRUE(spec.has_nesterov());
  EXPECT_TRUE(spec.nesterov());
  EXPECT_EQ(spec.accumulate_grad_batches(), 4);
  EXPECT_EQ(spec.checkpoint_every_n_steps(), 200);
  EXPECT_EQ(spec.resume_from(), "");
}

TEST_F(CliBinaryTest, DevicesAndNumNodesReachTheSpec) {
  const Result result = Run({"submit", "--model=mlp", "--devices", "2", "--num-nodes=3"});
  EXPECT_EQ(result.exit_code, kExitOk) << result.err;
  EXPECT_EQ(service_.submitted.devices(), 2);
  EXPECT_EQ(service_.submitted.num_nodes(), 3);

  const Result word = Run({"submit", "--devices=two"});
  EXPECT_EQ(word.exit_code, kExitUsage);
  EXPECT_THAT(word.err, StartsWith("mantissa submit: --devices: 'two' is not an integer"));
  const Result huge = Run({"submit", "--num-nodes=3000000000"});
  EXPECT_EQ(huge.exit_code, kExitUsage);
  EXPECT_THAT(huge.err, StartsWith("mantissa submit: --num-nodes: '3000000000' is out of range"));
  EXPECT_EQ(service_.submissions.size(), 1u);
}

TEST_F(CliBinaryTest, FlagsLeftOutStayUnset) {
  const Result result = Run({"submit", "--model=mlp"});
  EXPECT_EQ(result.exit_code, kExitOk) << result.err;
  EXPECT_FALSE(service_.submitted.has_nesterov());
  EXPECT_FALSE(service_.submitted.has_accumulate_grad_batches());
  EXPECT_FALSE(service_.submitted.has_checkpoint_every_n_steps());
  EXPECT_EQ(service_.submitted.resume_from(), "");
}

TEST_F(CliBinaryTest, NesterovFalseIsSentAndResumeFromReachesTheSpec) {
  const Result result = Run({"submit", "--nesterov=false", "--resume-from=j0"});
  EXPECT_EQ(result.exit_code, kExitOk) << result.err;
  ASSERT_TRUE(service_.submitted.has_nesterov());
  EXPECT_FALSE(service_.submitted.nesterov());
  EXPECT_EQ(service_.submitted.resume_from(), "j0");
}

TEST_F(CliBinaryTest, CompareTakesTheNewTrainingFlagsButNotResumeFrom) {
  service_.outcomes["32-true"] = SucceededJob();
  const Result result = Run({"compare", "--precisions=32-true", "--accumulate-grad-batches=2",
                             "--checkpoint-every=50", "--nesterov"});
  EXPECT_EQ(result.exit_code, kExitOk) << result.err;
  ASSERT_EQ(service_.submissions.size(), 1u);
  EXPECT_EQ(service_.submissions[0].accumulate_grad_batches(), 2);
  EXPECT_EQ(service_.submissions[0].checkpoint_every_n_steps(), 50);
  EXPECT_TRUE(service_.submissions[0].nesterov());

  const Result refused = Run({"compare", "--precisions=32-true", "--resume-from=j0"});
  EXPECT_EQ(refused.exit_code, kExitUsage);
  EXPECT_THAT(refused.err, StartsWith("mantissa compare: unknown flag --resume-from"));
  EXPECT_EQ(service_.submissions.size(), 1u);
}

TEST_F(CliBinaryTest, Bf16UpdateReachesTheSpecAndItsHelpNamesTheValues) {
  const Result result = Run({"submit", "--precision=bf16-true", "--bf16-update", "kahan"});
  EXPECT_EQ(result.exit_code, kExitOk) << result.err;
  EXPECT_EQ(service_.submitted.precision(), "bf16-true");
  EXPECT_EQ(service_.submitted.bf16_update(), "kahan");
  EXPECT_EQ(Run({"submit", "--model=mlp"}).exit_code, kExitOk);
  EXPECT_EQ(service_.submitted.bf16_update(), "");

  const Result help = Run({"help", "submit"});
  EXPECT_THAT(help.out, HasSubstr("  --bf16-update=MODE "));
  EXPECT_THAT(help.out, HasSubstr("bf16-true and 16-true: "));
  EXPECT_THAT(help.out, HasSubstr("nearest (default), stochastic or kahan\n"));
}

TEST_F(CliBinaryTest, CompareEntriesCarryTheirUpdateRounding) {
  service_.outcomes["bf16-true"] = SucceededJob();
  const Result result = Run({"compare", "--precisions=bf16-true,bf16-true:kahan", "--steps=5"});
  EXPECT_EQ(result.exit_code, kExitOk) << result.err;
  ASSERT_EQ(service_.submissions.size(), 2u);
  EXPECT_EQ(service_.submissions[0].bf16_update(), "");
  EXPECT_EQ(service_.submissions[1].bf16_update(), "kahan");
  EXPECT_THAT(result.out, HasSubstr("\nbf16-true:kahan "));

  for (const char* bad : {"--precisions=bf16-true:", "--precisions=bf16-true,bf16-true"}) {
    const Result usage = Run({"compare", bad});
    EXPECT_EQ(usage.exit_code, kExitUsage) << bad;
    EXPECT_THAT(usage.err, StartsWith("mantissa compare: --precisions: ")) << bad;
  }
  EXPECT_EQ(service_.submissions.size(), 2u);
}

TEST_F(CliBinaryTest, ResumeSubmitsOnlyTheJobAndTheName) {
  const Result result = Run({"resume", "j0", "--name=part 2"});
  EXPECT_EQ(result.exit_code, kExitOk) << result.err;
  v1::JobSpec expected;
  expected.set_resume_from("j0");
  expected.set_name("part 2");
  EXPECT_EQ(service_.submitted.SerializeAsString(), expected.SerializeAsString())
      << service_.submitted.DebugString();
  EXPECT_EQ(result.out,
            "job j1 submitted: QUEUED, precision bf16-mixed, resuming job j0\n"
            "warning: 16-mixed runs as bf16-mixed on cpu\n");
}

TEST_F(CliBinaryTest, ResumeWaitExitsLikeSubmitWait) {
  SucceedingEvents(v1::SUCCEEDED);
  Result result = Run({"resume", "--wait", "j0"});
  EXPECT_EQ(result.exit_code, kExitOk) << result.err;
  EXPECT_THAT(result.out, HasSubstr("job j1 SUCCEEDED in 1m05s"));

  SucceedingEvents(v1::FAILED);
  result = Run({"resume", "j0", "--wait"});
  EXPECT_EQ(result.exit_code, kExitFailure);
  EXPECT_THAT(result.out, HasSubstr("job j1 FAILED: loss became NaN\n"));
}

TEST_F(CliBinaryTest, ResumeWithoutAJobIsAUsageError) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"resume"}, std::vector<std::string>{"resume", "--wait"}}) {
    const Result result = Run(args);
    EXPECT_EQ(result.exit_code, kExitUsage);
    EXPECT_EQ(result.err, "mantissa resume: missing JOB\nRun 'mantissa help resume' for usage.\n");
    EXPECT_EQ(result.out, "");
  }
  const Result empty = Run({"resume", ""});
  EXPECT_EQ(empty.exit_code, kExitUsage);
  EXPECT_THAT(empty.err, StartsWith("mantissa resume: JOB is empty"));
  const Result extra = Run({"resume", "j0", "j1"});
  EXPECT_EQ(extra.exit_code, kExitUsage);
  EXPECT_THAT(extra.err, StartsWith("mantissa resume: unexpected argument 'j1'"));
  // Training flags are not resume's: the new job takes the old job's spec.
  const Result steps = Run({"resume", "j0", "--steps=10"});
  EXPECT_EQ(steps.exit_code, kExitUsage);
  EXPECT_THAT(steps.err, StartsWith("mantissa resume: unknown flag --steps"));
  EXPECT_TRUE(service_.submissions.empty());
}

TEST_F(CliBinaryTest, UnknownCommandsAndFlagsListTheValidOnes) {
  const Result command = Run({"train"});
  EXPECT_EQ(command.exit_code, kExitUsage);
  EXPECT_THAT(command.err, StartsWith("mantissa: unknown command 'train'\nCommands: submit,"));
  EXPECT_THAT(command.err, HasSubstr(" delete-model,"));
  EXPECT_EQ(Run({"help", "train"}).err, command.err);

  const Result flag = Run({"list", "--limt=3"});
  EXPECT_EQ(flag.exit_code, kExitUsage);
  EXPECT_EQ(flag.err,
            "mantissa list: unknown flag --limt\n"
            "Flags of list: --state, --model, --precision, --name, --limit,\n"
            "  --page-token, and the global flags\n"
            "Run 'mantissa help list' for usage.\n");
  EXPECT_TRUE(service_.submissions.empty());
}

TEST_F(CliBinaryTest, ListFlagsReachTheRequest) {
  service_.jobs = {SucceededJob()};
  service_.next_page_token = "p3";
  const Result result = Run({"list", "--state=succeeded", "--model", "mlp", "--precision",
                             "bf16-mixed", "--name=baseline", "--limit=1", "--page-token", "p8"});
  EXPECT_EQ(result.exit_code, kExitOk) << result.err;
  const v1::ListJobsRequest& request = service_.list_request;
  EXPECT_THAT(request.states(), ElementsAre(v1::SUCCEEDED));
  EXPECT_EQ(request.model(), "mlp");
  EXPECT_EQ(request.precision(), "bf16-mixed");
  EXPECT_EQ(request.name(), "baseline");
  EXPECT_EQ(request.limit(), 1);
  EXPECT_EQ(request.page_token(), "p8");
  EXPECT_THAT(result.out, HasSubstr("\nnext page: --page-token p3\n"));

  const Result empty = Run({"list", "--name="});
  EXPECT_EQ(empty.exit_code, kExitUsage);
  EXPECT_THAT(empty.err, StartsWith("mantissa list: --name: is empty"));
  const Result help = Run({"help", "list"});
  for (const char* flag :
       {"--model=MODEL ", "--precision=PRECISION ", "--name=TEXT ", "--page-token=TOKEN "}) {
    EXPECT_THAT(help.out, HasSubstr(flag));
  }
}

TEST_F(CliBinaryTest, HelpListsResumeAndTheNewFlags) {
  const Result usage = Run({"help"});
  EXPECT_EQ(usage.exit_code, kExitOk);
  EXPECT_THAT(usage.out, HasSubstr("  resume JOB "));
  const Result submit = Run({"help", "submit"});
  for (const char* flag : {"--nesterov ", "--accumulate-grad-batches=N ", "--checkpoint-every=N ",
                           "--resume-from=JOB "}) {
    EXPECT_THAT(submit.out, HasSubstr(flag));
  }
  const Result resume = Run({"help", "resume"});
  EXPECT_THAT(resume.out, StartsWith("Usage: mantissa [GLOBAL FLAGS] resume [FLAGS] JOB\n"));
  EXPECT_THAT(resume.out, HasSubstr("  --name=TEXT "));
}

// A port that was free a moment ago, so that nothing answers on it.
int UnusedPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    close(fd);
    return 1;
  }
  close(fd);
  return ntohs(address.sin_port);
}

TEST(UnreachableTest, SaysTheDaemonCannotBeReached) {
  const std::string target = absl::StrCat("127.0.0.1:", UnusedPort());
  std::unique_ptr<TrainingClient> client = TrainingClient::Connect(target);
  std::ostringstream out;
  std::ostringstream err;
  CommandIo io;
  io.out = &out;
  io.err = &err;
  EXPECT_EQ(RunList(*client, v1::ListJobsRequest(), io), kExitFailure);
  EXPECT_THAT(err.str(),
              StartsWith(absl::StrCat("mantissa: cannot reach mantissad at ", target, ": ")));
  EXPECT_EQ(out.str(), "");
}

TEST(UnreachableTest, CompareStopsWhenTheDaemonCannotBeReached) {
  std::unique_ptr<TrainingClient> client =
      TrainingClient::Connect(absl::StrCat("127.0.0.1:", UnusedPort()));
  std::ostringstream out;
  std::ostringstream err;
  CommandIo io;
  io.out = &out;
  io.err = &err;
  CompareRequest request;
  request.entries = Entries({"32-true", "bf16-mixed"});
  EXPECT_EQ(RunCompare(*client, request, io), kExitFailure);
  EXPECT_THAT(err.str(), StartsWith("mantissa: cannot reach mantissad at "));
  // One failed call, not one refusal per precision.
  EXPECT_THAT(err.str(), Not(HasSubstr("32-true refused")));
  EXPECT_EQ(out.str(), "");
}

TEST(DescribeErrorTest, PrefixesTheCode) {
  EXPECT_EQ(DescribeError(absl::InvalidArgumentError("steps must be positive")),
            "INVALID_ARGUMENT: steps must be positive");
  EXPECT_EQ(DescribeError(absl::UnimplementedError("")), "UNIMPLEMENTED");
}

}  // namespace
}  // namespace mantissa::cli
