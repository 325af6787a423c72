#include "server/serving/model_exporter.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include "google/protobuf/util/message_differencer.h"
#include "server/artifacts/checkpoint.h"
#include "server/artifacts/export_artifact.h"
#include "server/common/option_reader.h"
#include "server/models/model_registry.h"
#include "server/precision/fp32_precision.h"
#include "server/serving/half_cast_validator.h"
#include "tests/serving/serving_test_util.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/torchscript_writer.h"

namespace mantissa {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::StatusIs;

const OptionMap kSyntheticOptions = {
    {"features", "6"}, {"classes", "3"}, {"train_size", "32"}, {"test_size", "8"}};

// What the synthetic dataset above gives.
DataSpec SyntheticData() {
  DataSpec data;
  data.input_shape = {6};
  data.num_classes = 3;
  return data;
}

// Token windows of 8 over a vocabulary of 16 (synthetic-tokens).
DataSpec TokenData() {
  DataSpec data;
  data.task = Task::kLanguageModel;
  data.input_shape = {8};
  data.vocab_size = 16;
  data.seq_len = 8;
  return data;
}

// A job record and the export artifact its successful run left in
// <state_dir>/jobs/<id>/, as the trainer writes it: the model built on
// `data`, the model's own data spec, 8 calibration items.
struct FinishedJob {
  v1::Job job;
  ExportArtifact artifact;
};

FinishedJob WriteFinishedJob(const std::string& state_dir, const std::string& id,
                             const std::string& model, const OptionMap& model_options,
                             const DataSpec& data = SyntheticData(),
                             const std::string& dataset = "synthetic",
                             const OptionMap& dataset_options = kSyntheticOptions) {
  FinishedJob out;
  v1::JobSpec& spec = *out.job.mutable_spec();
  spec.set_model(model);
  spec.mutable_model_options()->insert(model_options.begin(), model_options.end());
  spec.set_dataset(dataset);
  spec.mutable_dataset_options()->insert(dataset_options.begin(), dataset_options.end());
  spec.set_seed(7);
  spec.set_precision("32-true");
  out.job.set_id(id);
  out.job.set_state(v1::SUCCEEDED);
  out.job.set_effective_precision(spec.precision());

  auto config = ModelRegistry::Parse(model, model_options);
  EXPECT_OK(config);
  if (!config.ok()) return out;
  auto built = (*config)->Build(data);
  EXPECT_OK(built);
  if (!built.ok()) return out;
  ExportArtifact& artifact = out.artifact;
  artifact.job_id = id;
  artifact.model = model;
  artifact.model_options = model_options;
  artifact.data = (*config)->ModelDataSpec(data);
  artifact.SetSignature();
  artifact.dataset = dataset;
  artifact.dataset_options = dataset_options;
  artifact.seed = 7;
  artifact.trained_precision = spec.precision();
  for (const auto& [name, t] : (*built)->State()) {
    artifact.weights.emplace_back(name, t.detach().clone());
  }
  torch::manual_seed(3);
  artifact.calibration.inputs.emplace_back(
      artifact.inputs[0].name, data.task == Task::kLanguageModel
                                   ? torch::randint(0, data.vocab_size, {8, data.seq_len})
                                   : torch::randn({8, data.input_shape[0]}));
  artifact.calibration.origin = dataset + " test split";
  EXPECT_OK(ExportArtifact::Write(ExportArtifact::PathFor(state_dir, id), artifact));
  return out;
}

v1::ExportModelRequest ExportRequest(const std::string& name, const std::string& job_id) {
  v1::ExportModelRequest request;
  request.set_name(name);
  request.set_job_id(job_id);
  return request;
}

std::vector<int64_t> Shape(const v1::TensorSpec& spec) {
  return std::vector<int64_t>(spec.shape().begin(), spec.shape().end());
}

class ModelExporterTest : public RepositoryFixture {
 protected:
  std::string state_dir() const { return dir_.path(); }

