#include "server/serving/servable.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/script.h>

#include <future>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <string>

#include "prometheus/text_serializer.h"
#include "server/common/status_macros.h"
#include "server/models/model_registry.h"
#include "server/serving/half_cast_validator.h"
#include "server/serving/model_exporter.h"
#include "server/serving/model_repository.h"
#include "tests/serving/serving_test_util.h"
#include "tests/testing/status_matchers.h"

namespace mantissa {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using testing::StatusIs;

class ServableTest : public RepositoryFixture {
 protected:
  // Adds `config` as the next version of `name` with `weights` and, as an
  // export does, a calibration sample (128 mlp items or 64 gpt windows);
  // returns the servable's options for it.
  Servable::Options AddVersion(const std::string& name, const v1::ModelConfig& config,
                               const NamedTensors& weights, bool with_calibration = true) {
    return OptionsFor(
        name, repository_->AddVersion(
                  name, config, [&](const std::string& dir, v1::ModelConfig&) -> absl::Status {
                    RETURN_IF_ERROR(SaveWeights(dir + "/weights.pt", weights));
                    if (!with_calibration) return absl::OkStatus();
                    return config.task() == "language_model" ? WriteGptCalibration(dir, 64)
                                                             : WriteMlpCalibration(dir, 128);
                  }));
  }

  // A TorchScript file registered as `name` (platform pytorch_libtorch).
  Servable::Options AddTorchScript(const std::string& name, const std::string& file,
                                   const std::string& precision, std::vector<v1::TensorSpec> inputs,
                                   std::vector<v1::TensorSpec> outputs) {
    v1::RegisterModelRequest request;
    request.set_name(name);
    request.set_torchscript_path(file);
    request.set_precision(precision);
    for (auto& spec : inputs) *request.add_inputs() = spec;
    for (auto& spec : outputs) *request.add_outputs() = spec;
    return OptionsFor(name, ModelExporter::RegisterTorchScript(*repository_, request, precision));
  }

  // The servable's options for a version just added (or a failed test).
  Servable::Options OptionsFor(const std::string& name,
                               const absl::StatusOr<v1::ModelConfig>& added) {
    EXPECT_OK(added);
    Servable::Options options;
    if (!added.ok()) return options;
    options.config = *added;
    options.version_dir = repository_->VersionDir(name, added->version());
    options.metrics = &metrics_;
    return options;
  }

  static NamedTensors StateOf(Model& model) {
    NamedTensors state;
    for (const auto& [name, t] : model.State()) state.emplace_back(name, t.detach().clone());
    return state;
  }

  Metrics metrics_;
};

TEST(ServingPrecisionTest, DtypesAndResolution) {
  EXPECT_EQ(*ServingDtype("bf16-true"), torch::kBFloat16);
  EXPECT_EQ(*ServingDtype("16-true"), torch::kHalf);
  EXPECT_EQ(*ServingDtype("32-true"), torch::kFloat32);
  EXPECT_THAT(ServingDtype("bf16-mixed"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("precision"), HasSubstr("bf16-true, 16-true, 32-true"),
                             HasSubstr("autocast"))));

  const DeviceCapabilities cpu = DeviceCapabilities::Probe(torch::kCPU);
  ASSERT_TRUE(cpu.bfloat16);
  ASSERT_FALSE(cpu.float16) << "this test expects a CPU build without fp16 compute";
  EXPECT_EQ(*ResolveServingPrecision("", cpu), "bf16-true");
  EXPECT_EQ(*ResolveServingPrecision("32-true", cpu), "32-true");
  EXPECT_THAT(ResolveServingPrecision("16-true", cpu),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("precision: 16-true"), HasSubstr("cpu"),
                             HasSubstr("valid precisions on this device: bf16-true, 32-true"))));
  EXPECT_THAT(ResolveServingPrecision("fp16", cpu),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'fp16'")));

  DeviceCapabilities gpu = cpu;
  gpu.float16 = true;
  EXPECT_EQ(*ResolveServingPrecision("", gpu), "16-true");
  EXPECT_EQ(*ResolveServingPrecision("16-true", gpu), "16-true");
}

