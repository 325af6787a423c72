#include "client/model_commands.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/tensor_bytes.h"
#include "gmock/gmock.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"
#include "inference/grpc_service.grpc.pb.h"
#include "mantissa/v1/serving.grpc.pb.h"
#include "tests/client/cli_binary.h"

namespace mantissa::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

v1::ModelVersionStatus ReadyVersion(const std::string& name) {
  v1::ModelVersionStatus status;
  status.mutable_config()->set_name(name);
  status.mutable_config()->set_version(1);
  status.mutable_config()->set_precision("bf16-true");
  status.mutable_config()->set_source_job_id("j1");
  status.set_state("READY");
  return status;
}

// Answers from canned data and records what the CLI sent.
class FakeModelService final : public v1::ModelService::Service {
 public:
  grpc::Status ExportModel(grpc::ServerContext*, const v1::ExportModelRequest* request,
                           v1::ExportModelResponse* response) override {
    std::lock_guard<std::mutex> lock(mu);
    exported = *request;
    if (request->job_id() != "j1") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, absl::StrCat("no job ", request->job_id()));
    }
    *response->mutable_model() = ReadyVersion(request->name());
    if (request->precision() == "16-true") {
      response->mutable_model()->set_state("UNAVAILABLE");
      response->mutable_model()->set_reason("non-finite outputs");
    }
    return grpc::Status::OK;
  }
  grpc::Status RegisterModel(grpc::ServerContext*, const v1::RegisterModelRequest* request,
                             v1::RegisterModelResponse* response) override {
    std::lock_guard<std::mutex> lock(mu);
    registered = *request;
    *response->mutable_model() = ReadyVersion(request->name());
    return grpc::Status::OK;
  }
  grpc::Status ListModels(grpc::ServerContext*, const v1::ListModelsRequest*,
                          v1::ListModelsResponse* response) override {
    v1::ModelStatus* model = response->add_models();
    model->set_name("mlp");
    *model->add_versions() = ReadyVersion("mlp");
    model->add_served_versions(1);
    if (!list_pinned) return grpc::Status::OK;
    // Rolled back to version 1: version 2, the newest, does not serve.
    v1::ModelStatus* pinned = response->add_models();
    pinned->set_name("pinned");
    *pinned->add_versions() = ReadyVersion("pinned");
    v1::ModelVersionStatus* newer = pinned->add_versions();
    newer->mutable_config()->set_name("pinned");
    newer->mutable_config()->set_version(2);
    newer->set_state("UNAVAILABLE");
    newer->set_reason("not selected by the version policy (specific 1)");
    pinned->add_served_versions(1);
    return grpc::Status::OK;
  }

  grpc::Status SetVersionPolicy(grpc::ServerContext*, const v1::SetVersionPolicyRequest* request,
                                v1::SetVersionPolicyResponse* response) override {
    std::lock_guard<std::mutex> lock(mu);
    policy = *request;
    v1::ModelStatus& model = *response->mutable_model();
    model.set_name(request->name());
    *model.mutable_version_policy() = request->version_policy();
    model.add_served_versions(1);
    model.add_served_versions(2);
    return grpc::Status::OK;
  }
  grpc::Status RollbackModel(grpc::ServerContext*, const v1::RollbackModelRequest* request,
                             v1::RollbackModelResponse* response) override {
    if (request->version() == 99) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "version: model m has no version 99");
    }
    v1::ModelStatus& model = *response->mutable_model();
    model.set_name(request->name());
    model.mutable_version_policy()->mutable_specific()->add_versions(request->version());
    model.add_served_versions(request->version());
    return grpc::Status::OK;
  }

  std::mutex mu;
  v1::ExportModelRequest exported;
  v1::RegisterModelRequest registered;
  v1::SetVersionPolicyRequest policy;
  std::atomic<bool> list_pinned{false};  // ListModels adds "pinned"
};

