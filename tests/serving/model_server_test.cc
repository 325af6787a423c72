#include "server/serving/model_server.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <future>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "prometheus/text_serializer.h"
#include "server/common/status_macros.h"
#include "server/models/model_registry.h"
#include "server/serving/model_exporter.h"
#include "server/serving/model_repository.h"
#include "tests/serving/serving_test_util.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/torchscript_writer.h"

namespace mantissa {
namespace {

using ::testing::_;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::StatusIs;

MATCHER_P(HoldsValue, value, "") {
  if (!arg.ok()) {
    *result_listener << "status is " << arg.status();
    return false;
  }
  return *arg == value;
}

// A request for `model` with `x` [N, 16] sent as raw contents of `datatype`.
inference::ModelInferRequest MlpRequest(const std::string& model, const torch::Tensor& x,
                                        const std::string& datatype = "FP32") {
  inference::ModelInferRequest request;
  request.set_model_name(model);
  request.set_id("req-1");
  auto* input = request.add_inputs();
  input->set_name("input");
  input->set_datatype(datatype);
  for (int64_t d : x.sizes()) input->add_shape(d);
  const torch::Dtype dtype = datatype == "BF16"   ? torch::kBFloat16
                             : datatype == "FP16" ? torch::kHalf
                                                  : torch::kFloat32;
  const torch::Tensor t = x.to(dtype).contiguous();
  request.add_raw_input_contents(std::string(static_cast<const char*>(t.data_ptr()), t.nbytes()));
  return request;
}

// Output `i` of `response` as an fp32 tensor.
torch::Tensor OutputTensor(const inference::ModelInferResponse& response, int i) {
  const auto& out = response.outputs(i);
  const torch::Dtype dtype = out.datatype() == "BF16"   ? torch::kBFloat16
                             : out.datatype() == "FP16" ? torch::kHalf
                                                        : torch::kFloat32;
  std::vector<int64_t> shape(out.shape().begin(), out.shape().end());
  const std::string& raw = response.raw_output_contents(i);
  torch::Tensor t = torch::empty(shape, dtype);
  EXPECT_EQ(static_cast<size_t>(t.nbytes()), raw.size());
  std::memcpy(t.data_ptr(), raw.data(), std::min<size_t>(raw.size(), t.nbytes()));
  return t.to(torch::kFloat32);
}

absl::StatusOr<inference::ModelInferResponse> InferSync(
    ModelServer& server, const inference::ModelInferRequest& request) {
  inference::ModelInferResponse response;
  std::promise<absl::Status> status;
  server.Infer(&request, &response, [&status](absl::Status s) { status.set_value(s); });
  std::future<absl::Status> answered = status.get_future();
  if (answered.wait_for(std::chrono::seconds(60)) != std::future_status::ready) {
    ADD_FAILURE() << "no answer within 60 s";
    std::abort();  // `response` would dangle
  }
  absl::Status s = answered.get();
  if (!s.ok()) return s;
  return response;
}

// One item of four 0.5s for the overflowing scale module: 0.5 * 3.4e38 is
// finite in fp32.
inference::ModelInferRequest HalfInputRequest(const std::string& model) {
  inference::ModelInferRequest request;
  request.set_model_name(model);
  auto* input = request.add_inputs();
  input->set_name("x");
  input->set_datatype("FP32");
  input->add_shape(1);
  input->add_shape(4);
  for (int i = 0; i < 4; ++i) input->mutable_contents()->add_fp32_contents(0.5f);
  return request;
}

v1::RegisterModelRequest RegisterRequest(const std::string& name, const std::string& file,
                                         const std::string& precision, int64_t features,
                                         int64_t outputs) {
  v1::RegisterModelRequest request;
  request.set_name(name);
  request.set_torchscript_path(file);
  request.set_precision(precision);
  *request.add_inputs() = Spec("x", "FP32", {features});
  *request.add_outputs() = Spec("y", "FP32", {outputs});
  return request;
}

class ModelServerTest : public RepositoryFixture {
 protected:
  std::unique_ptr<ModelServer> StartServer(int calibration_items = 64,
                                           int64_t queue_delay_us = 500) {
    ModelServer::Options options;
    options.state_dir = dir_.path();
    options.device = ProbedCpu();
    options.metrics = &metrics_;
    options.calibration_items = calibration_items;
    options.default_max_queue_delay_us = queue_delay_us;
    options.torchscript_roots = torchscript_roots_;
    options.shape_limits = shape_limits_;
    auto server = ModelServer::Create(options);
    EXPECT_OK(server);
    if (!server.ok()) return nullptr;
    (*server)->LoadRepository();
    return *std::move(server);
  }

  // Writes `model`'s weights as the next version of `name`.
  int64_t AddMlpVersion(const std::string& name, Model& model,
                        const std::string& precision = "bf16-true") {
    auto added = repository_->AddVersion(
        name, MlpConfig(precision), [&](const std::string& dir, v1::ModelConfig&) {
          RETURN_IF_ERROR(SaveWeights(dir + "/weights.pt", model.State()));
          return WriteMlpCalibration(dir, 128);
        });
    EXPECT_OK(added);
    return added.ok() ? added->version() : 0;
  }

  std::string MetricsText() const {
    prometheus::TextSerializer serializer;
    return serializer.Serialize(metrics_.registry()->Collect());
  }