  // Nothing was added, and nothing is left in staging.
  void ExpectEmptyRepository() {
    EXPECT_TRUE(repository_->ModelNames().empty());
    const std::string staging = dir_.File("models/.staging");
    std::error_code ec;
    if (fs::exists(staging, ec)) EXPECT_TRUE(fs::is_empty(staging)) << staging;
  }
};

TEST_F(ModelExporterTest, ExportsAnMlpJob) {
  const FinishedJob finished = WriteFinishedJob(state_dir(), "job-1", "mlp", {{"hidden", "16"}});
  v1::ExportModelRequest request = ExportRequest("clf", "job-1");
  request.mutable_batching()->set_max_batch_size(8);
  auto config =
      ModelExporter::ExportJob(*repository_, state_dir(), finished.job, request, "bf16-true");
  ASSERT_OK(config);
  EXPECT_EQ(config->name(), "clf");
  EXPECT_EQ(config->version(), 1);
  EXPECT_EQ(config->platform(), "mantissa_libtorch");
  EXPECT_EQ(config->model(), "mlp");
  EXPECT_EQ(config->model_options().at("hidden"), "16");
  EXPECT_EQ(config->task(), "classification");
  EXPECT_EQ(config->precision(), "bf16-true");
  EXPECT_EQ(config->num_classes(), 3);
  EXPECT_EQ(config->vocab_size(), 0);
  ASSERT_EQ(config->inputs_size(), 1);
  EXPECT_EQ(config->inputs(0).name(), "input");
  EXPECT_EQ(config->inputs(0).datatype(), "BF16");
  EXPECT_THAT(Shape(config->inputs(0)), ElementsAre(6));
  ASSERT_EQ(config->outputs_size(), 1);
  EXPECT_EQ(config->outputs(0).name(), "logits");
  EXPECT_EQ(config->outputs(0).datatype(), "BF16");
  EXPECT_THAT(Shape(config->outputs(0)), ElementsAre(3));
  EXPECT_EQ(config->batching().max_batch_size(), 8);
  EXPECT_FALSE(config->batching().has_max_queue_delay_us());
  EXPECT_EQ(config->weights_file(), "weights.pt");
  EXPECT_EQ(config->source_job_id(), "job-1");
  EXPECT_EQ(config->trained_precision(), "32-true");
  EXPECT_EQ(config->dataset(), "synthetic");
  EXPECT_EQ(ToOptionMap(config->dataset_options()), kSyntheticOptions);
  EXPECT_EQ(config->seed(), 7u);

  auto stored = repository_->ReadConfig("clf", 1);
  ASSERT_OK(stored);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*stored, *config));

  const std::string version_dir = repository_->VersionDir("clf", 1);
  auto weights = LoadWeights(version_dir + "/weights.pt");
  ASSERT_OK(weights);
  const NamedTensors& want = finished.artifact.weights;
  ASSERT_EQ(weights->size(), want.size());
  for (size_t i = 0; i < weights->size(); ++i) {
    const auto& [name, t] = (*weights)[i];
    EXPECT_EQ(name, want[i].first);
    EXPECT_EQ(t.scalar_type(), torch::kFloat32) << name;
    EXPECT_TRUE(torch::equal(t, want[i].second)) << name;
  }
  // The calibration sample travels with the version: loads read no dataset.
  auto sample = ReadCalibrationSample(version_dir + "/" + HalfCastValidator::kCalibrationFile);
  ASSERT_OK(sample);
  EXPECT_EQ(sample->origin, "synthetic test split");
  ASSERT_EQ(sample->inputs.size(), 1u);
  EXPECT_EQ(sample->inputs[0].first, "input");
  EXPECT_TRUE(
      torch::equal(sample->inputs[0].second, finished.artifact.calibration.inputs[0].second));

  // A second export is the next version; without batching, none is stored.
  auto second = ModelExporter::ExportJob(*repository_, state_dir(), finished.job,
                                         ExportRequest("clf", "job-1"), "32-true");
  ASSERT_OK(second);
  EXPECT_EQ(second->version(), 2);
  EXPECT_FALSE(second->has_batching());
  EXPECT_EQ(second->inputs(0).datatype(), "FP32");
  EXPECT_EQ(second->outputs(0).datatype(), "FP32");
  EXPECT_THAT(repository_->Versions("clf"), ElementsAre(1, 2));
}