class FakeInferenceService final : public inference::GRPCInferenceService::Service {
 public:
  grpc::Status ModelMetadata(grpc::ServerContext*, const inference::ModelMetadataRequest* request,
                             inference::ModelMetadataResponse* response) override {
    if (request->name() != "mlp") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, absl::StrCat("no model ", request->name()));
    }
    response->set_name("mlp");
    auto* input = response->add_inputs();
    input->set_name("input");
    input->set_datatype("BF16");
    input->add_shape(-1);  // the batch dimension, as mantissad declares it
    input->add_shape(4);
    return grpc::Status::OK;
  }
  grpc::Status ModelInfer(grpc::ServerContext*, const inference::ModelInferRequest* request,
                          inference::ModelInferResponse* response) override {
    std::lock_guard<std::mutex> lock(mu);
    inferred = *request;
    if (request->inputs_size() == 0 || request->inputs(0).shape_size() == 0) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no inputs");
    }
    response->set_model_name(request->model_name());
    response->set_model_version("1");
    auto* output = response->add_outputs();
    output->set_name("logits");
    output->set_datatype("BF16");
    const int64_t batch = request->inputs(0).shape(0);
    output->add_shape(batch);
    output->add_shape(2);
    std::vector<double> logits;
    for (int64_t i = 0; i < batch; ++i) logits.insert(logits.end(), {1.0, i + 2.0});
    *response->add_raw_output_contents() = *EncodeValues("BF16", logits);
    return grpc::Status::OK;
  }
  grpc::Status RepositoryModelLoad(grpc::ServerContext*,
                                   const inference::RepositoryModelLoadRequest* request,
                                   inference::RepositoryModelLoadResponse*) override {
    std::lock_guard<std::mutex> lock(mu);
    loaded = request->model_name();
    return grpc::Status::OK;
  }
  grpc::Status RepositoryModelUnload(grpc::ServerContext*,
                                     const inference::RepositoryModelUnloadRequest* request,
                                     inference::RepositoryModelUnloadResponse*) override {
    if (request->model_name() != "mlp") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "no model x");
    }
    return grpc::Status::OK;
  }

  grpc::Status ModelStatistics(grpc::ServerContext*,
                               const inference::ModelStatisticsRequest* request,
                               inference::ModelStatisticsResponse* response) override {
    inference::ModelStatistics& m = *response->add_model_stats();
    m.set_name(request->name().empty() ? "mlp" : request->name());
    m.set_version(request->version().empty() ? "1" : request->version());
    m.mutable_inference_stats()->mutable_success()->set_count(2);
    return grpc::Status::OK;
  }

  std::mutex mu;
  inference::ModelInferRequest inferred;
  std::string loaded;
};

class ModelCommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&models_);
    builder.RegisterService(&inference_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    client_ = ModelClient::Connect(absl::StrCat("127.0.0.1:", port_));
    io_.out = &out_;
    io_.err = &err_;
  }
  void TearDown() override { server_->Shutdown(); }

  FakeModelService models_;
  FakeInferenceService inference_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<ModelClient> client_;
  std::ostringstream out_;
  std::ostringstream err_;
  CommandIo io_;
};

std::string WriteTemp(const std::string& text) {
  char path[] = "/tmp/mantissa_infer_test_XXXXXX";
  const int fd = mkstemp(path);
  EXPECT_GE(fd, 0);
  close(fd);
  std::ofstream(path) << text;
  return path;
}

TEST(BuildExportRequestTest, NameIsRequiredAndSettingsAreOptional) {
  ExportOptions options;
  EXPECT_THAT(std::string(BuildExportRequest("j1", options).status().message()),
              StartsWith("--name is required"));
  options.name = "mlp";
  absl::StatusOr<v1::ExportModelRequest> request = BuildExportRequest("j1", options);
  ASSERT_TRUE(request.ok());
  EXPECT_EQ(request->job_id(), "j1");
  EXPECT_EQ(request->name(), "mlp");
  EXPECT_EQ(request->precision(), "");
  EXPECT_FALSE(request->has_batching());

  options.serving.precision = "32-true";
  options.serving.max_batch_size = 8;
  options.serving.max_queue_delay_us = 0;
  request = BuildExportRequest("j1", options);
  ASSERT_TRUE(request.ok());
  EXPECT_EQ(request->precision(), "32-true");
  EXPECT_EQ(request->batching().max_batch_size(), 8);
  // An explicit 0 is sent, not left for the default.
  ASSERT_TRUE(request->batching().has_max_queue_delay_us());
  EXPECT_EQ(request->batching().max_queue_delay_us(), 0);

  options.serving.max_batch_size = int64_t{1} << 40;
  EXPECT_THAT(std::string(BuildExportRequest("j1", options).status().message()),
              HasSubstr("out of range"));
  EXPECT_THAT(std::string(BuildExportRequest(" ", ExportOptions{.name = "x"}).status().message()),
              StartsWith("JOB is empty"));
}