TEST_F(ServableTest, Bf16CastIsValidatedOnTheDatasetAndServes) {
  std::unique_ptr<Model> fp32 = BuildMlp(1);
  ASSERT_NE(fp32, nullptr);
  Servable::Options options = AddVersion("mlp", MlpConfig("bf16-true"), StateOf(*fp32));
  v1::HalfCastValidation reported;
  auto servable = Servable::Load(options, &reported);
  ASSERT_OK(servable);
  const v1::HalfCastValidation& v = (*servable)->validation();
  EXPECT_EQ(v.calibration_source(), "synthetic test split, first 128 items");
  EXPECT_EQ(v.calibration_items(), 128);
  EXPECT_GT(v.max_abs_diff(), 0.0);
  EXPECT_LT(v.max_abs_diff(), 0.1);
  EXPECT_GT(v.mean_rel_diff(), 0.0);
  EXPECT_LT(v.mean_rel_diff(), 0.02);
  ASSERT_TRUE(v.has_top1_agreement());
  EXPECT_GE(v.top1_agreement(), 0.9);
  EXPECT_TRUE(v.finite());
  EXPECT_GE(v.duration_seconds(), 0.0);
  EXPECT_EQ(reported.SerializeAsString(), v.SerializeAsString());
  // flatten, linear, relu, linear: none past the default tolerance.
  ASSERT_EQ(v.layers_size(), 4);
  EXPECT_EQ(v.layers(3).layer(), "3");
  EXPECT_EQ(v.first_divergent_layer(), "");
  EXPECT_EQ(v.layer_tolerance(), HalfCastValidator::kDefaultLayerTolerance);
  std::cout << "mlp bf16-true validation: " << v.ShortDebugString() << "\n";

  EXPECT_EQ((*servable)->dtype(), torch::kBFloat16);
  EXPECT_EQ((*servable)->max_batch_size(), 64);
  const torch::Tensor x = torch::rand({5, kFeatures});
  auto outputs = (*servable)->Run({x});
  ASSERT_OK(outputs);
  ASSERT_EQ(outputs->size(), 1u);
  const torch::Tensor logits = (*outputs)[0];
  EXPECT_EQ(logits.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(logits.sizes(), torch::IntArrayRef({5, kClasses}));
  const torch::Tensor want = Fp32Logits(*fp32, x);
  EXPECT_TRUE(torch::allclose(logits.to(torch::kFloat32), want, /*rtol=*/0.02, /*atol=*/0.05))
      << logits << want;
  EXPECT_FALSE(torch::equal(logits.to(torch::kFloat32), want));
}

TEST_F(ServableTest, Fp32ServesTheSameNumbers) {
  std::unique_ptr<Model> fp32 = BuildMlp(2);
  ASSERT_NE(fp32, nullptr);
  auto servable = Servable::Load(AddVersion("mlp", MlpConfig("32-true"), StateOf(*fp32)));
  ASSERT_OK(servable);
  const v1::HalfCastValidation& v = (*servable)->validation();
  EXPECT_EQ(v.max_abs_diff(), 0.0);
  EXPECT_EQ(v.mean_rel_diff(), 0.0);
  EXPECT_EQ(v.top1_agreement(), 1.0);
  EXPECT_TRUE(v.finite());

  const torch::Tensor x = torch::rand({3, kFeatures});
  auto outputs = (*servable)->Run({x});
  ASSERT_OK(outputs);
  EXPECT_EQ((*outputs)[0].scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::allclose((*outputs)[0], Fp32Logits(*fp32, x), 1e-5, 1e-6));
}

// Versions exported before versions kept a calibration sample.
TEST_F(ServableTest, AVersionWithoutACalibrationSampleFallsBackToRandomInputs) {
  std::unique_ptr<Model> fp32 = BuildMlp(3);
  Servable::Options options =
      AddVersion("mlp", MlpConfig("bf16-true"), StateOf(*fp32), /*with_calibration=*/false);
  options.calibration_items = 40;
  auto servable = Servable::Load(options);
  ASSERT_OK(servable);
  const v1::HalfCastValidation& v = (*servable)->validation();
  EXPECT_THAT(v.calibration_source(), HasSubstr("random inputs, 40 items"));
  EXPECT_THAT(v.calibration_source(), HasSubstr("the version has no calibration sample"));
  EXPECT_THAT(v.calibration_source(), HasSubstr("export its job again"));
  EXPECT_EQ(v.calibration_items(), 40);
  EXPECT_TRUE(v.finite());
}

TEST_F(ServableTest, ACalibrationSampleThatDoesNotFitFallsBackToRandomInputs) {
  std::unique_ptr<Model> fp32 = BuildMlp(3);
  Servable::Options options =
      AddVersion("mlp", MlpConfig("bf16-true"), StateOf(*fp32), /*with_calibration=*/false);
  ASSERT_OK(WriteCalibration(options.version_dir, "input", torch::rand({8, kFeatures + 1}),
                             "synthetic test split"));
  options.calibration_items = 40;
  auto servable = Servable::Load(options);
  ASSERT_OK(servable);
  const v1::HalfCastValidation& v = (*servable)->validation();
  EXPECT_THAT(v.calibration_source(), HasSubstr("random inputs, 40 items"));
  EXPECT_THAT(v.calibration_source(), HasSubstr("its calibration sample gave no batch"));
  EXPECT_THAT(v.calibration_source(), HasSubstr("the model takes [16]"));
}

TEST_F(ServableTest, WeightsMustFitTheModel) {
  std::unique_ptr<Model> fp32 = BuildMlp(4);
  NamedTensors state = StateOf(*fp32);
  NamedTensors missing(state.begin() + 1, state.end());
  EXPECT_THAT(Servable::Load(AddVersion("a", MlpConfig("32-true"), missing)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("lack tensor " + state[0].first), HasSubstr("mlp"))));

  NamedTensors reshaped = state;
  reshaped[0].second = torch::zeros({3, 3});
  EXPECT_THAT(Servable::Load(AddVersion("b", MlpConfig("32-true"), reshaped)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("tensor " + state[0].first), HasSubstr("[3, 3]"))));

  NamedTensors extra = state;
  extra.emplace_back("stray", torch::zeros({1}));
  EXPECT_THAT(Servable::Load(AddVersion("c", MlpConfig("32-true"), extra)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("hold tensor stray")));
}