TEST_F(ModelExporterTest, RecordsTheTrainedPrecisionAndServesInAnother) {
  FinishedJob finished = WriteFinishedJob(state_dir(), "job-bf16", "mlp", {{"hidden", "8"}});
  finished.job.set_effective_precision("bf16-true");
  auto config = ModelExporter::ExportJob(*repository_, state_dir(), finished.job,
                                         ExportRequest("half", "job-bf16"), "16-true");
  ASSERT_OK(config);
  EXPECT_EQ(config->trained_precision(), "bf16-true");
  EXPECT_EQ(config->inputs(0).datatype(), "FP16");
  auto weights = LoadWeights(repository_->VersionDir("half", 1) + "/weights.pt");
  ASSERT_OK(weights);
  ASSERT_EQ(weights->size(), finished.artifact.weights.size());
  for (const auto& [name, t] : *weights) EXPECT_EQ(t.scalar_type(), torch::kFloat32) << name;
}

TEST_F(ModelExporterTest, ExportsALanguageModelWithTheModelsVocabulary) {
  const OptionMap tokens = {{"vocab", "16"},
                            {"period", "4"},
                            {"seq_len", "8"},
                            {"train_tokens", "256"},
                            {"test_tokens", "64"}};
  // Built wider than the dataset: the logits have 32 classes, windows up to 12.
  const FinishedJob finished = WriteFinishedJob(
      state_dir(), "job-gpt", "gpt",
      {{"vocab", "32"}, {"seq_len", "12"}, {"d_model", "16"}, {"layers", "1"}, {"heads", "2"}},
      TokenData(), "synthetic-tokens", tokens);
  auto config = ModelExporter::ExportJob(*repository_, state_dir(), finished.job,
                                         ExportRequest("lm", "job-gpt"), "bf16-true");
  ASSERT_OK(config);
  EXPECT_EQ(config->task(), "language_model");
  EXPECT_EQ(config->vocab_size(), 32);
  EXPECT_EQ(config->seq_len(), 12);
  EXPECT_EQ(config->num_classes(), 0);
  ASSERT_EQ(config->inputs_size(), 1);
  EXPECT_EQ(config->inputs(0).name(), "input_ids");
  EXPECT_EQ(config->inputs(0).datatype(), "INT64");
  EXPECT_THAT(Shape(config->inputs(0)), ElementsAre(-1));
  EXPECT_EQ(config->outputs(0).datatype(), "BF16");
  // The last position's logits (all positions on request).
  EXPECT_THAT(Shape(config->outputs(0)), ElementsAre(32));
}

TEST_F(ModelExporterTest, ExportsATorchScriptJobWithItsModule) {
  const std::string module = dir_.File("user_mlp.pt");
  ASSERT_OK(testing::WriteTorchScriptMlp(module, 6, 8, 3));
  const FinishedJob finished =
      WriteFinishedJob(state_dir(), "job-ts", "torchscript", {{"path", module}});
  auto config = ModelExporter::ExportJob(*repository_, state_dir(), finished.job,
                                         ExportRequest("ts", "job-ts"), "bf16-true");
  ASSERT_OK(config);
  EXPECT_EQ(config->platform(), "mantissa_libtorch");
  EXPECT_EQ(config->model(), "torchscript");
  EXPECT_EQ(config->model_options().at("path"), "module.ts");
  EXPECT_EQ(config->task(), "classification");
  const std::string version_dir = repository_->VersionDir("ts", 1);
  EXPECT_EQ(fs::file_size(version_dir + "/module.ts"), fs::file_size(module));
  auto weights = LoadWeights(version_dir + "/weights.pt");
  ASSERT_OK(weights);
  ASSERT_EQ(weights->size(), finished.artifact.weights.size());
  EXPECT_EQ((*weights)[0].first, finished.artifact.weights[0].first);
}