TEST(BuildExportRequestTest, PromotionIsSentOnlyWhenGiven) {
  ExportOptions options{.name = "mlp"};
  absl::StatusOr<v1::ExportModelRequest> request = BuildExportRequest("j1", options);
  ASSERT_TRUE(request.ok());
  EXPECT_FALSE(request->has_promotion());
  options.promotion.max_mean_rel_diff = 0.01;
  request = BuildExportRequest("j1", options);
  ASSERT_TRUE(request.ok());
  ASSERT_TRUE(request->has_promotion());
  EXPECT_FALSE(request->promotion().has_min_top1_agreement());
  EXPECT_EQ(request->promotion().max_mean_rel_diff(), 0.01);
  options.promotion.min_top1_agreement = 1.5;
  EXPECT_THAT(std::string(BuildExportRequest("j1", options).status().message()),
              StartsWith("--min-top1-agreement: must be in [0, 1], got 1.5"));
  options.promotion.min_top1_agreement = 0.99;
  options.promotion.max_mean_rel_diff = -1;
  EXPECT_THAT(std::string(BuildExportRequest("j1", options).status().message()),
              StartsWith("--max-mean-rel-diff: must be finite and >= 0"));

  LoadOptions load;
  load.promotion.min_top1_agreement = 0.9;
  EXPECT_THAT(std::string(BuildLoadRequest("m", load).status().message()),
              HasSubstr("need --torchscript"));
  load.torchscript = "/m/net.pt";
  load.inputs = {"x:FP32:4"};
  load.outputs = {"y:FP32:2"};
  absl::StatusOr<LoadRequest> registration = BuildLoadRequest("m", load);
  ASSERT_TRUE(registration.ok()) << registration.status();
  EXPECT_EQ(registration->registration->promotion().min_top1_agreement(), 0.9);
}

TEST(BuildVersionPolicyRequestTest, LatestAllSpecific) {
  absl::StatusOr<v1::SetVersionPolicyRequest> request = BuildVersionPolicyRequest("m", {"latest"});
  ASSERT_TRUE(request.ok());
  EXPECT_EQ(request->name(), "m");
  EXPECT_EQ(request->version_policy().latest().num_versions(), 1u);
  request = BuildVersionPolicyRequest("m", {"latest", "3"});
  ASSERT_TRUE(request.ok());
  EXPECT_EQ(request->version_policy().latest().num_versions(), 3u);
  request = BuildVersionPolicyRequest("m", {"all"});
  ASSERT_TRUE(request.ok());
  EXPECT_TRUE(request->version_policy().has_all());
  request = BuildVersionPolicyRequest("m", {"specific", "1", "3"});
  ASSERT_TRUE(request.ok());
  EXPECT_THAT(request->version_policy().specific().versions(), ElementsAre(1, 3));

  struct Case {
    std::vector<std::string> args;
    std::string error;
  };
  for (const Case& c : std::vector<Case>{
           {{"latest", "0"}, "latest: '0' is not a number of versions (>= 1)"},
           {{"latest", "1", "2"}, "latest takes at most one number"},
           {{"all", "1"}, "all takes no versions"},
           {{"specific"}, "specific needs at least one version"},
           {{"specific", "x"}, "specific: 'x' is not a version"},
           {{"newest"}, "unknown policy 'newest'; give latest [N], all, or specific V [V...]"},
       }) {
    EXPECT_THAT(std::string(BuildVersionPolicyRequest("m", c.args).status().message()),
                StartsWith(c.error))
        << c.args[0];
  }
}

TEST(BuildRollbackRequestTest, VersionIsAPositiveInteger) {
  absl::StatusOr<v1::RollbackModelRequest> request = BuildRollbackRequest("m", "2");
  ASSERT_TRUE(request.ok());
  EXPECT_EQ(request->version(), 2);
  EXPECT_EQ(BuildRollbackRequest("m", "0").status().message(),
            "VERSION: '0' is not a version (an integer >= 1)");
  EXPECT_THAT(std::string(BuildRollbackRequest("", "1").status().message()),
              StartsWith("NAME is empty"));
}

