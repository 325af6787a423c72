#include "client/model_format.h"

#include <string>

#include "client/tensor_bytes.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mantissa::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

v1::ModelVersionStatus Version(const std::string& name, int64_t version, const std::string& state) {
  v1::ModelVersionStatus status;
  v1::ModelConfig& config = *status.mutable_config();
  config.set_name(name);
  config.set_version(version);
  config.set_precision("bf16-true");
  config.set_platform("mantissa_libtorch");
  config.set_source_job_id("j1");
  status.set_state(state);
  return status;
}

v1::HalfCastValidation Validation() {
  v1::HalfCastValidation validation;
  validation.set_calibration_source("synthetic test split, first 256 items");
  validation.set_calibration_items(256);
  validation.set_max_abs_diff(0.015625);
  validation.set_mean_rel_diff(0.00412);
  validation.set_top1_agreement(0.99609375);
  validation.set_finite(true);
  validation.set_duration_seconds(0.8);
  return validation;
}

TEST(FormatModelTableTest, OneRowPerModelForItsLatestVersion) {
  v1::ListModelsResponse response;
  v1::ModelStatus& mlp = *response.add_models();
  mlp.set_name("mlp");
  *mlp.add_versions() = Version("mlp", 1, "UNAVAILABLE");
  v1::ModelVersionStatus& latest = *mlp.add_versions() = Version("mlp", 2, "READY");
  *latest.mutable_validation() = Validation();

  v1::ModelStatus& net = *response.add_models();
  net.set_name("net");
  v1::ModelVersionStatus& refused = *net.add_versions() = Version("net", 1, "UNAVAILABLE");
  refused.mutable_config()->set_source_job_id("");
  refused.mutable_config()->set_platform("pytorch_libtorch");
  refused.mutable_config()->set_precision("16-true");
  refused.set_reason("the cast produced non-finite outputs (fp16 overflow)");
  v1::HalfCastValidation overflow = Validation();
  overflow.clear_top1_agreement();
  overflow.set_max_abs_diff(std::numeric_limits<double>::infinity());
  overflow.set_finite(false);
  *refused.mutable_validation() = overflow;

  mlp.add_served_versions(2);
  EXPECT_EQ(FormatModelTable(response),
            "NAME  VERSION  STATE        PRECISION  SOURCE       MAX |DIFF|  REL DIFF   TOP-1  "
            "SERVED  POLICY\n"
            "mlp         2  READY        bf16-true  j1               0.0156    0.412%  99.61%  "
            "2       latest 1\n"
            "net         1  UNAVAILABLE  16-true    torchscript  non-finite         -       -  "
            "-       latest 1\n"
            "\n"
            "net version 1: UNAVAILABLE: the cast produced non-finite outputs (fp16 overflow)\n");
}

TEST(FormatModelTableTest, EmptyAndUnvalidated) {
  EXPECT_EQ(FormatModelTable(v1::ListModelsResponse()), "no models\n");
  v1::ListModelsResponse response;
  v1::ModelStatus& model = *response.add_models();
  model.set_name("m");
  *model.add_versions() = Version("m", 3, "LOADING");
  EXPECT_EQ(FormatModelTable(response),
            "NAME  VERSION  STATE    PRECISION  SOURCE  MAX |DIFF|  REL DIFF  TOP-1  SERVED  "
            "POLICY\n"
            "m           3  LOADING  bf16-true  j1               -         -      -  -       "
            "latest 1\n"
            "\n"
            "m version 3: LOADING\n");
}