TEST_F(ModelExporterTest, RefusesJobsThatDidNotSucceed) {
  FinishedJob finished = WriteFinishedJob(state_dir(), "job-2", "mlp", {{"hidden", "8"}});
  for (v1::JobState state : {v1::QUEUED, v1::RUNNING, v1::FAILED, v1::CANCELLED}) {
    finished.job.set_state(state);
    EXPECT_THAT(ModelExporter::ExportJob(*repository_, state_dir(), finished.job,
                                         ExportRequest("m", "job-2"), "bf16-true"),
                StatusIs(absl::StatusCode::kFailedPrecondition,
                         HasSubstr("job job-2 is " + v1::JobState_Name(state))));
  }
  ExpectEmptyRepository();
}

TEST_F(ModelExporterTest, RefusesAMissingCheckpoint) {
  FinishedJob finished = WriteFinishedJob(state_dir(), "job-3", "mlp", {{"hidden", "8"}});
  finished.job.set_id("job-without-checkpoint");
  EXPECT_THAT(ModelExporter::ExportJob(*repository_, state_dir(), finished.job,
                                       ExportRequest("m", "job-without-checkpoint"), "bf16-true"),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr(Checkpoint::PathFor(state_dir(), "job-without-checkpoint"))));
  ExpectEmptyRepository();
}

// Jobs that finished before jobs wrote export artifacts keep only their
// checkpoint, which does not say what data the model takes.
TEST_F(ModelExporterTest, RefusesAJobWithACheckpointButNoArtifactSayingWhatToDo) {
  FinishedJob finished = WriteFinishedJob(state_dir(), "job-old", "mlp", {{"hidden", "8"}});
  fs::remove(ExportArtifact::PathFor(state_dir(), "job-old"));
  auto model = ModelRegistry::Parse("mlp", {{"hidden", "8"}});
  ASSERT_OK(model);
  auto built = (*model)->Build(SyntheticData());
  ASSERT_OK(built);
  torch::optim::SGD optimizer((*built)->Parameters(), torch::optim::SGDOptions(0.1));
  Fp32Precision precision;
  ASSERT_OK(Checkpoint::Save(Checkpoint::PathFor(state_dir(), "job-old"), {.step = 10}, "{}",
                             {built->get(), &optimizer, &precision, torch::kCPU}));
  const absl::Status status = ModelExporter::ExportJob(*repository_, state_dir(), finished.job,
                                                       ExportRequest("m", "job-old"), "bf16-true")
                                  .status();
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kFailedPrecondition,
                               HasSubstr("job job-old has a checkpoint")));
  EXPECT_THAT(std::string(status.message()),
              HasSubstr(ExportArtifact::PathFor(state_dir(), "job-old")));
  EXPECT_THAT(std::string(status.message()), HasSubstr("resume_from job-old"));
  ExpectEmptyRepository();
}

TEST_F(ModelExporterTest, RefusesAnArtifactThatDoesNotRead) {
  FinishedJob finished = WriteFinishedJob(state_dir(), "job-bad", "mlp", {{"hidden", "8"}});
  { std::ofstream(ExportArtifact::PathFor(state_dir(), "job-bad")) << "not an archive"; }
  EXPECT_THAT(
      ModelExporter::ExportJob(*repository_, state_dir(), finished.job,
                               ExportRequest("m", "job-bad"), "bf16-true"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("job job-bad: export artifact")));
  ExpectEmptyRepository();
}