TEST(BuildStatisticsRequestTest, ModelAndVersionAreOptional) {
  absl::StatusOr<inference::ModelStatisticsRequest> request = BuildStatisticsRequest({}, {});
  ASSERT_TRUE(request.ok());
  EXPECT_EQ(request->name(), "");
  request = BuildStatisticsRequest({"mlp"}, 2);
  ASSERT_TRUE(request.ok());
  EXPECT_EQ(request->name(), "mlp");
  EXPECT_EQ(request->version(), "2");
  EXPECT_THAT(std::string(BuildStatisticsRequest({}, 2).status().message()),
              StartsWith("--version needs a MODEL"));
  EXPECT_THAT(std::string(BuildStatisticsRequest({"a", "b"}, {}).status().message()),
              StartsWith("unexpected argument 'b'"));
}

TEST(ParseTensorSpecTest, ParsesNameDatatypeAndShape) {
  absl::StatusOr<v1::TensorSpec> spec = ParseTensorSpec("image:fp32:3,-1,32");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->name(), "image");
  EXPECT_EQ(spec->datatype(), "FP32");
  EXPECT_THAT(spec->shape(), ElementsAre(3, -1, 32));
  spec = ParseTensorSpec("x:INT64:");
  ASSERT_TRUE(spec.ok());
  EXPECT_TRUE(spec->shape().empty());

  EXPECT_THAT(std::string(ParseTensorSpec("x:FP32").status().message()),
              HasSubstr("is not NAME:DATATYPE:SHAPE"));
  EXPECT_THAT(std::string(ParseTensorSpec(":FP32:1").status().message()), HasSubstr("empty name"));
  EXPECT_THAT(std::string(ParseTensorSpec("x:FP64:1").status().message()),
              HasSubstr("datatype 'FP64' is not one of"));
  EXPECT_THAT(std::string(ParseTensorSpec("x:FP32:3,0").status().message()),
              HasSubstr("dimension '0' is not a size >= 1 or -1"));
  EXPECT_THAT(std::string(ParseTensorSpec("x:FP32:3,a").status().message()),
              HasSubstr("dimension 'a'"));
}

TEST(BuildLoadRequestTest, WithoutTorchscriptItReloads) {
  absl::StatusOr<LoadRequest> request = BuildLoadRequest("mlp", LoadOptions());
  ASSERT_TRUE(request.ok());
  EXPECT_EQ(request->load.model_name(), "mlp");
  EXPECT_FALSE(request->registration.has_value());

  LoadOptions stray;
  stray.inputs = {"x:FP32:1"};
  EXPECT_THAT(std::string(BuildLoadRequest("mlp", stray).status().message()),
              HasSubstr("need --torchscript"));
  LoadOptions precision;
  precision.serving.precision = "32-true";
  EXPECT_THAT(std::string(BuildLoadRequest("mlp", precision).status().message()),
              HasSubstr("need --torchscript"));
}

TEST(BuildLoadRequestTest, TorchscriptRegistersWithAnAbsolutePath) {
  LoadOptions options;
  options.torchscript = "models/../net.pt";
  EXPECT_THAT(std::string(BuildLoadRequest("net", options).status().message()),
              HasSubstr("at least one --input and one --output"));
  options.inputs = {"image:FP32:3,8,8", "ids:INT64:-1"};
  options.outputs = {"logits:FP32:10"};
  options.serving.max_batch_size = 16;
  absl::StatusOr<LoadRequest> request = BuildLoadRequest("net", options);
  ASSERT_TRUE(request.ok()) << request.status();
  ASSERT_TRUE(request->registration.has_value());
  const v1::RegisterModelRequest& registration = *request->registration;
  EXPECT_EQ(registration.name(), "net");
  EXPECT_EQ(registration.torchscript_path(),
            (std::filesystem::current_path() / "net.pt").lexically_normal().string());
  ASSERT_EQ(registration.inputs_size(), 2);
  EXPECT_EQ(registration.inputs(1).name(), "ids");
  EXPECT_THAT(registration.inputs(1).shape(), ElementsAre(-1));
  EXPECT_EQ(registration.outputs(0).name(), "logits");
  EXPECT_EQ(registration.batching().max_batch_size(), 16);
  EXPECT_FALSE(registration.batching().has_max_queue_delay_us());

  options.torchscript = "/abs/net.pt";
  EXPECT_EQ(BuildLoadRequest("net", options)->registration->torchscript_path(), "/abs/net.pt");
  options.outputs = {"logits:FP32:ten"};
  EXPECT_THAT(std::string(BuildLoadRequest("net", options).status().message()),
              StartsWith("--output 'logits:FP32:ten': dimension 'ten'"));
}