  Metrics metrics_;
  // Modules are written into the test's own folder.
  FileRoots torchscript_roots_{{dir_.path()}, "--torchscript_root"};
  ShapeLimits shape_limits_;
};

TEST_F(ModelServerTest, ServesBf16WithinToleranceOfFp32ForFp32AndBf16Inputs) {
  std::unique_ptr<Model> fp32 = BuildMlp(1);
  AddMlpVersion("mlp", *fp32);
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  EXPECT_TRUE(server->ready());
  EXPECT_THAT(server->ModelReady("mlp", ""), HoldsValue(true));

  const torch::Tensor x = torch::rand({6, kFeatures});
  const torch::Tensor want = Fp32Logits(*fp32, x);
  for (const std::string datatype : {"FP32", "BF16", "FP16"}) {
    SCOPED_TRACE(datatype);
    auto response = InferSync(*server, MlpRequest("mlp", x, datatype));
    ASSERT_OK(response);
    EXPECT_EQ(response->model_name(), "mlp");
    EXPECT_EQ(response->model_version(), "1");
    EXPECT_EQ(response->id(), "req-1");
    ASSERT_EQ(response->outputs_size(), 1);
    EXPECT_EQ(response->outputs(0).name(), "logits");
    EXPECT_EQ(response->outputs(0).datatype(), "BF16");
    EXPECT_THAT(response->outputs(0).shape(), ElementsAre(6, kClasses));
    const torch::Tensor got = OutputTensor(*response, 0);
    // bf16 keeps 8 significant bits: about 0.4% per weight and activation.
    EXPECT_TRUE(torch::allclose(got, want, /*rtol=*/0.02, /*atol=*/0.05)) << got << want;
    EXPECT_EQ(got.argmax(1).eq(want.argmax(1)).sum().item<int64_t>(), 6);
  }

  // Asked for FP32 outputs: the same bf16 numbers, widened.
  inference::ModelInferRequest request = MlpRequest("mlp", x);
  (*request.mutable_parameters())["output_datatype"].set_string_param("FP32");
  auto response = InferSync(*server, request);
  ASSERT_OK(response);
  EXPECT_EQ(response->outputs(0).datatype(), "FP32");
  EXPECT_TRUE(torch::allclose(OutputTensor(*response, 0), want, 0.02, 0.05));

  const std::string text = MetricsText();
  EXPECT_THAT(text,
              HasSubstr("mantissa_inference_requests_total{model=\"mlp\",status=\"OK\"} 4\n"));
  EXPECT_THAT(text,
              HasSubstr("mantissa_inference_request_duration_seconds_count{model=\"mlp\"} 4"));
  EXPECT_THAT(text, HasSubstr("mantissa_inference_batch_size_count{model=\"mlp\"}"));
  EXPECT_THAT(text, HasSubstr("mantissa_model_cast_max_abs_diff{model=\"mlp\","
                              "precision=\"bf16-true\"}"));
  EXPECT_THAT(text, HasSubstr("mantissa_model_cast_top1_agreement{model=\"mlp\","
                              "precision=\"bf16-true\"}"));
}

TEST_F(ModelServerTest, Fp32ModelAnswersExactly) {
  std::unique_ptr<Model> fp32 = BuildMlp(2);
  AddMlpVersion("exact", *fp32, "32-true");
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  const torch::Tensor x = torch::rand({3, kFeatures});
  auto response = InferSync(*server, MlpRequest("exact", x));
  ASSERT_OK(response);
  EXPECT_EQ(response->outputs(0).datatype(), "FP32");
  EXPECT_TRUE(torch::allclose(OutputTensor(*response, 0), Fp32Logits(*fp32, x), 1e-5, 1e-6));
}

TEST_F(ModelServerTest, ListsVersionsWithValidationAndServesTheLatestByDefault) {
  std::unique_ptr<Model> first = BuildMlp(3);
  AddMlpVersion("mlp", *first);
  auto server = StartServer();
  ASSERT_NE(server, nullptr);

  std::vector<v1::ModelStatus> models = server->List();
  ASSERT_EQ(models.size(), 1u);
  ASSERT_EQ(models[0].versions_size(), 1);
  const v1::ModelVersionStatus& v1 = models[0].versions(0);
  EXPECT_EQ(v1.state(), "READY");
  EXPECT_EQ(v1.config().precision(), "bf16-true");
  EXPECT_EQ(v1.config().version(), 1);
  EXPECT_GT(v1.validation().max_abs_diff(), 0.0);
  EXPECT_GE(v1.validation().top1_agreement(), 0.9);
  EXPECT_TRUE(v1.validation().finite());
  EXPECT_EQ(v1.validation().calibration_source(), "synthetic test split, first 64 items");

  std::unique_ptr<Model> second = BuildMlp(4);
  AddMlpVersion("mlp", *second, "32-true");
  // On disk but not loaded yet: version 1 still serves.
  EXPECT_EQ(server->List()[0].versions(1).reason(), "not loaded");
  ASSERT_OK(server->Load("mlp"));

  models = server->List();
  ASSERT_EQ(models[0].versions_size(), 2);
  EXPECT_EQ(models[0].versions(0).state(), "UNAVAILABLE");
  EXPECT_EQ(models[0].versions(0).reason(), "superseded by version 2");
  EXPECT_EQ(models[0].versions(1).state(), "READY");
  EXPECT_EQ(models[0].versions(1).validation().max_abs_diff(), 0.0);

  inference::RepositoryIndexResponse index = server->RepositoryIndex(/*ready_only=*/false);
  ASSERT_EQ(index.models_size(), 2);
  EXPECT_EQ(index.models(0).version(), "1");
  EXPECT_EQ(index.models(0).state(), "UNAVAILABLE");
  index = server->RepositoryIndex(/*ready_only=*/true);
  ASSERT_EQ(index.models_size(), 1);
  EXPECT_EQ(index.models(0).name(), "mlp");
  EXPECT_EQ(index.models(0).version(), "2");
  EXPECT_EQ(index.models(0).state(), "READY");

  EXPECT_THAT(server->ModelReady("mlp", "2"), HoldsValue(true));
  EXPECT_THAT(server->ModelReady("mlp", "1"), HoldsValue(false));
  EXPECT_THAT(server->ModelReady("mlp", "3"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("versions: 1, 2")));
  EXPECT_THAT(server->ModelReady("nope", ""), StatusIs(absl::StatusCode::kNotFound, _));

  auto metadata = server->ModelMetadata("mlp", "");
  ASSERT_OK(metadata);
  EXPECT_EQ(metadata->name(), "mlp");
  EXPECT_THAT(metadata->versions(), ElementsAre("2"));
  EXPECT_EQ(metadata->platform(), "mantissa_libtorch");
  ASSERT_EQ(metadata->inputs_size(), 1);
  EXPECT_EQ(metadata->inputs(0).name(), "input");
  EXPECT_EQ(metadata->inputs(0).datatype(), "FP32");
  EXPECT_THAT(metadata->inputs(0).shape(), ElementsAre(-1, kFeatures));
  EXPECT_EQ(metadata->outputs(0).name(), "logits");
  // Version 1's own metadata: it was bf16.
  metadata = server->ModelMetadata("mlp", "1");
  ASSERT_OK(metadata);
  EXPECT_EQ(metadata->inputs(0).datatype(), "BF16");

  const torch::Tensor x = torch::rand({2, kFeatures});
  auto response = InferSync(*server, MlpRequest("mlp", x));
  ASSERT_OK(response);
  EXPECT_EQ(response->model_version(), "2");
  EXPECT_TRUE(torch::allclose(OutputTensor(*response, 0), Fp32Logits(*second, x), 1e-5, 1e-6));
  inference::ModelInferRequest old = MlpRequest("mlp", x);
  old.set_model_version("1");
  EXPECT_THAT(InferSync(*server, old),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("model mlp version 1 is not served (served: 2)")));
  old.set_model_version("2");
  EXPECT_OK(InferSync(*server, old));
}

TEST_F(ModelServerTest, RefusalsNameTheModelAndTheReason) {
  std::unique_ptr<Model> fp32 = BuildMlp(5);
  AddMlpVersion("mlp", *fp32);
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  const torch::Tensor x = torch::rand({1, kFeatures});

  EXPECT_THAT(InferSync(*server, MlpRequest("nope", x)),
              StatusIs(absl::StatusCode::kNotFound,
                       AllOf(HasSubstr("model nope not found"), HasSubstr("loaded models: mlp"))));
  inference::ModelInferRequest bad = MlpRequest("mlp", torch::rand({1, kFeatures + 1}));
  EXPECT_THAT(InferSync(*server, bad),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("model mlp: ")));