TEST_F(ModelExporterTest, RefusesWeightsThatDoNotFitTheModel) {
  FinishedJob finished = WriteFinishedJob(state_dir(), "job-4", "mlp", {{"hidden", "8"}});
  finished.artifact.model_options["hidden"] = "12";
  ASSERT_OK(
      ExportArtifact::Write(ExportArtifact::PathFor(state_dir(), "job-4"), finished.artifact));
  EXPECT_THAT(ModelExporter::ExportJob(*repository_, state_dir(), finished.job,
                                       ExportRequest("m", "job-4"), "bf16-true"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("does not fit model mlp: it holds 1.weight [8, 6], the model "
                                 "has [12, 6]")));
  ExpectEmptyRepository();
}

// The artifact describes the model: a dataset that is gone since is never
// read.
TEST_F(ModelExporterTest, ReadsNoDataset) {
  const FinishedJob finished =
      WriteFinishedJob(state_dir(), "job-5", "mlp", {{"hidden", "8"}}, SyntheticData(), "csv",
                       {{"path", dir_.File("gone.csv")}});
  auto config = ModelExporter::ExportJob(*repository_, state_dir(), finished.job,
                                         ExportRequest("m", "job-5"), "bf16-true");
  ASSERT_OK(config);
  EXPECT_EQ(config->dataset(), "csv");
  EXPECT_THAT(Shape(config->inputs(0)), ElementsAre(6));
}

TEST_F(ModelExporterTest, ValidatesNamePrecisionAndBatching) {
  const FinishedJob finished = WriteFinishedJob(state_dir(), "job-6", "mlp", {{"hidden", "8"}});
  auto export_with = [&](const v1::ExportModelRequest& request, const std::string& precision) {
    return ModelExporter::ExportJob(*repository_, state_dir(), finished.job, request, precision)
        .status();
  };
  EXPECT_THAT(export_with(ExportRequest("bad/name", "job-6"), "bf16-true"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("name: 'bad/name'")));
  EXPECT_THAT(export_with(ExportRequest("m", "job-6"), "bf16-mixed"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("precision: 'bf16-mixed'")));
  for (int32_t size : {0, -1, 4097}) {
    v1::ExportModelRequest request = ExportRequest("m", "job-6");
    request.mutable_batching()->set_max_batch_size(size);
    EXPECT_THAT(export_with(request, "bf16-true"),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("batching.max_batch_size: " + std::to_string(size))));
  }
  for (int64_t delay : {-1, 1000001}) {
    v1::ExportModelRequest request = ExportRequest("m", "job-6");
    request.mutable_batching()->set_max_queue_delay_us(delay);
    EXPECT_THAT(export_with(request, "bf16-true"),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("batching.max_queue_delay_us: " + std::to_string(delay))));
  }
  ExpectEmptyRepository();
  // The limits themselves are valid.
  v1::ExportModelRequest request = ExportRequest("m", "job-6");
  request.mutable_batching()->set_max_batch_size(4096);
  request.mutable_batching()->set_max_queue_delay_us(0);
  auto config =
      ModelExporter::ExportJob(*repository_, state_dir(), finished.job, request, "bf16-true");
  ASSERT_OK(config);
  EXPECT_TRUE(config->batching().has_max_queue_delay_us());
  EXPECT_EQ(config->batching().max_queue_delay_us(), 0);
}