TEST(BuildInferPlanTest, InputOrRandom) {
  EXPECT_THAT(std::string(BuildInferPlan("m", InferOptions()).status().message()),
              StartsWith("give either --input FILE.json or --random"));
  InferOptions both;
  both.random = true;
  both.input = "x.json";
  EXPECT_FALSE(BuildInferPlan("m", both).ok());

  InferOptions random;
  random.random = true;
  random.batch = 3;
  random.output_fp32 = true;
  absl::StatusOr<InferPlan> plan = BuildInferPlan("m", random);
  ASSERT_TRUE(plan.ok());
  EXPECT_FALSE(plan->request.has_value());
  EXPECT_EQ(plan->random_batch, 3);
  EXPECT_TRUE(plan->output_fp32);
  EXPECT_EQ(plan->version, "");
  random.version = 2;
  ASSERT_TRUE(BuildInferPlan("m", random).ok());
  EXPECT_EQ(BuildInferPlan("m", random)->version, "2");
  random.version = 0;
  EXPECT_THAT(std::string(BuildInferPlan("m", random).status().message()),
              HasSubstr("--version: must be >= 1, got 0"));
  random.version.reset();
  random.batch = 0;
  EXPECT_THAT(std::string(BuildInferPlan("m", random).status().message()),
              HasSubstr("--batch: must be >= 1"));
}

TEST(BuildInferPlanTest, ReadsAndParsesTheInputFile) {
  const std::string path = WriteTemp(
      R"({"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]})");
  InferOptions options;
  options.input = path;
  absl::StatusOr<InferPlan> plan = BuildInferPlan("mlp", options);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_TRUE(plan->request.has_value());
  EXPECT_EQ(plan->request->model_name(), "mlp");
  EXPECT_EQ(plan->request->raw_input_contents(0).size(), 8u);
  options.batch = 2;
  EXPECT_THAT(std::string(BuildInferPlan("mlp", options).status().message()),
              HasSubstr("--batch goes with --random"));

  const std::string bad = WriteTemp(R"({"inputs": [{"name": "input"}]})");
  options = InferOptions();
  options.input = bad;
  EXPECT_EQ(BuildInferPlan("mlp", options).status().message(),
            absl::StrCat("--input ", bad, ": inputs[0].datatype: is required"));
  options.input = "/nonexistent/x.json";
  EXPECT_THAT(std::string(BuildInferPlan("mlp", options).status().message()),
              StartsWith("--input /nonexistent/x.json: cannot read: "));
  std::remove(path.c_str());
  std::remove(bad.c_str());
}

TEST_F(ModelCommandsTest, ExportPrintsTheVersionAndFailsUnlessReady) {
  v1::ExportModelRequest request;
  request.set_job_id("j1");
  request.set_name("mlp");
  EXPECT_EQ(RunExport(*client_, request, io_), kExitOk) << err_.str();
  EXPECT_EQ(out_.str(), "model mlp version 1: READY, bf16-true\n");
  EXPECT_EQ(models_.exported.name(), "mlp");

  out_.str("");
  request.set_precision("16-true");
  EXPECT_EQ(RunExport(*client_, request, io_), kExitFailure);
  EXPECT_THAT(out_.str(), HasSubstr("reason: non-finite outputs\n"));

  request.set_job_id("j9");
  EXPECT_EQ(RunExport(*client_, request, io_), kExitFailure);
  EXPECT_EQ(err_.str(), "mantissa: NOT_FOUND: no job j9\n");
}

TEST_F(ModelCommandsTest, LoadReloadsOrRegisters) {
  LoadRequest reload;
  reload.load.set_model_name("mlp");
  EXPECT_EQ(RunLoad(*client_, reload, io_), kExitOk) << err_.str();
  EXPECT_EQ(inference_.loaded, "mlp");
  EXPECT_EQ(out_.str(), "model mlp version 1: READY, bf16-true\n");

  // A reload under a policy that leaves the newest version out reports the
  // version that serves, and succeeds.
  out_.str("");
  models_.list_pinned = true;
  reload.load.set_model_name("pinned");
  EXPECT_EQ(RunLoad(*client_, reload, io_), kExitOk) << out_.str();
  EXPECT_EQ(out_.str(), "model pinned version 1: READY, bf16-true\n");

  out_.str("");
  LoadRequest registration;
  registration.load.set_model_name("net");
  registration.registration.emplace().set_name("net");
  registration.registration->set_torchscript_path("/m/net.pt");
  io_.json = true;
  EXPECT_EQ(RunLoad(*client_, registration, io_), kExitOk) << err_.str();
  EXPECT_EQ(models_.registered.torchscript_path(), "/m/net.pt");
  EXPECT_THAT(out_.str(), HasSubstr("\"state\": \"READY\""));
  EXPECT_THAT(out_.str(), StartsWith("{\n \"model\": {"));
}