TEST_F(ServableTest, BadConfigsAreRefusedNamingTheField) {
  std::unique_ptr<Model> fp32 = BuildMlp(5);
  v1::ModelConfig config = MlpConfig("bf16-mixed");
  EXPECT_THAT(Servable::Load(AddVersion("a", config, StateOf(*fp32))),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("config.json"), HasSubstr("precision"))));
  config = MlpConfig("32-true");
  config.set_platform("onnx");
  EXPECT_THAT(Servable::Load(AddVersion("b", config, StateOf(*fp32))),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("platform 'onnx'")));
  config = MlpConfig("32-true");
  config.mutable_batching()->set_max_batch_size(0);
  EXPECT_THAT(Servable::Load(AddVersion("c", config, StateOf(*fp32))),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("batching.max_batch_size")));
}

TEST_F(ServableTest, OverflowingCastIsRefused) {
  const std::string file = dir_.File("overflow.pt");
  WriteOverflowingScale(file, 4);
  Servable::Options options =
      AddTorchScript("big", file, "bf16-true", {Spec("x", "FP32", {4})}, {Spec("y", "FP32", {4})});
  options.calibration_items = 10;
  v1::HalfCastValidation reported;
  EXPECT_THAT(Servable::Load(options, &reported),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("model big version 1"), HasSubstr("bf16-true"),
                             HasSubstr("non-finite outputs (40 of 40; bf16 overflow?)"),
                             HasSubstr("random inputs, 10 items"))));
  EXPECT_FALSE(reported.finite());
  EXPECT_FALSE(reported.has_top1_agreement());  // custom models have no classes
  // TorchScript has no layers of its own: the output is where it diverges.
  ASSERT_EQ(reported.layers_size(), 1);
  EXPECT_EQ(reported.layers(0).layer(), "output");
  EXPECT_EQ(reported.first_divergent_layer(), "output");

  // The same file in fp32 is fine: x * 3.4e38 stays finite for x < 1.
  Servable::Options fp32 =
      AddTorchScript("big32", file, "32-true", {Spec("x", "FP32", {4})}, {Spec("y", "FP32", {4})});
  auto servable = Servable::Load(fp32);
  ASSERT_OK(servable);
  EXPECT_TRUE((*servable)->validation().finite());
  auto out = (*servable)->Run({torch::full({1, 4}, 0.5f)});
  ASSERT_OK(out);
  EXPECT_FLOAT_EQ((*out)[0][0][0].item<float>(), 1.7e38f);
}