  ASSERT_OK(server->Unload("mlp"));
  EXPECT_OK(server->Unload("mlp"));  // idempotent
  EXPECT_THAT(server->Unload("nope"), StatusIs(absl::StatusCode::kNotFound, _));
  EXPECT_THAT(InferSync(*server, MlpRequest("mlp", x)),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("model mlp version 1 is unavailable: unloaded")));
  EXPECT_THAT(server->ModelReady("mlp", ""), HoldsValue(false));
  EXPECT_EQ(server->List()[0].versions(0).reason(), "unloaded");
  EXPECT_THAT(server->Load("nope"),
              StatusIs(absl::StatusCode::kNotFound,
                       AllOf(HasSubstr("not in the repository"), HasSubstr("models: mlp"))));

  ASSERT_OK(server->Load("mlp"));
  EXPECT_OK(InferSync(*server, MlpRequest("mlp", x)));

  const std::string text = MetricsText();
  EXPECT_THAT(text, HasSubstr("mantissa_inference_requests_total{model=\"mlp\","
                              "status=\"INVALID_ARGUMENT\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_inference_requests_total{model=\"mlp\","
                              "status=\"FAILED_PRECONDITION\"} 1\n"));
  EXPECT_THAT(text,
              HasSubstr("mantissa_inference_requests_total{model=\"mlp\",status=\"OK\"} 1\n"));
  // Names that are not in the repository get no series.
  EXPECT_THAT(text, Not(HasSubstr("model=\"nope\"")));

  // Pinned to an older version, unloaded: the refusal says unloaded, not
  // that the newest version was never selected.
  AddMlpVersion("mlp", *fp32);
  ASSERT_OK(server->Rollback("mlp", 1));
  ASSERT_OK(server->Unload("mlp"));
  EXPECT_THAT(InferSync(*server, MlpRequest("mlp", x)),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("model mlp version 1 is unavailable: unloaded")));
  ASSERT_OK(server->Load("mlp"));  // the policy still pins version 1
  EXPECT_THAT(server->ModelReady("mlp", "1"), HoldsValue(true));
  ASSERT_OK(server->Unload("mlp"));
}

TEST_F(ModelServerTest, ARefusedNewVersionLeavesThePreviousOneServing) {
  auto server = StartServer(/*calibration_items=*/16);
  ASSERT_NE(server, nullptr);
  const std::string file = dir_.File("overflow.pt");
  WriteOverflowingScale(file, 4);
  // In fp32 the module serves (0.5 * 3.4e38 is finite); cast to bf16 it cannot.
  ASSERT_OK(server->Register(RegisterRequest("big", file, "32-true", 4, 4)));
  EXPECT_THAT(
      server->Register(RegisterRequest("big", file, "bf16-true", 4, 4)),
      StatusIs(absl::StatusCode::kFailedPrecondition,
               AllOf(HasSubstr("model big version 2 was added to the repository"),
                     HasSubstr("non-finite outputs"), HasSubstr("version 1 keeps serving"))));

  const inference::ModelInferRequest request = HalfInputRequest("big");
  auto expect_version_1_serves = [&](ModelServer& s) {
    EXPECT_THAT(s.ModelReady("big", ""), HoldsValue(true));
    EXPECT_THAT(s.ModelReady("big", "2"), HoldsValue(false));
    auto response = InferSync(s, request);
    ASSERT_OK(response);
    EXPECT_EQ(response->model_version(), "1");
    std::vector<v1::ModelStatus> models = s.List();
    ASSERT_EQ(models.size(), 1u);
    ASSERT_EQ(models[0].versions_size(), 2);
    EXPECT_EQ(models[0].versions(0).state(), "READY");
    EXPECT_EQ(models[0].versions(1).state(), "UNAVAILABLE");
    EXPECT_THAT(models[0].versions(1).reason(), HasSubstr("non-finite outputs"));
  };
  expect_version_1_serves(*server);

  // After a restart the newest version that loads serves.
  server.reset();
  server = StartServer(/*calibration_items=*/16);
  ASSERT_NE(server, nullptr);
  expect_version_1_serves(*server);
}