TEST_F(ModelExporterTest, CopiesThePromotionPolicyAndTheCalibrationLabels) {
  FinishedJob finished = WriteFinishedJob(state_dir(), "job-p", "mlp", {{"hidden", "8"}});
  finished.artifact.calibration.labels = torch::tensor({0, 1, 2, 0, 1, 2, 0, 1}, torch::kInt64);
  ASSERT_OK(
      ExportArtifact::Write(ExportArtifact::PathFor(state_dir(), "job-p"), finished.artifact));
  v1::ExportModelRequest request = ExportRequest("gated", "job-p");
  request.mutable_promotion()->set_min_top1_agreement(0.995);
  request.mutable_promotion()->set_max_mean_rel_diff(0.01);
  auto config =
      ModelExporter::ExportJob(*repository_, state_dir(), finished.job, request, "bf16-true");
  ASSERT_OK(config);
  EXPECT_EQ(config->promotion().min_top1_agreement(), 0.995);
  EXPECT_EQ(config->promotion().max_mean_rel_diff(), 0.01);
  auto stored = repository_->ReadConfig("gated", 1);
  ASSERT_OK(stored);
  EXPECT_EQ(stored->promotion().min_top1_agreement(), 0.995);
  auto sample = ReadCalibrationSample(repository_->VersionDir("gated", 1) + "/" +
                                      HalfCastValidator::kCalibrationFile);
  ASSERT_OK(sample);
  ASSERT_TRUE(sample->labels.defined());
  EXPECT_TRUE(torch::equal(sample->labels, finished.artifact.calibration.labels));

  // Without a policy none is stored: nothing gates the version.
  config = ModelExporter::ExportJob(*repository_, state_dir(), finished.job,
                                    ExportRequest("gated", "job-p"), "bf16-true");
  ASSERT_OK(config);
  EXPECT_FALSE(config->has_promotion());
}

TEST_F(ModelExporterTest, ValidatesThePromotionPolicyBeforeWritingAnything) {
  const FinishedJob finished = WriteFinishedJob(state_dir(), "job-v", "mlp", {{"hidden", "8"}});
  auto export_with = [&](const v1::PromotionPolicy& promotion) {
    v1::ExportModelRequest request = ExportRequest("m", "job-v");
    *request.mutable_promotion() = promotion;
    return ModelExporter::ExportJob(*repository_, state_dir(), finished.job, request, "bf16-true")
        .status();
  };
  for (double bad : {-0.1, 1.5, std::nan("")}) {
    v1::PromotionPolicy promotion;
    promotion.set_min_top1_agreement(bad);
    EXPECT_THAT(export_with(promotion),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(HasSubstr("promotion.min_top1_agreement"), HasSubstr("[0, 1]"))))
        << bad;
  }
  for (double bad : {-1e-9, std::numeric_limits<double>::infinity(), std::nan("")}) {
    v1::PromotionPolicy promotion;
    promotion.set_max_mean_rel_diff(bad);
    EXPECT_THAT(export_with(promotion),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(HasSubstr("promotion.max_mean_rel_diff"), HasSubstr(">= 0"))))
        << bad;
  }
  ExpectEmptyRepository();
  // The bounds themselves are valid.
  v1::PromotionPolicy promotion;
  promotion.set_min_top1_agreement(1.0);
  promotion.set_max_mean_rel_diff(0.0);
  EXPECT_OK(export_with(promotion));
}

TEST(ModelExporterWeightsTest, RoundTripsAndRejectsOtherFiles) {
  testing::TempDir dir;
  const NamedTensors tensors = {{"0.weight", torch::randn({3, 2})},
                                {"bn.num_batches_tracked", torch::tensor(int64_t{5})}};
  ASSERT_OK(SaveWeights(dir.File("w.pt"), tensors));
  auto loaded = LoadWeights(dir.File("w.pt"));
  ASSERT_OK(loaded);
  ASSERT_EQ(loaded->size(), 2u);
  EXPECT_EQ((*loaded)[0].first, "0.weight");
  EXPECT_TRUE(torch::equal((*loaded)[0].second, tensors[0].second));
  EXPECT_EQ((*loaded)[1].second.scalar_type(), torch::kInt64);

  EXPECT_THAT(LoadWeights(dir.File("none.pt")),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("none.pt not found")));
  std::ofstream(dir.File("junk.pt")) << "junk";
  EXPECT_THAT(LoadWeights(dir.File("junk.pt")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("junk.pt")));
}

// --- RegisterTorchScript ---

class ModelExporterRegisterTest : public ModelExporterTest {
 protected:
  void SetUp() override {
    ModelExporterTest::SetUp();
    module_ = dir_.File("user.pt");
    ASSERT_OK(testing::WriteTorchScriptMlp(module_, 4, 8, 3));
  }

