#ifndef MANTISSA_TESTS_SERVING_SERVING_TEST_UTIL_H_
#define MANTISSA_TESTS_SERVING_SERVING_TEST_UTIL_H_

// What several serving tests build alike: tensor specs, the small mlp and
// gpt versions they serve, and a fixture holding a fresh repository.

#include <gtest/gtest.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "mantissa/v1/serving.pb.h"
#include "server/artifacts/export_artifact.h"
#include "server/models/model.h"
#include "server/models/model_registry.h"
#include "server/runtime/probed_device.h"
#include "server/serving/half_cast_validator.h"
#include "server/serving/model_repository.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace mantissa {

using OptionMap = std::map<std::string, std::string>;

inline v1::TensorSpec Spec(const std::string& name, const std::string& datatype,
                           std::vector<int64_t> shape) {
  v1::TensorSpec spec;
  spec.set_name(name);
  spec.set_datatype(datatype);
  for (int64_t d : shape) spec.add_shape(d);
  return spec;
}

// The float datatype an exported version declares for `precision`.
inline std::string FloatDatatype(const std::string& precision) {
  if (precision == "bf16-true") return "BF16";
  if (precision == "16-true") return "FP16";
  return "FP32";
}

inline std::unique_ptr<ModelRepository> MakeRepository(const std::string& root) {
  auto repository = ModelRepository::Create({.root = root});
  EXPECT_OK(repository);
  return repository.ok() ? std::move(*repository) : nullptr;
}

// The mlp classifier: 16 features, 4 classes, trained on synthetic data.
inline constexpr int64_t kFeatures = 16;
inline constexpr int64_t kClasses = 4;

inline const OptionMap kSynthetic = {
    {"train_size", "256"}, {"test_size", "128"}, {"features", "16"}, {"classes", "4"}};

inline DataSpec MlpData() {
  DataSpec data;
  data.input_shape = {kFeatures};
  data.num_classes = kClasses;
  return data;
}

// Built from `seed`, in eval mode (as served).
inline std::unique_ptr<Model> BuildMlp(uint64_t seed) {
  torch::manual_seed(seed);
  auto model = ModelRegistry::Build("mlp", {{"hidden", "32"}}, MlpData());
  EXPECT_OK(model);
  if (!model.ok()) return nullptr;
  (*model)->SetTraining(false);
  return *std::move(model);
}

// What an exported mlp job's config.json says (see ModelExporter::ExportJob).
inline v1::ModelConfig MlpConfig(const std::string& precision) {
  v1::ModelConfig config;
  config.set_platform("mantissa_libtorch");
  config.set_model("mlp");
  (*config.mutable_model_options())["hidden"] = "32";
  config.set_task("classification");
  config.set_precision(precision);
  *config.add_inputs() = Spec("input", FloatDatatype(precision), {kFeatures});
  *config.add_outputs() = Spec("logits", FloatDatatype(precision), {kClasses});
  config.set_weights_file("weights.pt");
  config.set_dataset("synthetic");
  config.mutable_dataset_options()->insert(kSynthetic.begin(), kSynthetic.end());
  config.set_seed(7);
  config.set_num_classes(kClasses);
  return config;
}

// The reference the served outputs are compared with.
inline torch::Tensor Fp32Logits(Model& model, const torch::Tensor& x) {
  c10::InferenceMode guard;
  model.SetTraining(false);
  return model.Forward(x);
}

// The gpt language model: vocabulary 32, windows of 16 tokens.
inline const OptionMap kGptOptions = {{"d_model", "16"}, {"layers", "1"}, {"heads", "2"}};

inline std::unique_ptr<Model> BuildGpt(uint64_t seed) {
  DataSpec data;
  data.task = Task::kLanguageModel;
  data.input_shape = {16};
  data.vocab_size = 32;
  data.seq_len = 16;
  torch::manual_seed(seed);
  auto model = ModelRegistry::Build("gpt", kGptOptions, data);
  EXPECT_OK(model);
  return model.ok() ? *std::move(model) : nullptr;
}