TEST_F(ModelServerTest, OverflowingCastLeavesTheVersionUnavailableWithItsReason) {
  auto server = StartServer(/*calibration_items=*/16);
  ASSERT_NE(server, nullptr);
  const std::string file = dir_.File("overflow.pt");
  WriteOverflowingScale(file, 4);

  auto refused = server->Register(RegisterRequest("big", file, "bf16-true", 4, 4));
  EXPECT_THAT(refused, StatusIs(absl::StatusCode::kFailedPrecondition,
                                AllOf(HasSubstr("model big version 1 was added to the repository"),
                                      HasSubstr("casting to bf16-true gives non-finite outputs "
                                                "(64 of 64; bf16 overflow?) on random inputs"))));
  std::vector<v1::ModelStatus> models = server->List();
  ASSERT_EQ(models.size(), 1u);
  const v1::ModelVersionStatus& status = models[0].versions(0);
  EXPECT_EQ(status.state(), "UNAVAILABLE");
  EXPECT_THAT(status.reason(), HasSubstr("non-finite outputs"));
  EXPECT_FALSE(status.validation().finite());
  EXPECT_EQ(status.config().platform(), "pytorch_libtorch");

  const inference::ModelInferRequest request = HalfInputRequest("big");
  EXPECT_THAT(InferSync(*server, request),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("model big version 1 is unavailable"),
                             HasSubstr("non-finite outputs"))));
  EXPECT_THAT(MetricsText(), Not(HasSubstr("mantissa_model_cast_max_abs_diff{model=\"big\"")));

  // The same module in fp32 serves: 0.5 * 3.4e38 is finite.
  auto accepted = server->Register(RegisterRequest("big", file, "32-true", 4, 4));
  ASSERT_OK(accepted);
  EXPECT_EQ(accepted->state(), "READY");
  EXPECT_EQ(accepted->config().version(), 2);
  EXPECT_TRUE(accepted->validation().finite());
  EXPECT_FALSE(accepted->validation().has_top1_agreement());
  auto response = InferSync(*server, request);
  ASSERT_OK(response);
  EXPECT_FLOAT_EQ(OutputTensor(*response, 0)[0][0].item<float>(), 1.7e38f);
}

TEST_F(ModelServerTest, RegisteredTorchScriptServesInBf16) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  const std::string file = dir_.File("mlp.pt");
  ASSERT_OK(testing::WriteTorchScriptMlp(file, 8, 16, 3, /*seed=*/5));
  // Precision left empty: bf16-true on this CPU.
  auto registered = server->Register(RegisterRequest("ts", file, "", 8, 3));
  ASSERT_OK(registered);
  EXPECT_EQ(registered->state(), "READY");
  EXPECT_EQ(registered->config().precision(), "bf16-true");
  EXPECT_EQ(registered->config().inputs(0).datatype(), "BF16");
  EXPECT_GT(registered->validation().max_abs_diff(), 0.0);
  EXPECT_EQ(registered->validation().calibration_source(), "random inputs, 64 items");

  torch::jit::Module module = torch::jit::load(file);
  module.eval();
  const torch::Tensor x = torch::rand({4, 8});
  torch::Tensor want;
  {
    c10::InferenceMode guard;
    want = module.forward({x}).toTensor();
  }
  inference::ModelInferRequest request;
  request.set_model_name("ts");
  auto* input = request.add_inputs();
  input->set_name("x");
  input->set_datatype("FP32");
  input->add_shape(4);
  input->add_shape(8);
  for (int64_t i = 0; i < x.numel(); ++i) {
    input->mutable_contents()->add_fp32_contents(x.view(-1)[i].item<float>());
  }
  auto response = InferSync(*server, request);
  ASSERT_OK(response);
  EXPECT_EQ(response->outputs(0).datatype(), "BF16");
  EXPECT_TRUE(torch::allclose(OutputTensor(*response, 0), want, 0.02, 0.05));
}

TEST_F(ModelServerTest, SixteenTrueIsRefusedOnThisCpu) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  const std::string file = dir_.File("mlp.pt");
  ASSERT_OK(testing::WriteTorchScriptMlp(file, 8, 16, 3));
  EXPECT_THAT(server->Register(RegisterRequest("ts", file, "16-true", 8, 3)),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("precision: 16-true"), HasSubstr("cpu"),
                             HasSubstr("bf16-true, 32-true"))));
  EXPECT_TRUE(server->List().empty());  // nothing was added

  // A 16-true version written elsewhere (e.g. on a GPU) loads as unavailable.
  std::unique_ptr<Model> fp32 = BuildMlp(6);
  v1::ModelConfig config = MlpConfig("32-true");
  config.set_precision("16-true");
  ASSERT_OK(repository_->AddVersion("gpu", config, [&](const std::string& dir, v1::ModelConfig&) {
    return SaveWeights(dir + "/weights.pt", fp32->State());
  }));
  EXPECT_THAT(server->Load("gpu"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("precision: 16-true")));
  EXPECT_EQ(server->List()[0].versions(0).state(), "UNAVAILABLE");
}

