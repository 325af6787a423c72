#include "client/commands.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"
#include "mantissa/v1/training.grpc.pb.h"
#include "tests/client/test_jobs.h"

namespace mantissa::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// Answers from canned data and records what the CLI sent.
class FakeTrainingService final : public v1::TrainingService::Service {
 public:
  grpc::Status SubmitJob(grpc::ServerContext*, const v1::SubmitJobRequest* request,
                         v1::SubmitJobResponse* response) override {
    submitted = request->spec();
    v1::Job* job = response->mutable_job();
    *job = RunningJob();
    job->set_state(v1::QUEUED);
    *job->mutable_spec() = request->spec();
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
    *response->mutable_job() = RunningJob();
    return grpc::Status::OK;
  }

  grpc::Status ListJobs(grpc::ServerContext*, const v1::ListJobsRequest* request,
                        v1::ListJobsResponse* response) override {
    list_request = *request;
    for (const v1::Job& job : jobs) *response->add_jobs() = job;
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
    for (const v1::JobEvent& event : events) writer->Write(event);
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
    v1::PrecisionSupport* full = response->add_precisions();
    full->set_precision("32-true");
    full->set_supported(true);
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

  v1::JobSpec submitted;
  v1::ListJobsRequest list_request;
  std::vector<v1::Job> jobs;
  std::vector<v1::JobEvent> events;
};

v1::JobEvent Event(v1::JobEvent::Type type, const v1::Job& job) {
  v1::JobEvent event;
  event.set_type(type);
  *event.mutable_job() = job;
  return event;
}

class CommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // A real loopback port rather than an in-process channel: telling a down
    // daemon from an error it sent depends on the channel's connectivity.
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_NE(port, 0);
    client_ = TrainingClient::Connect(absl::StrCat("127.0.0.1:", port));
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
            "\n"
            "PRECISION  SUPPORTED  ALIASES   REASON\n"
            "32-true    yes        32, fp32\n"
            "16-true    no         -         no fp16 kernels on cpu\n"
            "\n"
            "Models:      mlp\n"
            "Datasets:    synthetic\n"
            "Optimizers:  sgd, adamw\n");
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

TEST(DescribeErrorTest, PrefixesTheCode) {
  EXPECT_EQ(DescribeError(absl::InvalidArgumentError("steps must be positive")),
            "INVALID_ARGUMENT: steps must be positive");
  EXPECT_EQ(DescribeError(absl::UnimplementedError("")), "UNIMPLEMENTED");
}

}  // namespace
}  // namespace mantissa::cli