// What a gpt job exported in bf16-true says, trained on synthetic-tokens
// with `test_tokens` (the calibration source).
inline v1::ModelConfig GptConfig(int64_t test_tokens) {
  const OptionMap tokens = {{"vocab", "32"},
                            {"seq_len", "16"},
                            {"train_tokens", "2048"},
                            {"test_tokens", std::to_string(test_tokens)}};
  v1::ModelConfig config;
  config.set_platform("mantissa_libtorch");
  config.set_model("gpt");
  config.mutable_model_options()->insert(kGptOptions.begin(), kGptOptions.end());
  config.set_task("language_model");
  config.set_precision("bf16-true");
  *config.add_inputs() = Spec("input_ids", "INT64", {-1});
  *config.add_outputs() = Spec("logits", "BF16", {32});  // the last position's
  config.set_weights_file("weights.pt");
  config.set_dataset("synthetic-tokens");
  config.mutable_dataset_options()->insert(tokens.begin(), tokens.end());
  config.set_vocab_size(32);
  config.set_seq_len(16);
  return config;
}

// The CPU, probed as main.cc probes the daemon's device.
inline ProbedDevice ProbedCpu() {
  auto device = ProbeDevice("cpu");
  EXPECT_OK(device);
  return device.ok() ? *device : ProbedDevice();
}

// What an export copies into a version: the calibration sample (see
// ExportArtifact), `inputs` named after the version's input.
inline absl::Status WriteCalibration(const std::string& version_dir, const std::string& input,
                                     torch::Tensor inputs, const std::string& origin) {
  CalibrationSample sample;
  sample.inputs.emplace_back(input, std::move(inputs));
  sample.origin = origin;
  return WriteCalibrationSample(version_dir + "/" + HalfCastValidator::kCalibrationFile, sample);
}

// The mlp's: `items` feature vectors of the synthetic test split.
inline absl::Status WriteMlpCalibration(const std::string& version_dir, int64_t items) {
  torch::manual_seed(11);
  return WriteCalibration(version_dir, "input", torch::randn({items, kFeatures}),
                          "synthetic test split");
}

// The gpt's: `windows` token windows of 16 of the synthetic-tokens test split.
inline absl::Status WriteGptCalibration(const std::string& version_dir, int64_t windows) {
  torch::manual_seed(12);
  return WriteCalibration(version_dir, "input_ids",
                          torch::randint(0, 32, {windows, 16}, torch::kInt64),
                          "synthetic-tokens test split");
}

// What the trainer writes for an mlp job (hidden 32) on the synthetic
// dataset that ended with `model`'s weights; calibration: `items` items.
inline ExportArtifact MlpArtifact(const std::string& job_id, Model& model, int64_t items = 128) {
  ExportArtifact artifact;
  artifact.job_id = job_id;
  artifact.model = "mlp";
  artifact.model_options = {{"hidden", "32"}};
  artifact.data = MlpData();
  artifact.SetSignature();
  artifact.dataset = "synthetic";
  artifact.dataset_options = kSynthetic;
  artifact.seed = 7;
  artifact.trained_precision = "32-true";
  for (const auto& [name, t] : model.State()) {
    artifact.weights.emplace_back(name, t.detach().to(torch::kFloat32).clone());
  }
  torch::manual_seed(11);
  artifact.calibration.inputs.emplace_back("input", torch::randn({items, kFeatures}));
  artifact.calibration.origin = "synthetic test split";
  return artifact;
}

// forward(x) = x * scale with every scale 3.4e38: finite in fp32 for x in
// [0, 1), but bf16 rounds the scale itself to inf.
inline void WriteOverflowingScale(const std::string& path, int64_t features) {
  torch::jit::Module m("Overflow");
  m.register_attribute("training", c10::BoolType::get(), true);
  m.register_parameter("scale", torch::full({features}, 3.4e38f), /*is_buffer=*/false);
  m.define(R"JIT(
def forward(self, x):
    return x * self.scale
)JIT");
  m.save(path);
}

// A fresh repository under a temporary state directory (its "models").
class RepositoryFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    repository_ = MakeRepository(dir_.File("models"));
    ASSERT_NE(repository_, nullptr);
  }

  testing::TempDir dir_;
  std::unique_ptr<ModelRepository> repository_;
};

}  // namespace mantissa

#endif  // MANTISSA_TESTS_SERVING_SERVING_TEST_UTIL_H_
