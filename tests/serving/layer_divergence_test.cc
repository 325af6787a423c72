// Where a half cast diverges from fp32 (HalfCastValidation.layers), the
// accuracy of both on the calibration labels, and the promotion policy that
// refuses a cast missing its figures.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <iostream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "server/common/status_macros.h"
#include "server/serving/half_cast_validator.h"
#include "server/serving/model_exporter.h"
#include "server/serving/servable.h"
#include "tests/serving/serving_test_util.h"
#include "tests/testing/status_matchers.h"

namespace mantissa {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::StatusIs;

std::vector<std::string> LayerNames(const v1::HalfCastValidation& v) {
  std::vector<std::string> names;
  for (const v1::LayerDivergence& layer : v.layers()) names.push_back(layer.layer());
  return names;
}

void PrintLayers(const std::string& what, const v1::HalfCastValidation& v) {
  std::cout << what << ": mean_rel_diff " << v.mean_rel_diff() << ", top1 " << v.top1_agreement()
            << ", first divergent '" << v.first_divergent_layer() << "'\n";
  for (const v1::LayerDivergence& layer : v.layers()) {
    std::cout << "  " << layer.layer() << ": max_abs_diff " << layer.max_abs_diff()
              << ", mean_rel_diff " << layer.mean_rel_diff() << "\n";
  }
}

NamedTensors StateOf(Model& model) {
  NamedTensors state;
  for (const auto& [name, t] : model.State()) state.emplace_back(name, t.detach().clone());
  return state;
}

// Sets the mlp's tensor `name` (e.g. "3.weight") to `value` everywhere.
void Fill(NamedTensors& state, const std::string& name, float value) {
  for (auto& [n, t] : state) {
    if (n == name) t.fill_(value);
  }
}

class LayerDivergenceTest : public RepositoryFixture {
 protected:
  // `config` as the next version of `name` with `weights` and the mlp's
  // calibration sample (128 items, with `labels` when defined).
  Servable::Options AddMlp(const std::string& name, const v1::ModelConfig& config,
                           const NamedTensors& weights, torch::Tensor inputs = {},
                           torch::Tensor labels = {}) {
    auto added = repository_->AddVersion(
        name, config, [&](const std::string& dir, v1::ModelConfig&) -> absl::Status {
          RETURN_IF_ERROR(SaveWeights(dir + "/weights.pt", weights));
          if (!inputs.defined()) return WriteMlpCalibration(dir, 128);
          CalibrationSample sample;
          sample.inputs.emplace_back("input", inputs);
          sample.labels = labels;
          sample.origin = "synthetic test split";
          return WriteCalibrationSample(dir + "/" + HalfCastValidator::kCalibrationFile, sample);
        });
    EXPECT_OK(added);
    Servable::Options options;
    if (!added.ok()) return options;
    options.config = *added;
    options.version_dir = repository_->VersionDir(name, added->version());
    return options;
  }
};

TEST(LayerTraceTest, FindsTheFirstLayerWhereTheCastDiverges) {
  // fp32 and a bf16 copy whose layer "3" (the last Linear) was changed:
  // layers 0..2 only differ by bf16 rounding, layer 3 by the change.
  std::unique_ptr<Model> fp32 = BuildMlp(21);
  std::unique_ptr<Model> cast = BuildMlp(21);
  ASSERT_NE(fp32, nullptr);
  ASSERT_NE(cast, nullptr);
  {
    torch::NoGradGuard no_grad;
    for (auto& [name, t] : cast->State()) {
      if (name == "3.weight") t.mul_(2.0);
    }
    cast->ToDtype(torch::kBFloat16);
  }
  CalibrationBatch batch;
  torch::manual_seed(5);
  batch.inputs = {torch::randn({50, kFeatures})};
  batch.items = 50;
  batch.source = "test inputs";
  int chunks = 0;
  auto trace = [&chunks](Model& model, torch::Dtype dtype) {
    return [&chunks, &model, dtype](
               const std::vector<torch::Tensor>& in) -> absl::StatusOr<HalfCastValidator::Layers> {
      ++chunks;
      return model.ForwardLayers(in[0].to(dtype));
    };
  };
  HalfCastValidator::Options options;
  options.model = "model m version 1";
  options.precision = "bf16-true";
  options.chunk_items = 16;
  options.layer_tolerance = HalfCastValidator::kDefaultLayerTolerance;
  HalfCastValidator::Result result;
  ASSERT_OK(HalfCastValidator::CompareLayers(options, batch, trace(*fp32, torch::kFloat32),
                                             trace(*cast, torch::kBFloat16), &result));
  EXPECT_EQ(chunks, 8);  // 4 chunks of 16, 16, 16, 2 items, two models each
  const v1::HalfCastValidation& v = result.validation;
  PrintLayers("mlp bf16, layer 3 doubled", v);
  EXPECT_THAT(LayerNames(v), ElementsAre("0", "1", "2", "3"));
  EXPECT_EQ(v.first_divergent_layer(), "3");
  EXPECT_EQ(v.layer_tolerance(), HalfCastValidator::kDefaultLayerTolerance);
  for (int i = 0; i < 3; ++i) {
    EXPECT_GT(v.layers(i).mean_rel_diff(), 0.0) << i;  // bf16 rounding
    EXPECT_LT(v.layers(i).mean_rel_diff(), 0.01) << i;
  }
  EXPECT_GT(v.layers(3).mean_rel_diff(), 0.5);  // the doubled weights
  EXPECT_GT(v.layers(3).max_abs_diff(), v.layers(1).max_abs_diff());

  // A tolerance below bf16's rounding flags the first layer, the input.
  options.layer_tolerance = 1e-12;
  ASSERT_OK(HalfCastValidator::CompareLayers(options, batch, trace(*fp32, torch::kFloat32),
                                             trace(*cast, torch::kBFloat16), &result));
  EXPECT_EQ(result.validation.first_divergent_layer(), "0");
  EXPECT_EQ(result.validation.layers_size(), 4);  // replaced, not appended
}

TEST(LayerTraceTest, PromoteNamesEveryMissedFigureAndItsThreshold) {
  HalfCastValidator::Options options;
  options.model = "model m version 2";
  options.precision = "bf16-true";
  options.top1_agreement = true;
  HalfCastValidator::Result result;
  v1::HalfCastValidation& v = result.validation;
  v.set_calibration_source("fashion-mnist test split, first 256 items");
  v.set_top1_agreement(0.98);
  v.set_mean_rel_diff(0.031);
  v.set_first_divergent_layer("3");

  v1::PromotionPolicy policy;
  EXPECT_OK(HalfCastValidator::Promote(options, result, policy));  // nothing set
  policy.set_min_top1_agreement(0.98);
  policy.set_max_mean_rel_diff(0.05);
  EXPECT_OK(HalfCastValidator::Promote(options, result, policy));  // both met, bounds included

  policy.set_min_top1_agreement(0.995);
  EXPECT_THAT(HalfCastValidator::Promote(options, result, policy),
              StatusIs(absl::StatusCode::kUnavailable,
                       AllOf(HasSubstr("model m version 2: the bf16-true cast misses its "
                                       "promotion policy: top1_agreement 0.9800 < "
                                       "min_top1_agreement 0.9950 (on fashion-mnist test split, "
                                       "first 256 items); first divergent layer: 3"),
                             Not(HasSubstr("mean_rel_diff")))));
  policy.set_max_mean_rel_diff(0.01);
  EXPECT_THAT(HalfCastValidator::Promote(options, result, policy),
              StatusIs(absl::StatusCode::kUnavailable,
                       HasSubstr("top1_agreement 0.9800 < min_top1_agreement 0.9950, mean_rel_diff "
                                 "0.031 > max_mean_rel_diff 0.01 (on fashion-mnist")));

  // A model without top-1 (custom task) cannot meet a top-1 threshold.
  v.clear_top1_agreement();
  EXPECT_THAT(HalfCastValidator::Promote(options, result, policy),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("model m version 2"), HasSubstr("min_top1_agreement"),
                             HasSubstr("no top-1 agreement"))));
  EXPECT_EQ(HalfCastValidator::LayerTolerance(policy), 0.01);
  EXPECT_EQ(HalfCastValidator::LayerTolerance({}), HalfCastValidator::kDefaultLayerTolerance);
}

