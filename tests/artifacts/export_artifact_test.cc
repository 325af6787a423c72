#include "server/artifacts/export_artifact.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace mantissa {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::StatusIs;

ExportArtifact LanguageModelArtifact() {
  ExportArtifact a;
  a.job_id = "job-7";
  a.model = "gpt";
  a.model_options = {{"vocab", "32"}, {"seq_len", "12"}, {"d_model", "16"}};
  a.data.task = Task::kLanguageModel;
  a.data.input_shape = {12};
  a.data.vocab_size = 32;
  a.data.seq_len = 12;
  a.SetSignature();
  a.dataset = "synthetic-tokens";
  a.dataset_options = {{"vocab", "16"}, {"seq_len", "8"}};
  a.seed = 0xfedcba9876543210ULL;  // beyond int64: round-trips through its bits
  a.trained_precision = "bf16-mixed";
  a.weights = {{"tok.weight", torch::randn({32, 16})}, {"0.ln.bias", torch::zeros({16})}};
  a.calibration.inputs = {{"input_ids", torch::randint(0, 16, {5, 8}, torch::kInt64)}};
  a.calibration.origin = "synthetic-tokens test split";
  return a;
}

TEST(ExportArtifactTest, RoundTrips) {
  testing::TempDir dir;
  const std::string path = ExportArtifact::PathFor(dir.path(), "job-7");
  EXPECT_EQ(path, dir.path() + "/jobs/job-7/export.pt");
  const ExportArtifact written = LanguageModelArtifact();
  ASSERT_OK(ExportArtifact::Write(path, written));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));

  auto read = ExportArtifact::Read(path);
  ASSERT_OK(read);
  EXPECT_EQ(read->job_id, "job-7");
  EXPECT_EQ(read->model, "gpt");
  EXPECT_EQ(read->model_options, written.model_options);
  EXPECT_EQ(read->data.task, Task::kLanguageModel);
  EXPECT_THAT(read->data.input_shape, ElementsAre(12));
  EXPECT_EQ(read->data.vocab_size, 32);
  EXPECT_EQ(read->data.seq_len, 12);
  EXPECT_EQ(read->data.num_classes, 0);
  ASSERT_EQ(read->inputs.size(), 1u);
  EXPECT_EQ(read->inputs[0].name, "input_ids");
  EXPECT_EQ(read->inputs[0].datatype, "INT64");
  EXPECT_THAT(read->inputs[0].shape, ElementsAre(-1));
  ASSERT_EQ(read->outputs.size(), 1u);
  EXPECT_EQ(read->outputs[0].name, "logits");
  EXPECT_EQ(read->outputs[0].datatype, "FP32");
  EXPECT_THAT(read->outputs[0].shape, ElementsAre(32));
  EXPECT_EQ(read->dataset, "synthetic-tokens");
  EXPECT_EQ(read->dataset_options, written.dataset_options);
  EXPECT_EQ(read->seed, written.seed);
  EXPECT_EQ(read->trained_precision, "bf16-mixed");
  ASSERT_EQ(read->weights.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(read->weights[i].first, written.weights[i].first);
    EXPECT_TRUE(torch::equal(read->weights[i].second, written.weights[i].second));
  }
  EXPECT_EQ(read->calibration.origin, "synthetic-tokens test split");
  EXPECT_EQ(read->calibration.items(), 5);
  ASSERT_EQ(read->calibration.inputs.size(), 1u);
  EXPECT_EQ(read->calibration.inputs[0].first, "input_ids");
  EXPECT_TRUE(
      torch::equal(read->calibration.inputs[0].second, written.calibration.inputs[0].second));
}

TEST(ExportArtifactTest, ClassifierSignature) {
  ExportArtifact a;
  a.data.input_shape = {1, 28, 28};
  a.data.num_classes = 10;
  a.SetSignature();
  ASSERT_EQ(a.inputs.size(), 1u);
  EXPECT_EQ(a.inputs[0].name, "input");
  EXPECT_EQ(a.inputs[0].datatype, "FP32");
  EXPECT_THAT(a.inputs[0].shape, ElementsAre(1, 28, 28));
  EXPECT_THAT(a.outputs[0].shape, ElementsAre(10));
  EXPECT_EQ(ExportArtifact::CalibrationItemsFor(a.data, 10000), ExportArtifact::kCalibrationItems);
  EXPECT_EQ(ExportArtifact::CalibrationItemsFor(a.data, 8), 8);
  DataSpec tokens;
  tokens.task = Task::kLanguageModel;
  tokens.seq_len = 1024;
  EXPECT_EQ(ExportArtifact::CalibrationItemsFor(tokens, 10000), 4);
  tokens.seq_len = 1 << 20;
  EXPECT_EQ(ExportArtifact::CalibrationItemsFor(tokens, 10000), 1);
}