TEST_F(ServableTest, TorchScriptOutputsMustMatchTheDeclaredCount) {
  const std::string file = dir_.File("one_output.pt");
  WriteOverflowingScale(file, 2);
  Servable::Options options = AddTorchScript("two", file, "32-true", {Spec("x", "FP32", {2})},
                                             {Spec("y", "FP32", {2}), Spec("z", "FP32", {2})});
  EXPECT_THAT(Servable::Load(options), StatusIs(absl::StatusCode::kInvalidArgument,
                                                AllOf(HasSubstr("forward returned 1 tensors"),
                                                      HasSubstr("declares 2 outputs (y, z)"))));
}

TEST_F(ServableTest, EnqueueRunsOnTheBatcherAndCountsBatches) {
  std::unique_ptr<Model> fp32 = BuildMlp(6);
  auto servable = Servable::Load(AddVersion("mlp", MlpConfig("bf16-true"), StateOf(*fp32)));
  ASSERT_OK(servable);
  std::promise<absl::StatusOr<std::vector<torch::Tensor>>> answer;
  DynamicBatcher::Task task;
  task.inputs = {torch::rand({2, kFeatures}).to(torch::kBFloat16)};
  task.done = [&answer](absl::StatusOr<std::vector<torch::Tensor>> out) {
    answer.set_value(std::move(out));
  };
  ASSERT_OK((*servable)->Enqueue(std::move(task)));
  auto out = answer.get_future().get();
  ASSERT_OK(out);
  EXPECT_EQ((*out)[0].sizes(), torch::IntArrayRef({2, kClasses}));

  prometheus::TextSerializer serializer;
  const std::string text = serializer.Serialize(metrics_.registry()->Collect());
  EXPECT_THAT(text, HasSubstr("mantissa_inference_batch_size_count{model=\"mlp\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_inference_batch_size_sum{model=\"mlp\"} 2\n"));

  (*servable)->Stop();
  DynamicBatcher::Task late;
  late.inputs = {torch::rand({1, kFeatures})};
  late.done = [](absl::StatusOr<std::vector<torch::Tensor>>) { ADD_FAILURE() << "ran"; };
  EXPECT_THAT((*servable)->Enqueue(std::move(late)),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("shutting down")));
}

TEST_F(ServableTest, LanguageModelWindowsAndTokenIdsAreCheckedBeforeQueueing) {
  std::unique_ptr<Model> gpt = BuildGpt(8);
  ASSERT_NE(gpt, nullptr);
  Servable::Options options = AddVersion("gpt", GptConfig(/*test_tokens=*/1024), StateOf(*gpt));
  options.calibration_items = 8;
  auto servable = Servable::Load(options);
  ASSERT_OK(servable);
  const v1::HalfCastValidation& v = (*servable)->validation();
  EXPECT_EQ(v.calibration_source(), "synthetic-tokens test split, first 8 token windows of 16");
  EXPECT_GE(v.top1_agreement(), 0.8);
  EXPECT_TRUE(v.finite());
  std::cout << "gpt bf16-true validation: " << v.ShortDebugString() << "\n";

  auto enqueue = [&](torch::Tensor ids) {
    DynamicBatcher::Task task;
    task.inputs = {std::move(ids)};
    auto answer = std::make_shared<std::promise<absl::StatusOr<std::vector<torch::Tensor>>>>();
    task.done = [answer](absl::StatusOr<std::vector<torch::Tensor>> out) {
      answer->set_value(std::move(out));
    };
    absl::Status status = (*servable)->Enqueue(std::move(task));
    if (!status.ok()) return absl::StatusOr<std::vector<torch::Tensor>>(status);
    return answer->get_future().get();
  };
  auto ok = enqueue(torch::randint(0, 32, {2, 5}, torch::kInt64));
  ASSERT_OK(ok);
  EXPECT_EQ((*ok)[0].sizes(), torch::IntArrayRef({2, 5, 32}));
  EXPECT_THAT(enqueue(torch::zeros({1, 17}, torch::kInt64)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("input 'input_ids'"), HasSubstr("1..16 tokens"))));
  EXPECT_THAT(enqueue(torch::full({1, 4}, 32, torch::kInt64)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("token id 32"), HasSubstr("[0, 32)"))));
  EXPECT_THAT(enqueue(torch::full({1, 4}, -1, torch::kInt64)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("token id -1")));
}