TEST_F(LayerDivergenceTest, AHealthyBf16CastListsEveryLayerAndDivergesNowhere) {
  std::unique_ptr<Model> fp32 = BuildMlp(22);
  ASSERT_NE(fp32, nullptr);
  v1::HalfCastValidation reported;
  auto servable = Servable::Load(AddMlp("mlp", MlpConfig("bf16-true"), StateOf(*fp32)), &reported);
  ASSERT_OK(servable);
  const v1::HalfCastValidation& v = (*servable)->validation();
  PrintLayers("mlp bf16-true (synthetic, random weights)", v);
  EXPECT_THAT(LayerNames(v), ElementsAre("0", "1", "2", "3"));
  EXPECT_EQ(v.first_divergent_layer(), "");
  EXPECT_EQ(v.layer_tolerance(), HalfCastValidator::kDefaultLayerTolerance);
  // The last layer is the output Compare measured.
  EXPECT_NEAR(v.layers(3).mean_rel_diff(), v.mean_rel_diff(), 1e-9);
  EXPECT_NEAR(v.layers(3).max_abs_diff(), v.max_abs_diff(), 1e-9);
  EXPECT_FALSE(v.has_fp32_accuracy());  // the sample has no labels
  EXPECT_EQ(v.labelled_items(), 0);
  EXPECT_EQ(reported.SerializeAsString(), v.SerializeAsString());
}