TEST(ExportArtifactTest, RefusesMissingAndForeignFiles) {
  testing::TempDir dir;
  EXPECT_THAT(ExportArtifact::Read(dir.File("none.pt")),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("none.pt")));
  { std::ofstream(dir.File("junk.pt")) << "junk"; }
  EXPECT_THAT(ExportArtifact::Read(dir.File("junk.pt")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("junk.pt")));

  // A calibration sample is not an artifact, nor the other way round.
  const ExportArtifact artifact = LanguageModelArtifact();
  ASSERT_OK(WriteCalibrationSample(dir.File("calibration.pt"), artifact.calibration));
  EXPECT_THAT(ExportArtifact::Read(dir.File("calibration.pt")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a export artifact")));
  ASSERT_OK(ExportArtifact::Write(dir.File("export.pt"), artifact));
  EXPECT_THAT(ReadCalibrationSample(dir.File("export.pt")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("export.pt")));
  auto sample = ReadCalibrationSample(dir.File("calibration.pt"));
  ASSERT_OK(sample);
  EXPECT_EQ(sample->origin, artifact.calibration.origin);
  EXPECT_EQ(sample->items(), 5);

  ExportArtifact unsigned_artifact = artifact;
  unsigned_artifact.inputs.clear();
  EXPECT_THAT(ExportArtifact::Write(dir.File("x.pt"), unsigned_artifact),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("inputs")));
}

TEST(ExportArtifactTest, CalibrationLabelsRoundTripAndStayOptional) {
  testing::TempDir dir;
  CalibrationSample sample;
  sample.inputs = {{"input", torch::randn({4, 6})}};
  sample.origin = "fashion-mnist test split";
  sample.labels = torch::tensor({3, 0, 9, 1}, torch::kInt64);
  ASSERT_OK(WriteCalibrationSample(dir.File("labelled.pt"), sample));
  auto read = ReadCalibrationSample(dir.File("labelled.pt"));
  ASSERT_OK(read);
  ASSERT_TRUE(read->labels.defined());
  EXPECT_EQ(read->labels.scalar_type(), torch::kInt64);
  EXPECT_TRUE(torch::equal(read->labels, sample.labels));

  // The artifact carries them too.
  ExportArtifact artifact = LanguageModelArtifact();
  artifact.calibration.labels = torch::arange(5, torch::kInt64);
  ASSERT_OK(ExportArtifact::Write(dir.File("export.pt"), artifact));
  auto artifact_read = ExportArtifact::Read(dir.File("export.pt"));
  ASSERT_OK(artifact_read);
  EXPECT_TRUE(torch::equal(artifact_read->calibration.labels, artifact.calibration.labels));

  // A sample written before samples kept labels: the same keys, no
  // labels. It reads, without labels.
  {
    torch::serialize::OutputArchive old;
    old.write("kind", c10::IValue(std::string("mantissa calibration sample")));
    old.write("format_version", c10::IValue(int64_t{1}));
    torch::serialize::OutputArchive inputs;
    inputs.write("t0", torch::randn({3, 6}));
    inputs.write("names", c10::IValue(std::string("input")));
    old.write("calibration_inputs", inputs);
    old.write("calibration_origin", c10::IValue(std::string("synthetic test split")));
    old.save_to(dir.File("old.pt"));
  }
  auto old = ReadCalibrationSample(dir.File("old.pt"));
  ASSERT_OK(old);
  EXPECT_EQ(old->items(), 3);
  EXPECT_EQ(old->origin, "synthetic test split");
  EXPECT_FALSE(old->labels.defined());

  // Labels that do not cover the items are bad content.
  sample.labels = torch::tensor({1, 2}, torch::kInt64);
  ASSERT_OK(WriteCalibrationSample(dir.File("short.pt"), sample));
  EXPECT_THAT(ReadCalibrationSample(dir.File("short.pt")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("calibration labels"), HasSubstr("expected int64 [4]"))));
}

}  // namespace
}  // namespace mantissa