TEST_F(ModelServerTest, ExportsAJobAndServesIt) {
  // A finished job as the trainer leaves it: record + export artifact.
  std::unique_ptr<Model> trained = BuildMlp(7);
  v1::Job job;
  job.set_id("job1");
  job.set_state(v1::SUCCEEDED);
  job.set_effective_precision("bf16-mixed");
  v1::JobSpec& spec = *job.mutable_spec();
  spec.set_model("mlp");
  (*spec.mutable_model_options())["hidden"] = "32";
  spec.set_dataset("synthetic");
  spec.mutable_dataset_options()->insert(kSynthetic.begin(), kSynthetic.end());
  spec.set_seed(7);
  ASSERT_OK(ExportArtifact::Write(ExportArtifact::PathFor(dir_.path(), "job1"),
                                  MlpArtifact("job1", *trained)));

  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  v1::ExportModelRequest request;
  request.set_job_id("job1");
  request.set_name("exported");
  request.mutable_batching()->set_max_batch_size(8);
  auto exported = server->Export(job, request);
  ASSERT_OK(exported);
  EXPECT_EQ(exported->state(), "READY");
  EXPECT_EQ(exported->config().precision(), "bf16-true");
  EXPECT_EQ(exported->config().source_job_id(), "job1");
  EXPECT_GE(exported->validation().top1_agreement(), 0.9);
  EXPECT_EQ(exported->validation().calibration_source(), "synthetic test split, first 64 items");

  const torch::Tensor x = torch::rand({8, kFeatures});
  auto response = InferSync(*server, MlpRequest("exported", x));
  ASSERT_OK(response);
  EXPECT_TRUE(torch::allclose(OutputTensor(*response, 0), Fp32Logits(*trained, x), 0.02, 0.05));
  // max_batch_size 8 bounds one request.
  EXPECT_THAT(InferSync(*server, MlpRequest("exported", torch::rand({9, kFeatures}))),
              StatusIs(absl::StatusCode::kInvalidArgument, _));

  request.set_precision("16-true");
  EXPECT_THAT(server->Export(job, request),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("precision")));
}

TEST_F(ModelServerTest, LanguageModelServesTokenWindows) {
  std::unique_ptr<Model> gpt = BuildGpt(9);
  ASSERT_NE(gpt, nullptr);
  ASSERT_OK(repository_->AddVersion("gpt", GptConfig(/*test_tokens=*/512),
                                    [&](const std::string& dir, v1::ModelConfig&) -> absl::Status {
                                      RETURN_IF_ERROR(
                                          SaveWeights(dir + "/weights.pt", gpt->State()));
                                      return WriteGptCalibration(dir, 32);
                                    }));
  auto server = StartServer(/*calibration_items=*/4);
  ASSERT_NE(server, nullptr);

  auto request = [](std::vector<int64_t> ids) {
    inference::ModelInferRequest r;
    r.set_model_name("gpt");
    auto* input = r.add_inputs();
    input->set_name("input_ids");
    input->set_datatype("INT64");
    input->add_shape(1);
    input->add_shape(static_cast<int64_t>(ids.size()));
    for (int64_t id : ids) input->mutable_contents()->add_int64_contents(id);
    return r;
  };
  torch::Tensor want;
  {
    c10::InferenceMode guard;
    gpt->SetTraining(false);
    want = gpt->Forward(torch::tensor({{1, 2, 3, 4, 5}}, torch::kInt64));
  }
  // By default only the last position's logits come back: [batch, vocab].
  auto response = InferSync(*server, request({1, 2, 3, 4, 5}));
  ASSERT_OK(response);
  EXPECT_THAT(response->outputs(0).shape(), ElementsAre(1, 32));
  EXPECT_TRUE(torch::allclose(OutputTensor(*response, 0), want.select(1, -1), 0.05, 0.1));
  // Every position's on request.
  inference::ModelInferRequest all = request({1, 2, 3, 4, 5});
  (*all.mutable_parameters())["all_positions"].set_bool_param(true);
  auto every = InferSync(*server, all);
  ASSERT_OK(every);
  EXPECT_THAT(every->outputs(0).shape(), ElementsAre(1, 5, 32));
  EXPECT_TRUE(torch::allclose(OutputTensor(*every, 0), want, 0.05, 0.1));
  (*all.mutable_parameters())["all_positions"].set_string_param("yes");
  EXPECT_THAT(InferSync(*server, all),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("all_positions")));
  EXPECT_THAT(InferSync(*server, request(std::vector<int64_t>(17, 1))),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("1..16 tokens")));
  EXPECT_THAT(InferSync(*server, request({1, 99})),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("token id 99")));
  // The model keeps serving.
  EXPECT_OK(InferSync(*server, request({7})));
}

// Shapes that would make the calibration batch (or any request) allocate
// without bound are refused before the repository changes.
TEST_F(ModelServerTest, RegisterRefusesDeclaredShapesOverTheLimits) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  const std::string file = dir_.File("mlp.pt");
  ASSERT_OK(testing::WriteTorchScriptMlp(file, 8, 16, 3, /*seed=*/5));
  v1::RegisterModelRequest big = RegisterRequest("huge", file, "32-true", 8, 3);
  big.mutable_inputs(0)->clear_shape();
  big.mutable_inputs(0)->add_shape(100000);
  big.mutable_inputs(0)->add_shape(100000);
  EXPECT_THAT(server->Register(big),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("inputs[0] (x)"), HasSubstr("--max_tensor_elements"))));
  big.mutable_inputs(0)->set_shape(0, int64_t{1} << 31);
  big.mutable_inputs(0)->set_shape(1, int64_t{1} << 31);
  EXPECT_THAT(server->Register(big),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("inputs[0] (x)"), HasSubstr("--max_tensor_dim"))));
  v1::RegisterModelRequest wide_output = RegisterRequest("huge", file, "32-true", 8, 3);
  wide_output.mutable_outputs(0)->set_shape(0, int64_t{1} << 62);
  EXPECT_THAT(server->Register(wide_output),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("outputs[0] (y)")));
  EXPECT_TRUE(repository_->Versions("huge").empty());
  // The server goes on.
  ASSERT_OK(server->Register(RegisterRequest("small", file, "32-true", 8, 3)));
}

