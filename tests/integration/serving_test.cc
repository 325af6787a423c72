// Serving through the real daemon: jobs exported to the model repository in
// bf16-true and 32-true, inference over the Open Inference Protocol with FP32
// and BF16 inputs, TorchScript models registered with the CLI, the cast
// validation's figures and refusals, versions, restarts and the protocol's
// metadata calls.
//
// Documented tolerance of a bf16-true model against the same weights served
// in 32-true, on real Fashion-MNIST test images: every logit within
// |bf16 - fp32| <= 0.1 + 0.02 * |fp32|, and the same argmax on >= 95% of
// the images. bf16 keeps 8 significant bits (relative rounding 2^-9 per
// operation), so a two-layer network's logits of magnitude ~10 move by a few
// hundredths; a wrong cast or byte order moves them by whole units.

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <cmath>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>

#include "absl/strings/str_cat.h"
#include "tests/testing/fashion_mnist.h"
#include "tests/testing/half_float.h"
#include "tests/testing/serving_daemon_test.h"

namespace mantissa {
namespace {

using ::testing::AllOf;
using testing::CommandResult;
using ::testing::Contains;
using ::testing::ElementsAre;
using testing::GrpcStatusIs;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::OutputFloats;

constexpr double kAbsTolerance = 0.1;
constexpr double kRelTolerance = 0.02;
constexpr double kMinArgmaxAgreement = 0.95;
constexpr int64_t kImages = 256;
constexpr int64_t kChunk = 64;  // the default max_batch_size

// Logits of `model` for every image, sent in chunks of kChunk as `datatype`,
// returned as FP32 when `fp32_output` (else in the model's datatype);
// `datatypes` collects the response's output datatypes.
std::vector<float> InferImages(testing::InferenceClient& client, const std::string& model,
                               const testing::LabelledImages& images, const std::string& datatype,
                               bool fp32_output, std::set<std::string>* datatypes = nullptr) {
  constexpr int64_t kPixels = 28 * 28;
  std::vector<float> logits;
  for (int64_t start = 0; start < images.count; start += kChunk) {
    const int64_t n = std::min(kChunk, images.count - start);
    std::vector<float> chunk(images.pixels.begin() + start * kPixels,
                             images.pixels.begin() + (start + n) * kPixels);
    inference::ModelInferRequest request =
        testing::FloatRequest(model, "input", {n, 1, 28, 28}, chunk, datatype);
    if (fp32_output) testing::RequestFp32Output(&request, "logits");
    inference::ModelInferResponse response;
    grpc::Status s = client.Infer(request, &response);
    EXPECT_TRUE(s.ok()) << model << ": " << s.error_message();
    if (!s.ok()) return {};
    EXPECT_EQ(response.model_name(), model);
    EXPECT_EQ(response.outputs_size(), 1);
    EXPECT_EQ(response.outputs(0).name(), "logits");
    EXPECT_THAT(response.outputs(0).shape(), ElementsAre(n, 10));
    if (datatypes != nullptr) datatypes->insert(response.outputs(0).datatype());
    auto values = OutputFloats(response);
    EXPECT_OK(values);
    if (!values.ok()) return {};
    logits.insert(logits.end(), values->begin(), values->end());
  }
  return logits;
}

double Agreement(const std::vector<int>& a, const std::vector<int>& b) {
  size_t same = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) same += a[i] == b[i];
  return a.empty() ? 0.0 : static_cast<double>(same) / a.size();
}

double Accuracy(const std::vector<int>& predicted, const std::vector<int>& labels) {
  return Agreement(predicted, labels);
}

// Each element within kAbsTolerance + kRelTolerance * |reference|; returns
// the number of elements outside and the largest difference seen.
int CountOutsideTolerance(const std::vector<float>& half, const std::vector<float>& reference,
                          double* max_diff) {
  int outside = 0;
  *max_diff = 0;
  for (size_t i = 0; i < half.size() && i < reference.size(); ++i) {
    const double d = std::fabs(static_cast<double>(half[i]) - reference[i]);
    *max_diff = std::max(*max_diff, d);
    outside += !(d <= kAbsTolerance + kRelTolerance * std::fabs(reference[i]));
  }
  return outside;
}

void ExpectTensor(const inference::ModelMetadataResponse::TensorMetadata& tensor,
                  const std::string& name, const std::string& datatype,
                  const std::vector<int64_t>& shape) {
  EXPECT_EQ(tensor.name(), name);
  EXPECT_EQ(tensor.datatype(), datatype) << name;
  EXPECT_EQ(std::vector<int64_t>(tensor.shape().begin(), tensor.shape().end()), shape) << name;
}

using ServingTest = testing::ServingDaemonTest;

class ExportedModelTest : public testing::ServingDaemonTest,
                          public ::testing::WithParamInterface<std::string> {};

TEST_P(ExportedModelTest, Bf16TrueAgreesWithTheFp32ModelOnRealImages) {
  const std::string model = GetParam();
  auto images = testing::ReadFashionMnistTest(kImages);
  if (!images.ok()) GTEST_SKIP() << "Fashion-MNIST not installed: " << images.status();
  const std::string job =
      Train(model == "mlp" ? testing::FashionMnistMlpSpec() : testing::FashionMnistCnnSpec());
  ASSERT_FALSE(job.empty());
  const std::string half_name = model + "-bf16", full_name = model + "-fp32";
  const v1::ModelVersionStatus half = Export(job, half_name, "bf16-true");
  const v1::ModelVersionStatus full = Export(job, full_name, "32-true");
  ASSERT_FALSE(HasFailure());

  // The export's answer: the version, where it came from, the validation.
  EXPECT_EQ(half.state(), "READY") << half.reason();
  EXPECT_EQ(half.config().version(), 1);
  EXPECT_EQ(half.config().precision(), "bf16-true");
  EXPECT_EQ(half.config().platform(), "mantissa_libtorch");
  EXPECT_EQ(half.config().model(), model);
  EXPECT_EQ(half.config().source_job_id(), job);
  EXPECT_EQ(half.config().task(), "classification");
  EXPECT_EQ(half.config().num_classes(), 10);
  EXPECT_TRUE(half.validation().finite());
  EXPECT_GT(half.validation().calibration_items(), 0);
  EXPECT_THAT(half.validation().calibration_source(), HasSubstr("fashion-mnist"));
  EXPECT_GT(half.validation().max_abs_diff(), 0);  // bf16 rounds something
  EXPECT_LT(half.validation().max_abs_diff(), 1.0);
  EXPECT_LT(half.validation().mean_rel_diff(), 0.05);
  ASSERT_TRUE(half.validation().has_top1_agreement());
  EXPECT_GE(half.validation().top1_agreement(), kMinArgmaxAgreement);
  EXPECT_EQ(full.config().precision(), "32-true");
  EXPECT_EQ(full.validation().max_abs_diff(), 0);  // nothing to cast
  EXPECT_EQ(full.validation().top1_agreement(), 1.0);

  // Metadata in the Open Inference Protocol's terms.
  inference::ModelMetadataResponse meta;
  ASSERT_TRUE(client_->ModelMetadata(half_name, &meta).ok());
  EXPECT_EQ(meta.name(), half_name);
  EXPECT_THAT(meta.versions(), Contains("1"));
  ASSERT_EQ(meta.inputs_size(), 1);
  ASSERT_EQ(meta.outputs_size(), 1);
  ExpectTensor(meta.inputs(0), "input", "BF16", {-1, 1, 28, 28});
  ExpectTensor(meta.outputs(0), "logits", "BF16", {-1, 10});
  ASSERT_TRUE(client_->ModelMetadata(full_name, &meta).ok());
  ExpectTensor(meta.inputs(0), "input", "FP32", {-1, 1, 28, 28});
  ExpectTensor(meta.outputs(0), "logits", "FP32", {-1, 10});

  // The same images as FP32 and as BF16, outputs as the model's type and FP32.
  std::set<std::string> half_types, half_fp32_types, full_types;
  const std::vector<float> half_fp32_in = InferImages(*client_, half_name, *images, "FP32",
                                                      /*fp32_output=*/false, &half_types);
  const std::vector<float> half_bf16_in = InferImages(*client_, half_name, *images, "BF16",
                                                      /*fp32_output=*/true, &half_fp32_types);
  const std::vector<float> full_fp32_in = InferImages(*client_, full_name, *images, "FP32",
                                                      /*fp32_output=*/false, &full_types);
  const std::vector<float> full_bf16_in =
      InferImages(*client_, full_name, *images, "BF16", /*fp32_output=*/false);
  ASSERT_EQ(half_fp32_in.size(), kImages * 10);
  ASSERT_EQ(half_bf16_in.size(), kImages * 10);
  ASSERT_EQ(full_fp32_in.size(), kImages * 10);
  ASSERT_EQ(full_bf16_in.size(), kImages * 10);
  EXPECT_THAT(half_types, ElementsAre("BF16"));
  EXPECT_THAT(half_fp32_types, ElementsAre("FP32"));
  EXPECT_THAT(full_types, ElementsAre("FP32"));

  // A bf16 model rounds FP32 inputs to bf16 as the client's own
  // round-to-nearest-even does: the same forward, bit for bit.
  EXPECT_EQ(half_fp32_in, half_bf16_in);

  double max_diff = 0;
  EXPECT_EQ(CountOutsideTolerance(half_fp32_in, full_fp32_in, &max_diff), 0)
      << "max |bf16 - fp32| " << max_diff;
  std::printf("%s: max |bf16-true - 32-true| logit difference %.4f\n", model.c_str(), max_diff);
  // Rounding only the inputs to bf16 moves the fp32 model less than that.
  EXPECT_EQ(CountOutsideTolerance(full_bf16_in, full_fp32_in, &max_diff), 0)
      << "max |fp32(bf16 inputs) - fp32| " << max_diff;
  EXPECT_GT(max_diff, 0);  // the inputs were rounded: BF16 bytes were decoded as such

  const std::vector<int> half_top1 = testing::ArgmaxRows(half_fp32_in, 10);
  const std::vector<int> full_top1 = testing::ArgmaxRows(full_fp32_in, 10);
  EXPECT_GE(Agreement(half_top1, full_top1), kMinArgmaxAgreement);
  // The served weights are the trained ones, not a fresh initialisation.
  const double accuracy = Accuracy(full_top1, images->labels);
  EXPECT_GT(accuracy, 0.6);
  EXPECT_NEAR(Accuracy(half_top1, images->labels), accuracy, 0.05);
  std::printf("%s: served test accuracy fp32 %.3f, bf16 %.3f, argmax agreement %.3f\n",
              model.c_str(), accuracy, Accuracy(half_top1, images->labels),
              Agreement(half_top1, full_top1));

  // Typed fp32_contents decode like raw FP32.
  std::vector<float> first(images->pixels.begin(), images->pixels.begin() + 4 * 28 * 28);
  inference::ModelInferResponse typed;
  ASSERT_TRUE(
      client_
          ->Infer(testing::FloatRequest(full_name, "input", {4, 1, 28, 28}, first, "FP32", false),
                  &typed)
          .ok());
  auto typed_logits = OutputFloats(typed);
  ASSERT_OK(typed_logits);
  ASSERT_EQ(typed_logits->size(), 40u);
  for (size_t i = 0; i < 40; ++i) {
    // Another batch size may take another GEMM path: equal up to fp32 rounding.
    EXPECT_NEAR((*typed_logits)[i], full_fp32_in[i], 1e-4 * (1 + std::fabs(full_fp32_in[i])));
  }
}

INSTANTIATE_TEST_SUITE_P(MlpAndCnn, ExportedModelTest, ::testing::Values("mlp", "cnn"));

TEST_F(ServingTest, TheCliExportsListsInfersAndUnloads) {
  const std::string job = Train(testing::SyntheticMlpSpec(50));
  ASSERT_FALSE(job.empty());

  CommandResult exported = Cli({"export", job, "--name", "syn", "--precision", "bf16-true"});
  ASSERT_EQ(exported.exit_code, 0) << exported.out << exported.err;
  EXPECT_THAT(exported.out, HasSubstr("syn"));
  CommandResult again = Cli({"export", job, "--name", "syn"});  // default precision
  ASSERT_EQ(again.exit_code, 0) << again.err;

  CommandResult models = Cli({"models"});
  ASSERT_EQ(models.exit_code, 0) << models.err;
  EXPECT_THAT(models.out, HasSubstr("syn"));
  EXPECT_THAT(models.out, HasSubstr("bf16-true"));
  EXPECT_THAT(models.out, HasSubstr("READY"));

  CommandResult json = Cli({"models", "--json"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  for (const char* field :
       {"\"maxAbsDiff\"", "\"meanRelDiff\"", "\"top1Agreement\"", "\"finite\": true",
        "\"calibrationSource\"", "\"precision\": \"bf16-true\"", "\"sourceJobId\": \""}) {
    EXPECT_THAT(json.out, HasSubstr(field)) << json.out;
  }
  EXPECT_THAT(json.out, HasSubstr(job));
  // Both versions are listed; the default precision on a CPU is bf16-true.
  EXPECT_THAT(json.out, HasSubstr("\"version\": \"2\""));
  EXPECT_THAT(json.out, Not(HasSubstr("\"precision\": \"32-true\"")));

  CommandResult infer = Cli({"infer", "syn", "--random", "--batch", "3"});
  EXPECT_EQ(infer.exit_code, 0) << infer.out << infer.err;
  EXPECT_THAT(infer.out, HasSubstr("logits"));
  CommandResult infer_json = Cli({"infer", "syn", "--random", "--output-fp32", "--json"});
  EXPECT_EQ(infer_json.exit_code, 0) << infer_json.err;
  EXPECT_THAT(infer_json.out, HasSubstr("\"FP32\""));
  EXPECT_THAT(infer_json.out, HasSubstr("logits"));

  // An input file: one item of the synthetic mlp's 32 features.
  const std::string input_file = dir_.File("input.json");
  {
    std::ofstream out(input_file);
    out << "{\"inputs\": [{\"name\": \"input\", \"datatype\": \"FP32\", \"shape\": [1, 32], "
           "\"data\": [";
    for (int i = 0; i < 32; ++i) out << (i ? ", " : "") << 0.1 * (i % 7);
    out << "]}]}\n";
  }
  CommandResult from_file = Cli({"infer", "syn", "--input", input_file, "--json"});
  EXPECT_EQ(from_file.exit_code, 0) << from_file.out << from_file.err;
  EXPECT_THAT(from_file.out, HasSubstr("logits"));

  CommandResult unload = Cli({"unload", "syn"});
  ASSERT_EQ(unload.exit_code, 0) << unload.err;
  auto ready = client_->ModelReady("syn");
  ASSERT_OK(ready);
  EXPECT_FALSE(*ready);
  CommandResult refused = Cli({"infer", "syn", "--random"});
  EXPECT_EQ(refused.exit_code, 1);
  CommandResult unknown = Cli({"infer", "nosuchmodel", "--random"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_THAT(unknown.err, HasSubstr("NOT_FOUND"));

  // `load NAME` without a file loads the repository's latest version again.
  CommandResult load = Cli({"load", "syn"});
  ASSERT_EQ(load.exit_code, 0) << load.err;
  ready = client_->ModelReady("syn");
  ASSERT_OK(ready);
  EXPECT_TRUE(*ready);
}

TEST_F(ServingTest, ExportingTheSameNameAgainAddsAVersionAndServesIt) {
  const std::string job = Train(testing::SyntheticMlpSpec(30));
  ASSERT_FALSE(job.empty());
  const v1::ModelVersionStatus first = Export(job, "m", "32-true");
  const v1::ModelVersionStatus second = Export(job, "m", "bf16-true");
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(first.config().version(), 1);
  EXPECT_EQ(second.config().version(), 2);

  const v1::ModelStatus status = FindModel("m");
  ASSERT_EQ(status.versions_size(), 2);
  EXPECT_EQ(status.versions(0).config().version(), 1);
  EXPECT_EQ(status.versions(1).config().version(), 2);
  EXPECT_EQ(status.versions(1).state(), "READY");
  EXPECT_EQ(status.versions(1).config().precision(), "bf16-true");

  auto ready = client_->ModelReady("m", "2");
  ASSERT_OK(ready);
  EXPECT_TRUE(*ready);
  inference::ModelMetadataResponse meta;
  ASSERT_TRUE(client_->ModelMetadata("m", &meta).ok());
  EXPECT_THAT(meta.versions(), Contains("2"));
  EXPECT_EQ(meta.inputs(0).datatype(), "BF16");  // the latest version is served

  inference::ModelInferResponse response;
  ASSERT_TRUE(
      client_
          ->Infer(testing::FloatRequest("m", "input", {2, 32}, testing::PseudoRandomFloats(64, 1)),
                  &response)
          .ok());
  EXPECT_EQ(response.model_version(), "2");
  EXPECT_EQ(response.outputs(0).datatype(), "BF16");
  EXPECT_THAT(response.outputs(0).shape(), ElementsAre(2, 4));

  // On disk as the repository layout says.
  EXPECT_TRUE(std::filesystem::exists(dir_.path() + "/models/m/1/config.json"));
  EXPECT_TRUE(std::filesystem::exists(dir_.path() + "/models/m/2/config.json"));
}

TEST_F(ServingTest, ExportRefusesUnknownAndUnfinishedJobsAndBadSettings) {
  const std::string job = Train(testing::SyntheticMlpSpec(10));
  ASSERT_FALSE(job.empty());
  v1::JobSpec long_spec = testing::SyntheticMlpSpec(100000000);
  auto running = testing::Submit(*stub_, long_spec);
  ASSERT_TRUE(running.status.ok());
  ASSERT_OK(testing::WaitForJob(*stub_, running.job.id(),
                                [](const v1::Job& j) { return j.state() == v1::RUNNING; }));

  EXPECT_THAT(client_->Export("0123456789ab", "x", "bf16-true"),
              GrpcStatusIs(grpc::NOT_FOUND, HasSubstr("0123456789ab")));
  EXPECT_THAT(client_->Export(running.job.id(), "x", "bf16-true"),
              GrpcStatusIs(grpc::FAILED_PRECONDITION, HasSubstr("RUNNING")));
  ASSERT_EQ(Cli({"cancel", running.job.id()}).exit_code, 0);
  ASSERT_OK(testing::WaitForJob(*stub_, running.job.id(), testing::IsTerminal));
  EXPECT_THAT(client_->Export(running.job.id(), "x", "bf16-true"),
              GrpcStatusIs(grpc::FAILED_PRECONDITION, HasSubstr("CANCELLED")));

  EXPECT_THAT(client_->Export(job, "../escape", "bf16-true"),
              GrpcStatusIs(grpc::INVALID_ARGUMENT, HasSubstr("name")));
  EXPECT_THAT(client_->Export(job, "x", "8-true"),
              GrpcStatusIs(grpc::INVALID_ARGUMENT, HasSubstr("precision")));
  // No fp16 compute on this CPU build: refused, naming the field and the device.
  EXPECT_THAT(
      client_->Export(job, "x", "16-true"),
      GrpcStatusIs(grpc::FAILED_PRECONDITION,
                   AllOf(HasSubstr("precision"), HasSubstr("cpu"), HasSubstr("bf16-true"))));
  EXPECT_THAT(client_->Export(job, "x", "bf16-true", nullptr, 0),
              GrpcStatusIs(grpc::INVALID_ARGUMENT, HasSubstr("batching.max_batch_size")));
  EXPECT_THAT(client_->Export(job, "x", "bf16-true", nullptr, 5000),
              GrpcStatusIs(grpc::INVALID_ARGUMENT, HasSubstr("batching.max_batch_size")));

  // None of the refusals left anything in the repository.
  auto models = client_->ListModels();
  ASSERT_OK(models);
  EXPECT_TRUE(models->empty());
  EXPECT_FALSE(std::filesystem::exists(dir_.path() + "/models/x"));
  EXPECT_FALSE(std::filesystem::exists(dir_.path() + "/escape"));
}

TEST_F(ServingTest, ATorchScriptModelLoadedWithTheCliServes) {
  const std::string file = dir_.File("user_model.pt");
  ASSERT_EQ(
      testing::RunCommand({MANTISSA_WRITE_TORCHSCRIPT_BIN, file, "16", "32", "5", "3"}).exit_code,
      0);

  CommandResult load = Cli(
      {"load", "user", "--torchscript", file, "--input", "x:FP32:16", "--output", "scores:FP32:5"});
  ASSERT_EQ(load.exit_code, 0) << load.out << load.err;
  CommandResult load32 = Cli({"load", "user32", "--torchscript", file, "--input", "x:FP32:16",
                              "--output", "scores:FP32:5", "--precision", "32-true"});
  ASSERT_EQ(load32.exit_code, 0) << load32.out << load32.err;

  auto ready = client_->ModelReady("user");
  ASSERT_OK(ready);
  EXPECT_TRUE(*ready);
  inference::ModelMetadataResponse meta;
  ASSERT_TRUE(client_->ModelMetadata("user", &meta).ok());
  EXPECT_EQ(meta.platform(), "pytorch_libtorch");
  ASSERT_EQ(meta.inputs_size(), 1);
  ExpectTensor(meta.inputs(0), "x", "BF16", {-1, 16});
  ExpectTensor(meta.outputs(0), "scores", "BF16", {-1, 5});

  const v1::ModelStatus status = FindModel("user");
  ASSERT_EQ(status.versions_size(), 1);
  EXPECT_EQ(status.versions(0).config().platform(), "pytorch_libtorch");
  EXPECT_TRUE(status.versions(0).validation().finite());
  EXPECT_THAT(status.versions(0).validation().calibration_source(), HasSubstr("random"));
  EXPECT_FALSE(status.versions(0).validation().has_top1_agreement());  // a custom model
  // The file was copied in: the user's copy can go away.
  std::filesystem::remove(file);

  const std::vector<float> x = testing::PseudoRandomFloats(8 * 16, 11);
  inference::ModelInferRequest request = testing::FloatRequest("user", "x", {8, 16}, x, "FP32");
  testing::RequestFp32Output(&request, "scores");
  inference::ModelInferResponse half, full;
  ASSERT_TRUE(client_->Infer(request, &half).ok());
  request.set_model_name("user32");
  ASSERT_TRUE(client_->Infer(request, &full).ok());
  EXPECT_EQ(half.outputs(0).name(), "scores");
  EXPECT_THAT(half.outputs(0).shape(), ElementsAre(8, 5));
  auto h = OutputFloats(half), f = OutputFloats(full);
  ASSERT_OK(h);
  ASSERT_OK(f);
  double max_diff = 0;
  EXPECT_EQ(CountOutsideTolerance(*h, *f, &max_diff), 0) << max_diff;
  EXPECT_NE(*h, *f);  // the bf16 model really computed in bf16
}

TEST_F(ServingTest, ATorchScriptModelThatOverflowsInBf16IsRefusedAndTheDaemonKeepsServing) {
  const std::string good = dir_.File("good.pt"), bad = dir_.File("overflow.pt");
  ASSERT_EQ(testing::RunCommand({MANTISSA_WRITE_TORCHSCRIPT_BIN, good, "8", "16", "3"}).exit_code,
            0);
  ASSERT_EQ(
      testing::RunCommand({MANTISSA_WRITE_TORCHSCRIPT_BIN, "--bf16-overflow", bad, "8"}).exit_code,
      0);
  ASSERT_EQ(
      Cli({"load", "good", "--torchscript", good, "--input", "x:FP32:8", "--output", "y:FP32:3"})
          .exit_code,
      0);

  // Finite in 32-true: the model itself is fine.
  CommandResult fp32 = Cli({"load", "big32", "--torchscript", bad, "--input", "x:FP32:8",
                            "--output", "y:FP32:8", "--precision", "32-true"});
  EXPECT_EQ(fp32.exit_code, 0) << fp32.err;

  CommandResult refused = Cli({"load", "big", "--torchscript", bad, "--input", "x:FP32:8",
                               "--output", "y:FP32:8", "--precision", "bf16-true"});
  EXPECT_EQ(refused.exit_code, 1) << refused.out;
  EXPECT_THAT(refused.err, HasSubstr("non-finite"));

  // The refusal is recorded with its reason; the model serves nothing.
  auto index = client_->RepositoryIndex();
  ASSERT_OK(index);
  bool listed = false;
  for (const auto& m : index->models()) {
    if (m.name() != "big") continue;
    listed = true;
    EXPECT_NE(m.state(), "READY");
    EXPECT_THAT(m.reason(), HasSubstr("non-finite"));
  }
  EXPECT_TRUE(listed) << index->ShortDebugString();
  const v1::ModelStatus status = FindModel("big");
  ASSERT_GE(status.versions_size(), 1);
  EXPECT_FALSE(status.versions(0).validation().finite());
  EXPECT_THAT(status.versions(0).reason(), HasSubstr("non-finite"));
  auto ready = client_->ModelReady("big");
  ASSERT_OK(ready);
  EXPECT_FALSE(*ready);
  inference::ModelInferResponse response;
  EXPECT_THAT(client_->Infer(testing::FloatRequest("big", "x", {1, 8}, std::vector<float>(8, 0.5f)),
                             &response),
              GrpcStatusIs(grpc::FAILED_PRECONDITION, HasSubstr("big")));

  // The other models keep serving.
  EXPECT_TRUE(client_
                  ->Infer(testing::FloatRequest("good", "x", {2, 8}, std::vector<float>(16, 0.5f)),
                          &response)
                  .ok());
  EXPECT_TRUE(client_
                  ->Infer(testing::FloatRequest("big32", "x", {2, 8}, std::vector<float>(16, 0.5f)),
                          &response)
                  .ok());
  auto values = OutputFloats(response);
  ASSERT_OK(values);
  for (float v : *values) EXPECT_TRUE(std::isfinite(v));

  // A restart leaves it refused, and everything else served.
  StartServing({});
  ready = client_->ModelReady("big");
  ASSERT_OK(ready);
  EXPECT_FALSE(*ready);
  ready = client_->ModelReady("good");
  ASSERT_OK(ready);
  EXPECT_TRUE(*ready);
}

TEST_F(ServingTest, ExportedModelsAreLoadedAgainAfterRestart) {
  const std::string job = Train(testing::SyntheticMlpSpec(30));
  ASSERT_FALSE(job.empty());
  Export(job, "kept", "bf16-true");
  Export(job, "kept32", "32-true");
  ASSERT_FALSE(HasFailure());
  const std::vector<float> x = testing::PseudoRandomFloats(5 * 32, 2);
  const auto infer = [&](const std::string& name) {
    inference::ModelInferResponse response;
    grpc::Status s = client_->Infer(testing::FloatRequest(name, "input", {5, 32}, x), &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return response;
  };
  const inference::ModelInferResponse before = infer("kept"), before32 = infer("kept32");
  const v1::ModelStatus status_before = FindModel("kept");

  StartServing({});
  for (const char* name : {"kept", "kept32"}) {
    auto ready = client_->ModelReady(name);
    ASSERT_OK(ready);
    EXPECT_TRUE(*ready) << name;
  }
  const inference::ModelInferResponse after = infer("kept"), after32 = infer("kept32");
  ASSERT_EQ(after.raw_output_contents_size(), 1);
  EXPECT_EQ(after.raw_output_contents(0), before.raw_output_contents(0));
  EXPECT_EQ(after32.raw_output_contents(0), before32.raw_output_contents(0));
  EXPECT_EQ(after.model_version(), "1");
  // The load at start-up validated the cast again, with the same figures.
  const v1::ModelStatus status_after = FindModel("kept");
  ASSERT_EQ(status_after.versions_size(), 1);
  EXPECT_EQ(status_after.versions(0).state(), "READY");
  EXPECT_EQ(status_after.versions(0).validation().max_abs_diff(),
            status_before.versions(0).validation().max_abs_diff());
}

TEST_F(ServingTest, AGptServesInt64TokenIds) {
  v1::JobSpec spec;
  spec.set_model("gpt");
  spec.set_dataset("synthetic-tokens");
  (*spec.mutable_dataset_options())["vocab"] = "64";
  (*spec.mutable_dataset_options())["seq_len"] = "16";
  (*spec.mutable_model_options())["d_model"] = "32";
  (*spec.mutable_model_options())["layers"] = "1";
  (*spec.mutable_model_options())["heads"] = "2";
  spec.set_steps(20);
  spec.set_batch_size(8);
  spec.set_memory_baseline_steps(0);
  const std::string job = Train(spec);
  ASSERT_FALSE(job.empty());
  const v1::ModelVersionStatus model = Export(job, "lm", "bf16-true");
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(model.config().task(), "language_model");
  EXPECT_EQ(model.config().vocab_size(), 64);
  EXPECT_EQ(model.config().seq_len(), 16);
  EXPECT_TRUE(model.validation().has_top1_agreement());

  inference::ModelMetadataResponse meta;
  ASSERT_TRUE(client_->ModelMetadata("lm", &meta).ok());
  ExpectTensor(meta.inputs(0), "input_ids", "INT64", {-1, -1});
  // The last position's logits by default.
  ExpectTensor(meta.outputs(0), "logits", "BF16", {-1, 64});

  inference::ModelInferRequest request;
  request.set_model_name("lm");
  auto* ids = request.add_inputs();
  ids->set_name("input_ids");
  ids->set_datatype("INT64");
  ids->add_shape(2);
  ids->add_shape(5);
  for (int i = 0; i < 10; ++i) ids->mutable_contents()->add_int64_contents(i % 64);
  inference::ModelInferResponse response;
  grpc::Status s = client_->Infer(request, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_THAT(response.outputs(0).shape(), ElementsAre(2, 64));
  auto last = OutputFloats(response);
  ASSERT_OK(last);
  ASSERT_EQ(last->size(), 2u * 64u);
  for (float v : *last) ASSERT_TRUE(std::isfinite(v));
  // Every position's on request: T times the bytes, the last rows the same.
  (*request.mutable_parameters())["all_positions"].set_bool_param(true);
  inference::ModelInferResponse all;
  s = client_->Infer(request, &all);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_THAT(all.outputs(0).shape(), ElementsAre(2, 5, 64));
  auto logits = OutputFloats(all);
  ASSERT_OK(logits);
  ASSERT_EQ(logits->size(), 2u * 5u * 64u);
  for (int64_t row = 0; row < 2; ++row) {
    for (int64_t v = 0; v < 64; ++v) {
      EXPECT_EQ((*logits)[(row * 5 + 4) * 64 + v], (*last)[row * 64 + v]);
    }
  }
  request.mutable_parameters()->clear();

  // Longer than the model's window: refused, naming the tensor and the limit.
  ids->clear_shape();
  ids->add_shape(1);
  ids->add_shape(17);
  ids->mutable_contents()->clear_int64_contents();
  for (int i = 0; i < 17; ++i) ids->mutable_contents()->add_int64_contents(1);
  EXPECT_THAT(client_->Infer(request, &response),
              GrpcStatusIs(grpc::INVALID_ARGUMENT, AllOf(HasSubstr("input_ids"), HasSubstr("16"))));
  // Token ids outside the vocabulary.
  ids->clear_shape();
  ids->add_shape(1);
  ids->add_shape(1);
  ids->mutable_contents()->clear_int64_contents();
  ids->mutable_contents()->add_int64_contents(64);
  EXPECT_THAT(client_->Infer(request, &response),
              GrpcStatusIs(grpc::INVALID_ARGUMENT, HasSubstr("input_ids")));
}

TEST_F(ServingTest, ServerMetadataRepositoryIndexAndUndeclaredMethods) {
  inference::ServerMetadataResponse server;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(client_->inference()
                    .ServerMetadata(&context, inference::ServerMetadataRequest(), &server)
                    .ok());
  }
  EXPECT_EQ(server.name(), "mantissad");
  EXPECT_FALSE(server.version().empty());
  EXPECT_THAT(server.extensions(), Contains("model_repository"));
  EXPECT_THAT(server.extensions(), Contains("statistics"));

  const std::string job = Train(testing::SyntheticMlpSpec(10));
  ASSERT_FALSE(job.empty());
  Export(job, "a", "bf16-true");
  Export(job, "b", "32-true");
  ASSERT_FALSE(HasFailure());
  ASSERT_TRUE(client_->Unload("b").ok());

  auto index = client_->RepositoryIndex();
  ASSERT_OK(index);
  ASSERT_EQ(index->models_size(), 2) << index->ShortDebugString();
  EXPECT_EQ(index->models(0).name(), "a");
  EXPECT_EQ(index->models(0).version(), "1");
  EXPECT_EQ(index->models(0).state(), "READY");
  EXPECT_EQ(index->models(1).name(), "b");
  EXPECT_EQ(index->models(1).state(), "UNAVAILABLE");
  auto ready_only = client_->RepositoryIndex(/*ready_only=*/true);
  ASSERT_OK(ready_only);
  ASSERT_EQ(ready_only->models_size(), 1);
  EXPECT_EQ(ready_only->models(0).name(), "a");

  // Unknown models and versions: NOT_FOUND, naming them.
  inference::ModelMetadataResponse meta;
  EXPECT_THAT(client_->ModelMetadata("zzz", &meta),
              GrpcStatusIs(grpc::NOT_FOUND, HasSubstr("zzz")));
  EXPECT_THAT(client_->ModelReady("zzz"),
              testing::StatusIs(absl::StatusCode::kNotFound, HasSubstr("zzz")));
  EXPECT_THAT(client_->ModelReady("a", "7"),
              testing::StatusIs(absl::StatusCode::kNotFound, HasSubstr("7")));
  EXPECT_THAT(client_->Load("zzz"), GrpcStatusIs(grpc::NOT_FOUND, HasSubstr("zzz")));
  EXPECT_THAT(client_->Unload("zzz"), GrpcStatusIs(grpc::NOT_FOUND, HasSubstr("zzz")));

  // Methods of the protocol that mantissad does not declare.
  grpc::GenericStub generic(client_->channel());
  for (const char* method : {"/inference.GRPCInferenceService/ModelStreamInfer",
                             "/inference.GRPCInferenceService/CudaSharedMemoryStatus"}) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    grpc::ByteBuffer request, response;
    grpc::Slice empty("");
    request = grpc::ByteBuffer(&empty, 1);
    std::mutex mu;
    std::condition_variable cv;
    bool finished = false;
    grpc::Status status;
    generic.UnaryCall(&context, method, grpc::StubOptions(), &request, &response,
                      [&](grpc::Status s) {
                        std::lock_guard<std::mutex> lock(mu);
                        status = s;
                        finished = true;
                        cv.notify_one();
                      });
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return finished; });
    EXPECT_EQ(status.error_code(), grpc::UNIMPLEMENTED) << method << ": " << status.error_message();
  }
}

// Export and load read the job's export artifact only: the data the job
// trained on, and its checkpoint, may be gone since.
TEST_F(ServingTest, ExportReadsNeitherTheDatasetNorTheCheckpoint) {
  const std::string csv = dir_.File("points.csv");
  {
    std::ofstream out(csv);
    out << "x,y,side\n";
    for (int i = 0; i < 200; ++i) {
      const double x = std::sin(i * 1.7) * 3, y = std::cos(i * 2.3) * 3;
      out << x << "," << y << "," << (x + y > 0 ? "above" : "below") << "\n";
    }
  }
  v1::JobSpec spec;
  spec.set_model("mlp");
  (*spec.mutable_model_options())["hidden"] = "8";
  spec.set_dataset("csv");
  (*spec.mutable_dataset_options())["path"] = csv;
  (*spec.mutable_dataset_options())["label"] = "side";
  spec.set_steps(20);
  spec.set_batch_size(16);
  spec.set_seed(1);
  spec.set_memory_baseline_steps(0);
  const std::string job = Train(spec);
  ASSERT_FALSE(job.empty());
  ASSERT_TRUE(std::filesystem::remove(csv));
  ASSERT_TRUE(std::filesystem::remove(dir_.File("jobs/" + job + "/checkpoint.pt")));

  const v1::ModelVersionStatus exported = Export(job, "points", "bf16-true");
  EXPECT_EQ(exported.state(), "READY") << exported.reason();
  EXPECT_THAT(exported.config().inputs(0).shape(), ElementsAre(2));
  EXPECT_EQ(exported.config().num_classes(), 2);
  // Calibrated on the job's own items, kept in the version.
  EXPECT_THAT(exported.validation().calibration_source(), HasSubstr("csv "));
  EXPECT_THAT(exported.validation().calibration_source(), Not(HasSubstr("random")));
}

}  // namespace
}  // namespace mantissa