  v1::RegisterModelRequest Request() const {
    v1::RegisterModelRequest request;
    request.set_name("custom");
    request.set_torchscript_path(module_);
    v1::TensorSpec* input = request.add_inputs();
    input->set_name("x");
    input->set_datatype("FP32");
    input->add_shape(4);
    v1::TensorSpec* output = request.add_outputs();
    output->set_name("y");
    output->set_datatype("FP16");
    output->add_shape(3);
    return request;
  }

  absl::Status Register(const v1::RegisterModelRequest& request,
                        const std::string& precision = "bf16-true") {
    return ModelExporter::RegisterTorchScript(*repository_, request, precision).status();
  }

  std::string module_;
};

TEST_F(ModelExporterRegisterTest, CopiesTheModuleIn) {
  v1::RegisterModelRequest request = Request();
  request.mutable_inputs(0)->set_shape(0, -1);
  auto config = ModelExporter::RegisterTorchScript(*repository_, request, "bf16-true");
  ASSERT_OK(config);
  EXPECT_EQ(config->name(), "custom");
  EXPECT_EQ(config->version(), 1);
  EXPECT_EQ(config->platform(), "pytorch_libtorch");
  EXPECT_EQ(config->model(), "torchscript");
  EXPECT_EQ(config->task(), "custom");
  EXPECT_EQ(config->precision(), "bf16-true");
  EXPECT_EQ(config->weights_file(), "model.ts");
  EXPECT_FALSE(config->has_batching());
  EXPECT_TRUE(config->source_job_id().empty());
  // Float datatypes are the serving precision's, whatever was declared.
  EXPECT_EQ(config->inputs(0).datatype(), "BF16");
  EXPECT_THAT(Shape(config->inputs(0)), ElementsAre(-1));
  EXPECT_EQ(config->outputs(0).datatype(), "BF16");
  const std::string copy = repository_->VersionDir("custom", 1) + "/model.ts";
  EXPECT_EQ(fs::file_size(copy), fs::file_size(module_));
  auto stored = repository_->ReadConfig("custom", 1);
  ASSERT_OK(stored);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*stored, *config));

  // INT64 stays as declared; lower-case datatypes are accepted.
  request = Request();
  request.mutable_outputs(0)->set_datatype("int64");
  request.mutable_batching()->set_max_queue_delay_us(100);
  config = ModelExporter::RegisterTorchScript(*repository_, request, "32-true");
  ASSERT_OK(config);
  EXPECT_EQ(config->version(), 2);
  EXPECT_EQ(config->inputs(0).datatype(), "FP32");
  EXPECT_EQ(config->outputs(0).datatype(), "INT64");
  EXPECT_EQ(config->batching().max_queue_delay_us(), 100);
  EXPECT_FALSE(config->batching().has_max_batch_size());
}

TEST_F(ModelExporterRegisterTest, CopiesThePromotionPolicyButRefusesTop1ForCustomModels) {
  v1::RegisterModelRequest request = Request();
  request.mutable_promotion()->set_max_mean_rel_diff(0.02);
  auto config = ModelExporter::RegisterTorchScript(*repository_, request, "bf16-true");
  ASSERT_OK(config);
  EXPECT_EQ(config->promotion().max_mean_rel_diff(), 0.02);
  EXPECT_FALSE(config->promotion().has_min_top1_agreement());

  // A custom model has no classes to agree on.
  request.mutable_promotion()->set_min_top1_agreement(0.99);
  EXPECT_THAT(Register(request),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("promotion.min_top1_agreement"), HasSubstr("'custom'"))));
  request.mutable_promotion()->clear_min_top1_agreement();
  request.mutable_promotion()->set_max_mean_rel_diff(-1);
  EXPECT_THAT(Register(request), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("promotion.max_mean_rel_diff: -1")));
  EXPECT_THAT(repository_->Versions("custom"), ElementsAre(1));
}