// A version committed with such a shape (config.json written by hand) is
// UNAVAILABLE with its reason; the server starts and serves the others.
TEST_F(ModelServerTest, ACommittedVersionOverTheLimitsIsUnavailable) {
  std::unique_ptr<Model> fp32 = BuildMlp(1);
  AddMlpVersion("mlp", *fp32, "32-true");
  v1::ModelConfig huge = MlpConfig("32-true");
  huge.mutable_inputs(0)->clear_shape();
  huge.mutable_inputs(0)->add_shape(100000);
  huge.mutable_inputs(0)->add_shape(100000);
  ASSERT_OK(repository_->AddVersion("huge", huge, [&](const std::string& dir, v1::ModelConfig&) {
    return SaveWeights(dir + "/weights.pt", fp32->State());
  }));
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  EXPECT_TRUE(server->ready());
  bool seen = false;
  for (const v1::ModelStatus& model : server->List()) {
    if (model.name() != "huge") continue;
    ASSERT_EQ(model.versions_size(), 1);
    EXPECT_EQ(model.versions(0).state(), "UNAVAILABLE");
    EXPECT_THAT(model.versions(0).reason(), HasSubstr("--max_tensor_elements"));
    seen = true;
  }
  EXPECT_TRUE(seen);
  EXPECT_OK(InferSync(*server, MlpRequest("mlp", torch::rand({2, kFeatures}), "FP32")));
}

TEST_F(ModelServerTest, RegisterNeedsAModuleUnderTheTorchScriptRoot) {
  const std::string file = dir_.File("mlp.pt");
  ASSERT_OK(testing::WriteTorchScriptMlp(file, 8, 16, 3, /*seed=*/5));
  torchscript_roots_ = FileRoots();  // off
  {
    auto server = StartServer();
    ASSERT_NE(server, nullptr);
    EXPECT_THAT(server->Register(RegisterRequest("ts", file, "32-true", 8, 3)),
                StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("--torchscript_root")));
  }
  testing::TempDir other;
  torchscript_roots_ = FileRoots({other.path()}, "--torchscript_root");
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  auto outside = server->Register(RegisterRequest("ts", file, "32-true", 8, 3));
  EXPECT_THAT(outside, StatusIs(absl::StatusCode::kPermissionDenied, _));
  // A missing file reads like a forbidden one.
  auto missing = server->Register(RegisterRequest("ts", other.File("nope.pt"), "32-true", 8, 3));
  EXPECT_THAT(missing, StatusIs(absl::StatusCode::kPermissionDenied, _));
  EXPECT_EQ(absl::StrReplaceAll(missing.status().message(), {{other.File("nope.pt"), "P"}}),
            absl::StrReplaceAll(outside.status().message(), {{file, "P"}}));
  // Out through "..": still refused.
  const std::string dir_name = dir_.path().substr(dir_.path().rfind('/') + 1);
  EXPECT_THAT(server->Register(RegisterRequest(
                  "ts", absl::StrCat(other.path(), "/../", dir_name, "/mlp.pt"), "32-true", 8, 3)),
              StatusIs(absl::StatusCode::kPermissionDenied, _));
  EXPECT_TRUE(repository_->Versions("ts").empty());
  // Inside: registered.
  const std::string inside = other.File("mlp.pt");
  ASSERT_OK(testing::WriteTorchScriptMlp(inside, 8, 16, 3, /*seed=*/5));
  EXPECT_OK(server->Register(RegisterRequest("ts", inside, "32-true", 8, 3)));
}

// Several clients keep requests in flight while the model is unloaded:
// every request is answered (served, or refused as unavailable), none hangs.
TEST_F(ModelServerTest, UnloadUnderConcurrentTrafficAnswersEveryRequest) {
  std::unique_ptr<Model> fp32 = BuildMlp(10);
  AddMlpVersion("mlp", *fp32);
  auto server = StartServer(/*calibration_items=*/16, /*queue_delay_us=*/2000);
  ASSERT_NE(server, nullptr);

  constexpr int kThreads = 4;
  constexpr int kRequests = 60;
  std::atomic<int> ok{0}, unavailable{0}, other{0};
  std::atomic<int> started{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < kThreads; ++t) {
    clients.emplace_back([&] {
      const inference::ModelInferRequest request = MlpRequest("mlp", torch::rand({2, kFeatures}));
      for (int i = 0; i < kRequests; ++i) {
        started.fetch_add(1);
        absl::StatusOr<inference::ModelInferResponse> r = InferSync(*server, request);
        if (r.ok()) {
          ok.fetch_add(1);
        } else if (r.status().code() == absl::StatusCode::kFailedPrecondition) {
          unavailable.fetch_add(1);
        } else {
          other.fetch_add(1);
          ADD_FAILURE() << r.status();
        }
      }
    });
  }
  while (started.load() < kThreads * kRequests / 4) std::this_thread::yield();
  ASSERT_OK(server->Unload("mlp"));
  while (started.load() < kThreads * kRequests / 2) std::this_thread::yield();
  ASSERT_OK(server->Load("mlp"));
  while (started.load() < kThreads * kRequests * 3 / 4) std::this_thread::yield();
  ASSERT_OK(server->Unload("mlp"));
  for (std::thread& c : clients) c.join();
  EXPECT_EQ(ok + unavailable + other, kThreads * kRequests);
  EXPECT_GT(ok.load(), 0);
  EXPECT_GT(unavailable.load(), 0);
  EXPECT_EQ(other.load(), 0);
  server->Shutdown();
}

// New versions replace the served one while clients keep sending: every
// request succeeds, on whichever version held it.
TEST_F(ModelServerTest, ReplacingTheModelUnderTrafficLosesNoRequest) {
  std::unique_ptr<Model> fp32 = BuildMlp(11);
  AddMlpVersion("mlp", *fp32);
  auto server = StartServer(/*calibration_items=*/16, /*queue_delay_us=*/1000);
  ASSERT_NE(server, nullptr);

  constexpr int kThreads = 4;
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::mutex versions_mu;
  std::set<std::string> versions;
  std::vector<std::thread> clients;
  for (int t = 0; t < kThreads; ++t) {
    clients.emplace_back([&] {
      const inference::ModelInferRequest request = MlpRequest("mlp", torch::rand({1, kFeatures}));
      while (!stop.load()) {
        absl::StatusOr<inference::ModelInferResponse> r = InferSync(*server, request);
        if (!r.ok()) {
          failed.fetch_add(1);
          ADD_FAILURE() << r.status();
          continue;
        }
        ok.fetch_add(1);
        std::lock_guard<std::mutex> lock(versions_mu);
        versions.insert(r->model_version());
      }
    });
  }
  for (int v = 2; v <= 4; ++v) {
    const int before = ok.load();
    while (ok.load() < before + 20) std::this_thread::yield();
    AddMlpVersion("mlp", *fp32, v % 2 == 0 ? "32-true" : "bf16-true");
    ASSERT_OK(server->Load("mlp"));
  }
  const int before = ok.load();
  while (ok.load() < before + 20) std::this_thread::yield();
  stop = true;
  for (std::thread& c : clients) c.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_GT(ok.load(), 80);
  EXPECT_TRUE(versions.count("1") && versions.count("4")) << ok.load();
  EXPECT_THAT(server->ModelReady("mlp", "4"), HoldsValue(true));
}