TEST_F(LayerDivergenceTest, AnOverflowingLayerIsTheFirstDivergentOne) {
  // Layer "1" keeps activations small, so layer "3"'s weight 3.4e38 gives
  // finite fp32 logits; bf16 rounds that weight itself to inf.
  std::unique_ptr<Model> fp32 = BuildMlp(23);
  ASSERT_NE(fp32, nullptr);
  NamedTensors state = StateOf(*fp32);
  Fill(state, "1.weight", 1e-4f);
  Fill(state, "1.bias", 0.0f);
  Fill(state, "3.weight", 3.4e38f);
  Fill(state, "3.bias", 0.0f);
  torch::manual_seed(8);
  v1::HalfCastValidation reported;
  EXPECT_THAT(
      Servable::Load(AddMlp("big", MlpConfig("bf16-true"), state, torch::rand({64, kFeatures})),
                     &reported),
      StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("non-finite outputs")));
  PrintLayers("mlp bf16-true, layer 3 weights 3.4e38", reported);
  EXPECT_FALSE(reported.finite());
  EXPECT_THAT(LayerNames(reported), ElementsAre("0", "1", "2", "3"));
  EXPECT_EQ(reported.first_divergent_layer(), "3");
  for (int i = 0; i < 3; ++i) EXPECT_LT(reported.layers(i).mean_rel_diff(), 0.01) << i;
}

TEST_F(LayerDivergenceTest, APromotionPolicyRefusesTheCastAndKeepsItsFigures) {
  std::unique_ptr<Model> fp32 = BuildMlp(24);
  ASSERT_NE(fp32, nullptr);
  v1::ModelConfig config = MlpConfig("bf16-true");
  config.mutable_promotion()->set_max_mean_rel_diff(1e-12);
  v1::HalfCastValidation reported;
  EXPECT_THAT(Servable::Load(AddMlp("gated", config, StateOf(*fp32)), &reported),
              StatusIs(absl::StatusCode::kUnavailable,
                       AllOf(HasSubstr("model gated version 1: the bf16-true cast misses its "
                                       "promotion policy: mean_rel_diff "),
                             HasSubstr("> max_mean_rel_diff 1e-12"),
                             HasSubstr("(on synthetic test split, first 128 items)"),
                             HasSubstr("first divergent layer: 0"))));
  EXPECT_GT(reported.mean_rel_diff(), 0.0);
  EXPECT_TRUE(reported.finite());
  EXPECT_TRUE(reported.has_top1_agreement());
  EXPECT_EQ(reported.layers_size(), 4);
  EXPECT_EQ(reported.layer_tolerance(), 1e-12);
  EXPECT_EQ(reported.first_divergent_layer(), "0");  // the input's own rounding

  // The same weights with a policy the cast meets serve.
  config.mutable_promotion()->set_max_mean_rel_diff(0.05);
  config.mutable_promotion()->set_min_top1_agreement(0.5);
  auto servable = Servable::Load(AddMlp("gated", config, StateOf(*fp32)));
  ASSERT_OK(servable);
  EXPECT_EQ((*servable)->validation().layer_tolerance(), 0.05);
}

TEST_F(LayerDivergenceTest, ATop1PolicyOnACustomModelIsRefusedAtLoad) {
  const std::string file = dir_.File("scale.pt");
  WriteOverflowingScale(file, 4);
  v1::RegisterModelRequest request;
  request.set_name("custom");
  request.set_torchscript_path(file);
  *request.add_inputs() = Spec("x", "FP32", {4});
  *request.add_outputs() = Spec("y", "FP32", {4});
  auto added = ModelExporter::RegisterTorchScript(*repository_, request, "32-true");
  ASSERT_OK(added);
  Servable::Options options;
  options.config = *added;
  options.version_dir = repository_->VersionDir("custom", 1);
  options.calibration_items = 8;
  auto servable = Servable::Load(options);
  ASSERT_OK(servable);
  // TorchScript exposes no layers: its output is the one layer.
  EXPECT_THAT(LayerNames((*servable)->validation()), ElementsAre("output"));
  EXPECT_EQ((*servable)->validation().first_divergent_layer(), "");

  // A config edited by hand past the export's check.
  options.config.mutable_promotion()->set_min_top1_agreement(0.9);
  EXPECT_THAT(Servable::Load(options),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("model custom version 1"), HasSubstr("min_top1_agreement"),
                             HasSubstr("no top-1 agreement"))));
}