// Two versions served by `all`, a newer one refused by its promotion policy
// with its layer and accuracy figures; the row shows the newest served one.
TEST(FormatModelTableTest, PolicyServedVersionsAndRefusedFigures) {
  v1::ListModelsResponse response;
  v1::ModelStatus& mlp = *response.add_models();
  mlp.set_name("mlp");
  mlp.mutable_version_policy()->mutable_all();
  mlp.add_served_versions(1);
  mlp.add_served_versions(2);
  *mlp.add_versions() = Version("mlp", 1, "READY");
  *mlp.add_versions() = Version("mlp", 2, "READY");
  v1::ModelVersionStatus& refused = *mlp.add_versions() = Version("mlp", 3, "UNAVAILABLE");
  refused.set_reason("model mlp version 3: the bf16-true cast misses its promotion policy");
  v1::HalfCastValidation validation = Validation();
  validation.set_layer_tolerance(0.01);
  v1::LayerDivergence& layer = *validation.add_layers();
  layer.set_layer("0");
  layer.set_mean_rel_diff(0.002);
  v1::LayerDivergence& divergent = *validation.add_layers();
  divergent.set_layer("2");
  divergent.set_mean_rel_diff(0.0213);
  validation.set_first_divergent_layer("2");
  validation.set_fp32_accuracy(0.9141);
  validation.set_cast_accuracy(0.9102);
  validation.set_labelled_items(128);
  *refused.mutable_validation() = validation;

  const std::string out = FormatModelTable(response);
  EXPECT_THAT(out, HasSubstr("mlp         2  READY"));
  EXPECT_THAT(out, HasSubstr("  1,2     all\n"));
  EXPECT_THAT(out, HasSubstr("mlp version 3: UNAVAILABLE: model mlp version 3: the bf16-true "
                             "cast misses its promotion policy\n"));
  EXPECT_THAT(out, HasSubstr("mlp version 3: first divergent layer: 2 (mean rel diff 0.0213 > "
                             "tolerance 0.01)\n"));
  EXPECT_THAT(out, HasSubstr("mlp version 3: accuracy: fp32 91.41%, cast 91.02% on 128 "
                             "labelled items\n"));
  EXPECT_THAT(out, Not(HasSubstr("mlp version 1:")));
}

TEST(FormatModelStatusTest, PolicyServedAndOwnReasons) {
  v1::ModelStatus model;
  model.set_name("m");
  model.mutable_version_policy()->mutable_specific()->add_versions(1);
  model.add_served_versions(1);
  *model.add_versions() = Version("m", 1, "READY");
  v1::ModelVersionStatus& v2 = *model.add_versions() = Version("m", 2, "UNAVAILABLE");
  v2.set_reason("not selected by the version policy (specific 1)");
  EXPECT_EQ(FormatModelStatus(model), "model m: policy specific 1; serving version 1\n");
  v2.set_reason("refused");
  EXPECT_EQ(FormatModelStatus(model),
            "model m: policy specific 1; serving version 1\nversion 2: UNAVAILABLE: refused\n");
  EXPECT_EQ(FormatVersionPolicy(v1::VersionPolicy()), "latest 1");
}