TEST_F(ModelServerTest, ShutdownRefusesNewRequests) {
  std::unique_ptr<Model> fp32 = BuildMlp(12);
  AddMlpVersion("mlp", *fp32);
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  EXPECT_TRUE(server->ready());
  server->Shutdown();
  server->Shutdown();  // idempotent
  EXPECT_FALSE(server->ready());
  EXPECT_THAT(InferSync(*server, MlpRequest("mlp", torch::rand({1, kFeatures}))),
              StatusIs(absl::StatusCode::kUnavailable, _));
  EXPECT_THAT(server->Load("mlp"), StatusIs(absl::StatusCode::kUnavailable, _));
}

TEST_F(ModelServerTest, CreateValidatesOptions) {
  ModelServer::Options options;
  options.state_dir = dir_.path();
  EXPECT_THAT(ProbeDevice("tpu"), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("tpu")));
  EXPECT_THAT(ModelServer::Create(options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("device: not probed")));
  options.device = ProbedCpu();
  options.default_max_batch_size = 0;
  EXPECT_THAT(ModelServer::Create(options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("default_max_batch_size")));
  options.default_max_batch_size = 64;
  options.state_dir = "";
  EXPECT_THAT(ModelServer::Create(options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("state_dir")));
}

std::vector<int64_t> Served(const ModelServer& server, const std::string& name) {
  for (const v1::ModelStatus& model : server.List()) {
    if (model.name() == name)
      return {model.served_versions().begin(), model.served_versions().end()};
  }
  return {};
}

v1::VersionPolicy Latest(uint32_t n) {
  v1::VersionPolicy policy;
  policy.mutable_latest()->set_num_versions(n);
  return policy;
}

v1::VersionPolicy Specific(std::vector<int64_t> versions) {
  v1::VersionPolicy policy;
  policy.mutable_specific();
  for (int64_t v : versions) policy.mutable_specific()->add_versions(v);
  return policy;
}

TEST_F(ModelServerTest, VersionPoliciesSelectWhatServesAndRequestsRouteByVersion) {
  std::unique_ptr<Model> model = BuildMlp(21);
  for (int i = 0; i < 3; ++i) AddMlpVersion("mlp", *model, "32-true");
  auto server = StartServer(/*calibration_items=*/16);
  ASSERT_NE(server, nullptr);
  EXPECT_THAT(Served(*server, "mlp"), ElementsAre(3));  // latest 1 by default

  const torch::Tensor x = torch::rand({2, kFeatures});
  auto version_answering = [&](const std::string& version) -> absl::StatusOr<std::string> {
    inference::ModelInferRequest request = MlpRequest("mlp", x);
    request.set_model_version(version);
    absl::StatusOr<inference::ModelInferResponse> response = InferSync(*server, request);
    if (!response.ok()) return response.status();
    return response->model_version();
  };

  absl::StatusOr<v1::ModelStatus> status = server->SetVersionPolicy("mlp", Latest(2));
  ASSERT_OK(status);
  EXPECT_THAT(status->served_versions(), ElementsAre(2, 3));
  EXPECT_EQ(status->version_policy().latest().num_versions(), 2u);
  EXPECT_EQ(status->versions(0).reason(), "superseded by version 3");
  EXPECT_THAT(version_answering(""), HoldsValue("3"));
  EXPECT_THAT(version_answering("2"), HoldsValue("2"));
  EXPECT_THAT(version_answering("1"),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("model mlp version 1 is not served (served: 2, 3)")));
  EXPECT_THAT(server->ModelReady("mlp", "2"), HoldsValue(true));
  EXPECT_THAT(server->ModelReady("mlp", "1"), HoldsValue(false));
  absl::StatusOr<inference::ModelMetadataResponse> metadata = server->ModelMetadata("mlp", "");
  ASSERT_OK(metadata);
  EXPECT_THAT(metadata->versions(), ElementsAre("2", "3"));

  v1::VersionPolicy all;
  all.mutable_all();
  ASSERT_OK(server->SetVersionPolicy("mlp", all));
  EXPECT_THAT(Served(*server, "mlp"), ElementsAre(1, 2, 3));
  EXPECT_THAT(version_answering("1"), HoldsValue("1"));
  inference::RepositoryIndexResponse index = server->RepositoryIndex(/*ready_only=*/true);
  EXPECT_EQ(index.models_size(), 3);

  status = server->SetVersionPolicy("mlp", Specific({1}));
  ASSERT_OK(status);
  EXPECT_THAT(status->served_versions(), ElementsAre(1));
  EXPECT_EQ(status->versions(2).state(), "UNAVAILABLE");
  EXPECT_EQ(status->versions(2).reason(), "not selected by the version policy (specific 1)");
  EXPECT_THAT(version_answering(""), HoldsValue("1"));

  // Bad input changes nothing.
  EXPECT_THAT(server->SetVersionPolicy("mlp", Latest(0)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("version_policy.latest.num_versions: must be >= 1, got 0")));
  EXPECT_THAT(server->SetVersionPolicy("mlp", Specific({1, 99})),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("version_policy.specific.versions: model mlp has no version 99 "
                                 "(versions: 1, 2, 3)")));
  EXPECT_THAT(server->SetVersionPolicy("mlp", Specific({})),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("at least one version")));
  EXPECT_THAT(
      server->SetVersionPolicy("mlp", v1::VersionPolicy()),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("version_policy: is required")));
  EXPECT_THAT(
      server->SetVersionPolicy("nope", Latest(1)),
      StatusIs(absl::StatusCode::kNotFound, HasSubstr("model nope is not in the repository")));
  EXPECT_THAT(server->Rollback("mlp", 0), StatusIs(absl::StatusCode::kInvalidArgument, _));
  EXPECT_THAT(server->Rollback("mlp", 99),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("has no version 99")));
  EXPECT_THAT(Served(*server, "mlp"), ElementsAre(1));
  // A served version cannot be deleted.
  EXPECT_THAT(server->DeleteVersion("mlp", 1), StatusIs(absl::StatusCode::kFailedPrecondition, _));

  // The policy is the repository's: a restart serves the same, and a new
  // version does not replace a pinned one.
  server.reset();
  AddMlpVersion("mlp", *model, "32-true");
  server = StartServer(/*calibration_items=*/16);
  ASSERT_NE(server, nullptr);
  EXPECT_THAT(Served(*server, "mlp"), ElementsAre(1));
  ASSERT_OK(server->Load("mlp"));
  EXPECT_THAT(Served(*server, "mlp"), ElementsAre(1));
  ASSERT_OK(server->Rollback("mlp", 4));
  EXPECT_THAT(Served(*server, "mlp"), ElementsAre(4));
}