TEST_F(ModelExporterRegisterTest, RejectsBadSpecs) {
  auto expect_invalid = [&](const v1::RegisterModelRequest& request, const std::string& message) {
    EXPECT_THAT(Register(request), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(message)))
        << request.DebugString();
  };
  v1::RegisterModelRequest r = Request();
  r.set_name("-x");
  expect_invalid(r, "name: '-x'");

  r = Request();
  r.clear_inputs();
  expect_invalid(r, "inputs: at least one tensor is needed");
  r = Request();
  r.clear_outputs();
  expect_invalid(r, "outputs: at least one tensor is needed");

  for (const std::string name : {"", "1x", "a b", "x/y", "-x"}) {
    r = Request();
    r.mutable_inputs(0)->set_name(name);
    expect_invalid(r, "inputs[0].name: '" + name + "' is not a valid tensor name");
  }
  r = Request();
  *r.add_outputs() = r.outputs(0);
  expect_invalid(r, "outputs[1].name: 'y' appears twice in outputs");

  for (const std::string datatype : {"", "FP8", "INT32", "BYTES"}) {
    r = Request();
    r.mutable_outputs(0)->set_datatype(datatype);
    expect_invalid(r, "outputs[0].datatype: '" + datatype + "' (tensor y); valid datatypes");
  }
  for (int64_t dim : {0, -2}) {
    r = Request();
    r.mutable_inputs(0)->add_shape(dim);
    expect_invalid(r, "inputs[0].shape[1]: " + std::to_string(dim) + " (tensor x)");
  }
  r = Request();
  r.mutable_batching()->set_max_batch_size(0);
  expect_invalid(r, "batching.max_batch_size: 0");
  r = Request();
  r.mutable_batching()->set_max_queue_delay_us(2000000);
  expect_invalid(r, "batching.max_queue_delay_us: 2000000");

  EXPECT_THAT(Register(Request(), "16-mixed"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("precision: '16-mixed'")));

  // forward takes one input.
  r = Request();
  *r.add_inputs() = r.inputs(0);
  r.mutable_inputs(1)->set_name("x2");
  expect_invalid(r, "inputs: 2 declared, but forward of " + module_ + " takes 1 inputs");
  ExpectEmptyRepository();
}

TEST_F(ModelExporterRegisterTest, RejectsMissingAndForeignFiles) {
  v1::RegisterModelRequest r = Request();
  r.set_torchscript_path(dir_.File("missing.pt"));
  EXPECT_THAT(Register(r),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("torchscript_path: " + dir_.File("missing.pt") + " not found")));
  r.set_torchscript_path(dir_.path());
  EXPECT_THAT(Register(r),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("is not a regular file")));
  r.set_torchscript_path("");
  EXPECT_THAT(Register(r),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("torchscript_path: empty")));
  if (::geteuid() != 0) {  // root reads any file
    const std::string locked = dir_.File("locked.pt");
    fs::copy_file(module_, locked);
    ::chmod(locked.c_str(), 0);
    r.set_torchscript_path(locked);
    EXPECT_THAT(Register(r), StatusIs(absl::StatusCode::kFailedPrecondition,
                                      HasSubstr("locked.pt cannot be read")));
  }

  const std::string junk = dir_.File("junk.pt");
  std::ofstream(junk) << "print('not torchscript')";
  r.set_torchscript_path(junk);
  EXPECT_THAT(Register(r),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("torchscript_path: " + junk + " is not a TorchScript module")));
  // A plain weights archive is a zip too, but no module.
  ASSERT_OK(SaveWeights(dir_.File("weights.pt"), {{"w", torch::ones({2})}}));
  r.set_torchscript_path(dir_.File("weights.pt"));
  EXPECT_THAT(Register(r), StatusIs(absl::StatusCode::kInvalidArgument,
                                    HasSubstr("torchscript_path: " + dir_.File("weights.pt"))));
  ExpectEmptyRepository();
}

}  // namespace
}  // namespace mantissa