TEST_F(ModelCommandsTest, ModelsPrintsTheTableOrJson) {
  EXPECT_EQ(RunModels(*client_, io_), kExitOk);
  EXPECT_THAT(out_.str(), StartsWith("NAME  VERSION  STATE  PRECISION  SOURCE"));
  EXPECT_THAT(out_.str(), HasSubstr("\nmlp         1  READY  bf16-true  j1"));
  out_.str("");
  io_.json = true;
  EXPECT_EQ(RunModels(*client_, io_), kExitOk);
  EXPECT_THAT(out_.str(), HasSubstr("\"name\": \"mlp\""));
}

TEST_F(ModelCommandsTest, VersionPolicyRollbackAndStats) {
  absl::StatusOr<v1::SetVersionPolicyRequest> policy = BuildVersionPolicyRequest("m", {"all"});
  ASSERT_TRUE(policy.ok());
  EXPECT_EQ(RunVersionPolicy(*client_, *policy, io_), kExitOk) << err_.str();
  EXPECT_TRUE(models_.policy.version_policy().has_all());
  EXPECT_EQ(out_.str(), "model m: policy all; serving versions 1, 2\n");

  out_.str("");
  v1::RollbackModelRequest rollback;
  rollback.set_name("m");
  rollback.set_version(1);
  EXPECT_EQ(RunRollback(*client_, rollback, io_), kExitOk) << err_.str();
  EXPECT_EQ(out_.str(), "model m: policy specific 1; serving version 1\n");
  rollback.set_version(99);
  EXPECT_EQ(RunRollback(*client_, rollback, io_), kExitFailure);
  EXPECT_THAT(err_.str(), HasSubstr("NOT_FOUND: version: model m has no version 99"));

  out_.str("");
  inference::ModelStatisticsRequest stats;
  stats.set_name("mlp");
  stats.set_version("3");
  EXPECT_EQ(RunStats(*client_, stats, io_), kExitOk) << err_.str();
  EXPECT_THAT(out_.str(), StartsWith("MODEL  VERSION  OK  FAILED"));
  EXPECT_THAT(out_.str(), HasSubstr("\nmlp          3   2"));
}

TEST_F(ModelCommandsTest, InferRandomFollowsTheMetadata) {
  InferPlan plan;
  plan.model = "mlp";
  plan.random_batch = 2;
  plan.output_fp32 = true;
  EXPECT_EQ(RunInfer(*client_, plan, io_), kExitOk) << err_.str();
  const inference::ModelInferRequest& sent = inference_.inferred;
  EXPECT_EQ(sent.model_name(), "mlp");
  ASSERT_EQ(sent.inputs_size(), 1);
  EXPECT_EQ(sent.inputs(0).datatype(), "BF16");
  EXPECT_THAT(sent.inputs(0).shape(), ElementsAre(2, 4));
  EXPECT_EQ(sent.raw_input_contents(0).size(), 2u * 4 * 2);
  EXPECT_EQ(sent.parameters().at("output_datatype").string_param(), "FP32");
  EXPECT_EQ(out_.str(),
            "model mlp version 1\n"
            "output logits BF16 [2,2]\n"
            "  item 0: argmax 1 (2)\n"
            "  item 1: argmax 1 (3)\n");

  EXPECT_EQ(sent.model_version(), "");

  plan.version = "1";
  EXPECT_EQ(RunInfer(*client_, plan, io_), kExitOk) << err_.str();
  EXPECT_EQ(inference_.inferred.model_version(), "1");
  plan.version.clear();

  plan.model = "nope";
  EXPECT_EQ(RunInfer(*client_, plan, io_), kExitFailure);
  EXPECT_EQ(err_.str(), "mantissa: NOT_FOUND: no model nope\n");
}