TEST_F(LayerDivergenceTest, GptLayersAreTracedOverTheCalibrationWindows) {
  std::unique_ptr<Model> fp32 = BuildGpt(25);
  ASSERT_NE(fp32, nullptr);
  auto added = repository_->AddVersion(
      "lm", GptConfig(1024), [&](const std::string& dir, v1::ModelConfig&) -> absl::Status {
        RETURN_IF_ERROR(SaveWeights(dir + "/weights.pt", StateOf(*fp32)));
        return WriteGptCalibration(dir, 40);
      });
  ASSERT_OK(added);
  Servable::Options options;
  options.config = *added;
  options.version_dir = repository_->VersionDir("lm", 1);
  auto servable = Servable::Load(options);
  ASSERT_OK(servable);
  const v1::HalfCastValidation& v = (*servable)->validation();
  PrintLayers("gpt bf16-true (random weights)", v);
  EXPECT_THAT(LayerNames(v), ElementsAre("embedding", "blocks.0", "ln_f", "head"));
  EXPECT_EQ(v.first_divergent_layer(), "");
  EXPECT_FALSE(v.has_fp32_accuracy());  // language models have no labels
  for (const v1::LayerDivergence& layer : v.layers()) {
    EXPECT_GT(layer.mean_rel_diff(), 0.0) << layer.layer();
  }
  EXPECT_NEAR(v.layers(3).mean_rel_diff(), v.mean_rel_diff(), 1e-9);
}

// A classifier that learned something: trained here on separable data,
// exported from its job's artifact with the labels of its calibration items.
TEST_F(LayerDivergenceTest, AccuracyOfFp32AndTheCastSideBySide) {
  std::unique_ptr<Model> model = BuildMlp(26);
  ASSERT_NE(model, nullptr);
  torch::manual_seed(26);
  const torch::Tensor teacher = torch::randn({kFeatures, kClasses});
  const torch::Tensor x = torch::randn({640, kFeatures});
  const torch::Tensor y = x.matmul(teacher).argmax(1);
  {
    model->SetTraining(true);
    torch::optim::Adam optimizer(model->Parameters(), torch::optim::AdamOptions(1e-2));
    for (int step = 0; step < 150; ++step) {
      const int64_t begin = (step * 64) % 512;
      optimizer.zero_grad();
      torch::Tensor loss = torch::nn::functional::cross_entropy(
          model->Forward(x.narrow(0, begin, 64)), y.narrow(0, begin, 64));
      loss.backward();
      optimizer.step();
    }
    model->SetTraining(false);
  }
  const torch::Tensor test_x = x.narrow(0, 512, 128);
  const torch::Tensor test_y = y.narrow(0, 512, 128);
  const double want_accuracy =
      (Fp32Logits(*model, test_x).argmax(1) == test_y).to(torch::kFloat64).mean().item<double>();
  ASSERT_GT(want_accuracy, 0.8);

  ExportArtifact artifact = MlpArtifact("job-acc", *model);
  artifact.calibration.inputs = {{"input", test_x.contiguous()}};
  artifact.calibration.labels = test_y.contiguous();
  ASSERT_OK(ExportArtifact::Write(ExportArtifact::PathFor(dir_.path(), "job-acc"), artifact));
  v1::Job job;
  job.set_id("job-acc");
  job.set_state(v1::SUCCEEDED);
  job.set_effective_precision("32-true");
  v1::ExportModelRequest request;
  request.set_name("clf");
  request.set_job_id("job-acc");
  request.mutable_promotion()->set_min_top1_agreement(0.9);
  auto config = ModelExporter::ExportJob(*repository_, dir_.path(), job, request, "bf16-true");
  ASSERT_OK(config);

  Servable::Options options;
  options.config = *config;
  options.version_dir = repository_->VersionDir("clf", 1);
  auto servable = Servable::Load(options);
  ASSERT_OK(servable);
  const v1::HalfCastValidation& v = (*servable)->validation();
  PrintLayers("trained mlp bf16-true", v);
  std::cout << "  fp32_accuracy " << v.fp32_accuracy() << ", cast_accuracy " << v.cast_accuracy()
            << " on " << v.labelled_items() << " items\n";
  EXPECT_EQ(v.labelled_items(), 128);
  ASSERT_TRUE(v.has_fp32_accuracy());
  ASSERT_TRUE(v.has_cast_accuracy());
  EXPECT_DOUBLE_EQ(v.fp32_accuracy(), want_accuracy);
  EXPECT_NEAR(v.cast_accuracy(), v.fp32_accuracy(), 0.03);
  EXPECT_GE(v.top1_agreement(), 0.9);
  EXPECT_EQ(v.first_divergent_layer(), "");
}

}  // namespace
}  // namespace mantissa