TEST(HalfCastValidatorTest, RandomInputsFollowTheDeclaredSpec) {
  v1::ModelConfig config;
  config.set_task("custom");
  *config.add_inputs() = Spec("a", "BF16", {-1, 3});
  *config.add_inputs() = Spec("b", "INT64", {2});
  CalibrationBatch batch = HalfCastValidator::RandomInputs(config, 5, 1);
  ASSERT_EQ(batch.inputs.size(), 2u);
  EXPECT_EQ(batch.items, 5);
  EXPECT_EQ(batch.source, "random inputs, 5 items");
  EXPECT_EQ(batch.inputs[0].sizes(), torch::IntArrayRef({5, HalfCastValidator::kVariableDim, 3}));
  EXPECT_EQ(batch.inputs[0].scalar_type(), torch::kFloat32);
  EXPECT_GE(batch.inputs[0].min().item<float>(), 0.0f);
  EXPECT_LT(batch.inputs[0].max().item<float>(), 1.0f);
  EXPECT_EQ(batch.inputs[1].sizes(), torch::IntArrayRef({5, 2}));
  EXPECT_EQ(batch.inputs[1].scalar_type(), torch::kInt64);
  // Seeded: the same spec gives the same batch.
  EXPECT_TRUE(
      torch::equal(batch.inputs[0], HalfCastValidator::RandomInputs(config, 5, 1).inputs[0]));
}

TEST(HalfCastValidatorTest, ComparesInChunksAndCountsOnlyNewNonFiniteOutputs) {
  CalibrationBatch batch;
  batch.inputs = {torch::arange(10, torch::kFloat32).reshape({5, 2})};
  batch.items = 5;
  batch.source = "test inputs";
  int calls = 0;
  auto reference =
      [&](const std::vector<torch::Tensor>& in) -> absl::StatusOr<std::vector<torch::Tensor>> {
    ++calls;
    torch::Tensor out = in[0].clone();
    out.index_put_({0, 0}, std::numeric_limits<float>::infinity());  // fp32 itself overflows
    return std::vector<torch::Tensor>{out};
  };
  auto cast =
      [&](const std::vector<torch::Tensor>& in) -> absl::StatusOr<std::vector<torch::Tensor>> {
    torch::Tensor out = in[0].clone() + 0.5;
    out.index_put_({0, 0}, std::numeric_limits<float>::infinity());
    out.index_put_({0, 1}, std::numeric_limits<float>::quiet_NaN());  // the cast's fault
    return std::vector<torch::Tensor>{out.to(torch::kBFloat16)};
  };
  HalfCastValidator::Options options;
  options.model = "model m version 1";
  options.precision = "16-true";
  options.top1_agreement = true;
  options.chunk_items = 2;
  auto result = HalfCastValidator::Compare(options, batch, reference, cast);
  ASSERT_OK(result);
  EXPECT_EQ(calls, 3);  // 2 + 2 + 1 items
  EXPECT_EQ(result->elements, 10);
  // Element [0, 1] of each chunk; [0, 0] is not finite in fp32 either.
  EXPECT_EQ(result->non_finite, 3);
  EXPECT_FALSE(result->validation.finite());
  EXPECT_DOUBLE_EQ(result->validation.max_abs_diff(), 0.5);
  EXPECT_THAT(HalfCastValidator::Verdict(options, *result),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("model m version 1: casting to 16-true"),
                             HasSubstr("(3 of 10; fp16 overflow?) on test inputs"))));
}

}  // namespace
}  // namespace mantissa