TEST(FormatStatisticsTest, MeansPerVersionAndBatchSize) {
  EXPECT_EQ(FormatStatistics(inference::ModelStatisticsResponse()), "no statistics\n");
  inference::ModelStatisticsResponse response;
  inference::ModelStatistics& m = *response.add_model_stats();
  m.set_name("mlp");
  m.set_version("2");
  m.set_inference_count(12);
  m.set_execution_count(3);
  inference::InferStatistics& s = *m.mutable_inference_stats();
  s.mutable_success()->set_count(4);
  s.mutable_fail()->set_count(1);
  s.mutable_queue()->set_ns(2'000'000);          // 0.5 ms each
  s.mutable_compute_input()->set_ns(400'000);    // +
  s.mutable_compute_infer()->set_ns(3'200'000);  // +
  s.mutable_compute_output()->set_ns(400'000);   // = 1 ms each
  inference::InferBatchStatistics& b = *m.add_batch_stats();
  b.set_batch_size(4);
  b.mutable_compute_infer()->set_count(3);
  b.mutable_compute_infer()->set_ns(2'400'000);
  EXPECT_EQ(FormatStatistics(response),
            "MODEL  VERSION  OK  FAILED  QUEUE MS  COMPUTE MS  INFERENCES  EXECUTIONS\n"
            "mlp          2   4       1     0.500       1.000          12           3\n"
            "\n"
            "mlp version 2 batch 4: 3 executions, mean forward 0.800 ms\n");
}

TEST(FormatModelVersionTest, ReadyWithValidation) {
  v1::ModelVersionStatus model = Version("mlp", 2, "READY");
  *model.mutable_validation() = Validation();
  EXPECT_EQ(FormatModelVersion(model),
            "model mlp version 2: READY, bf16-true\n"
            "validation: max |diff| 0.0156, mean rel diff 0.412%, top-1 agreement 99.61%\n"
            "  on synthetic test split, first 256 items in 800 ms\n");
}

TEST(FormatModelVersionTest, RefusedShowsTheReason) {
  v1::ModelVersionStatus model = Version("net", 1, "UNAVAILABLE");
  model.set_reason("non-finite outputs");
  v1::HalfCastValidation validation = Validation();
  validation.set_finite(false);
  validation.clear_top1_agreement();
  *model.mutable_validation() = validation;
  const std::string out = FormatModelVersion(model);
  EXPECT_THAT(out, HasSubstr("model net version 1: UNAVAILABLE, bf16-true\n"));
  EXPECT_THAT(out, HasSubstr("validation: NON-FINITE outputs\n"));
  EXPECT_THAT(out, Not(HasSubstr("max |diff|")));
  EXPECT_THAT(out, HasSubstr("reason: non-finite outputs\n"));
}

inference::ModelInferResponse Logits() {
  inference::ModelInferResponse response;
  response.set_model_name("mlp");
  response.set_model_version("2");
  auto* output = response.add_outputs();
  output->set_name("logits");
  output->set_datatype("BF16");
  output->add_shape(2);
  output->add_shape(3);
  *response.add_raw_output_contents() = *EncodeValues("BF16", {0.5, 2.5, -1, 3, 0.25, 3.5});
  return response;
}

TEST(FormatInferResponseTest, ArgmaxPerItemOfTwoDimensionalOutputs) {
  absl::StatusOr<std::string> out = FormatInferResponse(Logits());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out,
            "model mlp version 2\n"
            "output logits BF16 [2,3]\n"
            "  item 0: argmax 1 (2.5)\n"
            "  item 1: argmax 2 (3.5)\n");
}

TEST(FormatInferResponseTest, OtherShapesShowTheirFirstValues) {
  inference::ModelInferResponse response;
  response.set_model_name("gpt");
  auto* output = response.add_outputs();
  output->set_name("logits");
  output->set_datatype("FP16");
  for (int64_t d : {1, 2, 5}) output->add_shape(d);
  *response.add_raw_output_contents() = *EncodeValues("FP16", {0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  absl::StatusOr<std::string> out = FormatInferResponse(response);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(*out,
            "model gpt\n"
            "output logits FP16 [1,2,5]\n"
            "  values: 0, 1, 2, 3, 4, 5, 6, 7, ... (10 values; --json prints them all)\n");
}

TEST(FormatInferResponseTest, TypedContentsAndBadBytes) {
  inference::ModelInferResponse response;
  response.set_model_name("m");
  auto* output = response.add_outputs();
  output->set_name("y");
  output->set_datatype("FP32");
  output->add_shape(1);
  output->add_shape(2);
  output->mutable_contents()->add_fp32_contents(0.1f);
  output->mutable_contents()->add_fp32_contents(-3);
  absl::StatusOr<std::string> out = FormatInferResponse(response);
  ASSERT_TRUE(out.ok());
  EXPECT_THAT(*out, HasSubstr("  item 0: argmax 0 (0.1)\n"));

  *response.add_raw_output_contents() = "abc";
  EXPECT_THAT(std::string(FormatInferResponse(response).status().message()),
              HasSubstr("output y: 3 bytes are not a whole number of FP32 values"));
}

TEST(FormatInferResponseJsonTest, TheV2RestShape) {
  inference::ModelInferResponse response = Logits();
  response.set_id("r1");
  auto* ids = response.add_outputs();
  ids->set_name("ids");
  ids->set_datatype("INT64");
  ids->add_shape(2);
  *response.add_raw_output_contents() = *EncodeValues("INT64", {7, -2});
  auto* odd = response.add_outputs();
  odd->set_name("odd");
  odd->set_datatype("FP32");
  odd->add_shape(3);
  *response.add_raw_output_contents() = *EncodeValues(
      "FP32",
      {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity(), 0.1});
  absl::StatusOr<std::string> json = FormatInferResponseJson(response);
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_EQ(*json,
            "{\n"
            "  \"model_name\": \"mlp\",\n"
            "  \"model_version\": \"2\",\n"
            "  \"id\": \"r1\",\n"
            "  \"outputs\": [\n"
            "    {\"name\": \"logits\", \"datatype\": \"BF16\", \"shape\": [2, 3], "
            "\"data\": [0.5, 2.5, -1, 3, 0.25, 3.5]},\n"
            "    {\"name\": \"ids\", \"datatype\": \"INT64\", \"shape\": [2], \"data\": [7, -2]},\n"
            "    {\"name\": \"odd\", \"datatype\": \"FP32\", \"shape\": [3], "
            "\"data\": [\"NaN\", \"Infinity\", 0.1]}\n"
            "  ]\n"
            "}\n");
}

TEST(FormatFloatTest, ShortestRoundTrip) {
  EXPECT_EQ(FormatFloat(0.1f), "0.1");
  EXPECT_EQ(FormatFloat(2.453125), "2.453125");
  EXPECT_EQ(FormatFloat(1.0f / 3.0f), "0.33333334");
  EXPECT_EQ(FormatFloat(-1e-8f), "-1e-08");
}

}  // namespace
}  // namespace mantissa::cli