TEST_F(ModelCommandsTest, InferSendsTheParsedRequestAndPrintsJson) {
  InferPlan plan;
  plan.model = "mlp";
  plan.request.emplace().set_model_name("mlp");
  auto* input = plan.request->add_inputs();
  input->set_name("input");
  input->set_datatype("FP32");
  input->add_shape(1);
  input->add_shape(4);
  *plan.request->add_raw_input_contents() = *EncodeValues("FP32", {1, 2, 3, 4});
  io_.json = true;
  EXPECT_EQ(RunInfer(*client_, plan, io_), kExitOk) << err_.str();
  EXPECT_EQ(inference_.inferred.raw_input_contents(0), plan.request->raw_input_contents(0));
  EXPECT_FALSE(inference_.inferred.parameters().contains("output_datatype"));
  EXPECT_EQ(inference_.inferred.model_version(), "");
  EXPECT_THAT(out_.str(), HasSubstr("\"model_name\": \"mlp\""));
  EXPECT_THAT(out_.str(), HasSubstr("\"shape\": [1, 2], \"data\": [1, 2]}"));
}

TEST_F(ModelCommandsTest, Unload) {
  EXPECT_EQ(RunUnload(*client_, "mlp", io_), kExitOk);
  EXPECT_EQ(out_.str(), "model mlp unloaded\n");
  EXPECT_EQ(RunUnload(*client_, "x", io_), kExitFailure);
  EXPECT_EQ(err_.str(), "mantissa: NOT_FOUND: no model x\n");
}

// The binary: usage errors exit 2 before any call, so no daemon is needed.
CliResult RunCli(std::vector<std::string> args) {
  args.insert(args.begin(), "--server=127.0.0.1:1");
  return RunCliBinary(std::move(args));
}

TEST(ModelCliBinaryTest, UsageErrorsExitTwo) {
  struct Case {
    std::vector<std::string> args;
    std::string err_prefix;
  };
  const std::vector<Case> cases = {
      {{"export", "j1"}, "mantissa export: --name is required"},
      {{"export"}, "mantissa export: missing JOB"},
      {{"load", "m", "--input", "x:FP32:1"}, "mantissa load: --input, --output"},
      {{"load", "m", "--torchscript", "m.pt", "--input", "x:FP32:1"},
       "mantissa load: --torchscript needs at least one --input and one --output"},
      {{"infer", "m"}, "mantissa infer: give either --input FILE.json or --random"},
      {{"infer", "m", "--random", "--batch=0"}, "mantissa infer: --batch: must be >= 1"},
      {{"infer", "m", "--input=/nonexistent.json"}, "mantissa infer: --input /nonexistent.json"},
      {{"models", "extra"}, "mantissa models: unexpected argument 'extra'"},
      {{"unload"}, "mantissa unload: missing NAME"},
      {{"rollback", "m"}, "mantissa rollback: missing NAME VERSION"},
      {{"rollback", "m", "x"}, "mantissa rollback: VERSION: 'x' is not a version"},
      {{"version-policy", "m", "specific"}, "mantissa version-policy: specific needs"},
      {{"stats", "--version", "2"}, "mantissa stats: --version needs a MODEL"},
      {{"export", "j1", "--name=m", "--min-top1-agreement=2"},
       "mantissa export: --min-top1-agreement: must be in [0, 1]"},
  };
  for (const Case& c : cases) {
    const CliResult result = RunCli(c.args);
    EXPECT_EQ(result.exit_code, 2) << c.args[0] << ": " << result.err;
    EXPECT_THAT(result.err, StartsWith(c.err_prefix));
  }
}

TEST(ModelCliBinaryTest, HelpListsTheServingCommands) {
  const CliResult usage = RunCli({"help"});
  EXPECT_EQ(usage.exit_code, 0);
  for (const char* line :
       {"  export JOB ", "  load NAME ", "  models ", "  infer NAME ", "  unload NAME ",
        "  rollback NAME VERSION ", "  version-policy NAME POLICY ", "  stats [MODEL] "}) {
    EXPECT_THAT(usage.out, HasSubstr(line));
  }
  const CliResult load = RunCli({"help", "load"});
  EXPECT_THAT(load.out, StartsWith("Usage: mantissa [GLOBAL FLAGS] load [FLAGS] NAME\n"));
  for (const char* flag : {"--torchscript=FILE ", "--input=NAME:DATATYPE:D1,D2,... ",
                           "--precision=NAME ", "--max-batch-size=N "}) {
    EXPECT_THAT(load.out, HasSubstr(flag));
  }
}

}  // namespace
}  // namespace mantissa::cli