TEST_F(ModelServerTest, StatisticsCountRequestsPerVersion) {
  std::unique_ptr<Model> model = BuildMlp(22);
  AddMlpVersion("mlp", *model, "32-true");
  AddMlpVersion("mlp", *model, "32-true");
  auto server = StartServer(/*calibration_items=*/16);
  ASSERT_NE(server, nullptr);
  v1::VersionPolicy all;
  all.mutable_all();
  ASSERT_OK(server->SetVersionPolicy("mlp", all));
  inference::ModelInferRequest request = MlpRequest("mlp", torch::rand({3, kFeatures}));
  for (int i = 0; i < 2; ++i) ASSERT_OK(InferSync(*server, request));
  request.set_model_version("1");
  ASSERT_OK(InferSync(*server, request));
  request.set_model_version("7");
  EXPECT_THAT(InferSync(*server, request), StatusIs(absl::StatusCode::kNotFound, _));

  absl::StatusOr<inference::ModelStatisticsResponse> stats = server->Statistics("mlp", "2");
  ASSERT_OK(stats);
  ASSERT_EQ(stats->model_stats_size(), 1);
  const inference::ModelStatistics& v2 = stats->model_stats(0);
  EXPECT_EQ(v2.version(), "2");
  EXPECT_EQ(v2.inference_stats().success().count(), 2u);
  EXPECT_EQ(v2.inference_count(), 6u);
  EXPECT_GE(v2.execution_count(), 1u);
  EXPECT_GT(v2.inference_stats().compute_infer().ns(), 0u);
  stats = server->Statistics("mlp", "1");
  ASSERT_OK(stats);
  EXPECT_EQ(stats->model_stats(0).inference_stats().success().count(), 1u);
  stats = server->Statistics("", "");
  ASSERT_OK(stats);
  EXPECT_GE(stats->model_stats_size(), 2);
  EXPECT_THAT(server->Statistics("nope", ""), StatusIs(absl::StatusCode::kNotFound, _));
  EXPECT_THAT(server->Statistics("mlp", "9"), StatusIs(absl::StatusCode::kNotFound, _));
}

// A version whose cast misses its promotion policy is refused; the one
// serving keeps serving, and a policy selecting only it changes nothing.
TEST_F(ModelServerTest, AVersionMissingItsPromotionPolicyLeavesTheOldOneServing) {
  std::unique_ptr<Model> model = BuildMlp(23);
  AddMlpVersion("mlp", *model);
  auto server = StartServer(/*calibration_items=*/16);
  ASSERT_NE(server, nullptr);
  v1::ModelConfig strict = MlpConfig("bf16-true");
  // Any bf16 rounding misses this.
  strict.mutable_promotion()->set_max_mean_rel_diff(1e-12);
  ASSERT_OK(repository_->AddVersion("mlp", strict, [&](const std::string& dir, v1::ModelConfig&) {
    RETURN_IF_ERROR(SaveWeights(dir + "/weights.pt", model->State()));
    return WriteMlpCalibration(dir, 128);
  }));
  EXPECT_THAT(server->Load("mlp"),
              StatusIs(absl::StatusCode::kUnavailable,
                       AllOf(HasSubstr("promotion policy"), HasSubstr("version 1 keeps serving"))));
  EXPECT_THAT(Served(*server, "mlp"), ElementsAre(1));
  absl::StatusOr<inference::ModelInferResponse> response =
      InferSync(*server, MlpRequest("mlp", torch::rand({1, kFeatures})));
  ASSERT_OK(response);
  EXPECT_EQ(response->model_version(), "1");
  const v1::ModelStatus listed = server->List()[0];
  EXPECT_EQ(listed.versions(1).state(), "UNAVAILABLE");
  EXPECT_THAT(listed.versions(1).reason(), HasSubstr("max_mean_rel_diff"));
  EXPECT_GT(listed.versions(1).validation().mean_rel_diff(), 0.0);  // the figures stay listed

  EXPECT_THAT(server->SetVersionPolicy("mlp", Specific({2})),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("promotion policy")));
  EXPECT_THAT(Served(*server, "mlp"), ElementsAre(1));
  EXPECT_TRUE(server->List()[0].version_policy().has_latest());  // model.json unchanged
  // latest 2 serves what passes: version 1 alone.
  ASSERT_OK(server->SetVersionPolicy("mlp", Latest(2)));
  EXPECT_THAT(Served(*server, "mlp"), ElementsAre(1));
}

}  // namespace
}  // namespace mantissa
