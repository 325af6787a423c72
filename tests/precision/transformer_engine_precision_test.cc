// The transformer-engine plugin on whole models: which Linears become FP8
// (and the warnings for the rest), its state in checkpoints, and a tiny GPT
// whose loss under FP8 tracks the same run under bf16-mixed: on the CPU with
// the emulated GEMMs, and on a GPU with at::_scaled_mm where there is one.

#include "server/precision/transformer_engine_precision.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <sstream>

#include "server/common/torch_compat.h"
#include "server/data/dataset_registry.h"
#include "server/models/mlp.h"
#include "server/models/model_registry.h"
#include "server/precision/mixed_precision.h"
#include "server/precision/precision_registry.h"
#include "server/runtime/device_capabilities.h"
#include "tests/testing/status_matchers.h"

namespace mantissa {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using testing::StatusIs;

std::unique_ptr<TransformerEnginePrecision> Emulated(torch::Dtype weights = torch::kBFloat16,
                                                     torch::Device device = torch::kCPU) {
  TransformerEnginePrecision::Options options;
  options.weights_dtype = weights;
  options.backend = Fp8Backend::kEmulated;
  options.device = device;
  auto plugin = TransformerEnginePrecision::Create(options);
  EXPECT_OK(plugin);
  return plugin.ok() ? std::move(*plugin) : nullptr;
}

std::vector<std::string> Names(const NamedTensors& tensors) {
  std::vector<std::string> names;
  for (const auto& [name, t] : tensors) names.push_back(name);
  return names;
}

std::vector<std::string> LayerNames(const TransformerEnginePrecision& p) {
  std::vector<std::string> names;
  for (const auto& [name, layer] : p.fp8_layers()) names.push_back(name);
  return names;
}

std::unique_ptr<Model> TinyGpt(int64_t vocab = 256, int64_t seq_len = 32) {
  const DataSpec tokens{.task = Task::kLanguageModel,
                        .input_shape = {seq_len},
                        .vocab_size = vocab,
                        .seq_len = seq_len};
  auto model =
      ModelRegistry::Build("gpt", {{"d_model", "64"}, {"layers", "2"}, {"heads", "4"}}, tokens);
  EXPECT_OK(model);
  return model.ok() ? std::move(*model) : nullptr;
}

TEST(TransformerEnginePrecisionTest, MlpHeadOf10ClassesStaysBf16WithAWarning) {
  auto plugin = Emulated();
  ASSERT_NE(plugin, nullptr);
  EXPECT_EQ(plugin->name(), "transformer-engine");
  std::unique_ptr<Model> model =
      Mlp::Build({.hidden = {64}}, {.input_shape = {1, 28, 28}, .num_classes = 10});
  const std::vector<std::string> names_before = Names(model->State());
  const std::vector<torch::Tensor> params_before = model->Parameters();
  plugin->ConvertModule(*model);

  // Flatten, Linear(784 -> 64), ReLU, Linear(64 -> 10): 784 % 16 == 0 but
  // 10 % 16 != 0.
  EXPECT_THAT(LayerNames(*plugin), ElementsAre("1"));
  ASSERT_THAT(plugin->warnings(), SizeIs(1));
  EXPECT_THAT(plugin->warnings()[0], AllOf(HasSubstr("Linear '3'"), HasSubstr("64 -> 10"),
                                           HasSubstr("bfloat16"), HasSubstr("divisible by 16")));
  // The same parameter tensors under the same names, now in bf16.
  EXPECT_EQ(Names(model->State()), names_before);
  const std::vector<torch::Tensor> params = model->Parameters();
  ASSERT_EQ(params.size(), params_before.size());
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_TRUE(params[i].is_same(params_before[i]));
    EXPECT_EQ(params[i].scalar_type(), torch::kBFloat16);
  }

  // The Sequential's forward runs the FP8 layer: a training forward records
  // its input's amax, and the backward turns it into the next scale.
  model->SetTraining(true);
  const torch::Tensor x = plugin->ConvertInput(torch::randn({4, 1, 28, 28}));
  EXPECT_EQ(x.scalar_type(), torch::kBFloat16);
  torch::Tensor logits;
  {
    auto guard = plugin->ForwardGuard();
    logits = model->Forward(x);
  }
  EXPECT_EQ(plugin->ConvertOutput(logits).scalar_type(), torch::kFloat32);
  EXPECT_EQ(logits.sizes(), torch::IntArrayRef({4, 10}));
  const Fp8LinearState& state = plugin->fp8_layers()[0].second->fp8_state();
  const float input_amax = x.reshape({4, -1}).abs().max().to(torch::kFloat32).item<float>();
  EXPECT_FLOAT_EQ(state.input.amax_history()[0].item<float>(), input_amax);
  EXPECT_EQ(state.input.scale().item<float>(), 1.0f);
  // The backward reaches every parameter, then updates the scales.
  plugin->Backward(torch::nn::functional::cross_entropy(plugin->ConvertOutput(logits),
                                                        torch::tensor({0, 1, 2, 3})));
  for (const torch::Tensor& p : model->Parameters()) EXPECT_TRUE(p.grad().defined());
  EXPECT_FLOAT_EQ(state.input.scale().item<float>(), 448.0f / input_amax);
  EXPECT_NE(state.grad_output.scale().item<float>(), 1.0f);
}

TEST(TransformerEnginePrecisionTest, GptSwapsEveryLinearAndKeepsLayerNorms) {
  auto plugin = Emulated();
  ASSERT_NE(plugin, nullptr);
  std::unique_ptr<Model> model = TinyGpt();
  ASSERT_NE(model, nullptr);
  plugin->ConvertModule(*model);
  EXPECT_THAT(LayerNames(*plugin), ElementsAre("blocks.0.qkv", "blocks.0.proj", "blocks.0.fc",
                                               "blocks.0.fc_out", "blocks.1.qkv", "blocks.1.proj",
                                               "blocks.1.fc", "blocks.1.fc_out", "head"));
  EXPECT_THAT(plugin->warnings(), IsEmpty());
  int layer_norms = 0;
  for (const auto& m : model->nn_module()->modules()) {
    EXPECT_EQ(m->as<torch::nn::Linear>(), nullptr);
    if (auto* ln = m->as<torch::nn::LayerNorm>()) {
      ++layer_norms;
      EXPECT_EQ(ln->weight.scalar_type(), torch::kBFloat16);
    }
  }
  EXPECT_EQ(layer_norms, 5);
  // Every FP8 layer is on the forward path.
  model->SetTraining(true);
  {
    auto guard = plugin->ForwardGuard();
    model->Forward(torch::randint(0, 256, {2, 32}));
  }
  for (const auto& [name, layer] : plugin->fp8_layers()) {
    EXPECT_GT(layer->fp8_state().input.amax_history()[0].item<float>(), 0.0f) << name;
  }
}

// A parent whose forward calls its Linear member directly.
struct OpaqueImpl : torch::nn::Module {
  OpaqueImpl() : fc(register_module("fc", torch::nn::Linear(16, 16))) {}
  torch::Tensor forward(const torch::Tensor& x) { return fc(x); }
  torch::nn::Linear fc;
};
TORCH_MODULE(Opaque);

TEST(TransformerEnginePrecisionTest, LinearsItCannotReachAreWarnedAbout) {
  auto plugin = Emulated(torch::kFloat16);
  ASSERT_NE(plugin, nullptr);
  EXPECT_EQ(plugin->name(), "transformer-engine-float16");
  ModuleModel<Opaque> model{Opaque()};
  plugin->ConvertModule(model);
  EXPECT_THAT(LayerNames(*plugin), IsEmpty());
  ASSERT_THAT(plugin->warnings(), SizeIs(2));
  EXPECT_THAT(plugin->warnings()[0],
              AllOf(HasSubstr("Linear 'fc'"), HasSubstr("float16"), HasSubstr("cannot swap")));
  EXPECT_THAT(plugin->warnings()[1], HasSubstr("no Linear layer FP8 can run"));
  EXPECT_EQ(model.Parameters()[0].scalar_type(), torch::kFloat16);
}

TEST(TransformerEnginePrecisionTest, CreateChecksItsOptions) {
  TransformerEnginePrecision::Options options;
  options.weights_dtype = torch::kFloat32;
  options.backend = Fp8Backend::kEmulated;
  EXPECT_THAT(TransformerEnginePrecision::Create(options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bfloat16 or float16")));
  options.weights_dtype = torch::kBFloat16;
  options.recipe.margin = -1;
  EXPECT_THAT(TransformerEnginePrecision::Create(options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("fp8.margin")));
  // The real GEMMs need CUDA (and LibTorch >= 2.4).
  options.recipe.margin = 0;
  options.backend = Fp8Backend::kScaledMm;
  EXPECT_THAT(TransformerEnginePrecision::Create(options),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("_scaled_mm")));
  // So the registry refuses the modes on the CPU.
  EXPECT_THAT(PrecisionRegistry::Create("transformer-engine", torch::kCPU),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("transformer-engine")));
  v1::Fp8Recipe bad;
  bad.set_fp8_format("E5M2");
  EXPECT_THAT(PrecisionRegistry::ParseFp8Recipe(bad),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("fp8.fp8_format")));
}

// A few training forwards and backwards, so every history and scale moves.
void Exercise(TransformerEnginePrecision& plugin, Model& model) {
  model.SetTraining(true);
  for (int i = 0; i < 3; ++i) {
    torch::Tensor logits;
    {
      auto guard = plugin.ForwardGuard();
      logits = model.Forward(torch::randint(0, 256, {2, 32}));
    }
    logits = plugin.ConvertOutput(logits);
    plugin.Backward(torch::nn::functional::cross_entropy(logits.reshape({-1, 256}),
                                                         torch::randint(0, 256, {64})));
  }
}

TEST(TransformerEnginePrecisionTest, ScalingStateRoundTripsThroughACheckpointArchive) {
  auto saving = Emulated();
  std::unique_ptr<Model> trained = TinyGpt();
  saving->ConvertModule(*trained);
  Exercise(*saving, *trained);
  std::stringstream bytes;
  {
    torch::serialize::OutputArchive archive;
    saving->SaveState(archive);
    archive.save_to(bytes);
  }

  auto loading = Emulated();
  std::unique_ptr<Model> fresh = TinyGpt();
  loading->ConvertModule(*fresh);
  torch::serialize::InputArchive archive;
  archive.load_from(bytes);
  loading->LoadState(archive);
  ASSERT_EQ(loading->fp8_layers().size(), saving->fp8_layers().size());
  for (size_t i = 0; i < saving->fp8_layers().size(); ++i) {
    const Fp8LinearState& want = saving->fp8_layers()[i].second->fp8_state();
    const Fp8LinearState& got = loading->fp8_layers()[i].second->fp8_state();
    const std::string& name = saving->fp8_layers()[i].first;
    for (const auto& [w, g] :
         {std::pair(&want.input, &got.input), std::pair(&want.weight, &got.weight),
          std::pair(&want.grad_output, &got.grad_output)}) {
      EXPECT_NE(w->scale().item<float>(), 1.0f) << name;
      EXPECT_TRUE(torch::equal(w->scale(), g->scale())) << name;
      EXPECT_TRUE(torch::equal(w->amax_history(), g->amax_history())) << name;
      EXPECT_GT(g->amax_history().max().item<float>(), 0.0f) << name;
    }
  }

  // Another model's layers do not load.
  auto other = Emulated();
  std::unique_ptr<Model> mlp =
      Mlp::Build({.hidden = {64}}, {.input_shape = {1, 28, 28}, .num_classes = 10});
  other->ConvertModule(*mlp);
  bytes.clear();
  bytes.seekg(0);
  torch::serialize::InputArchive again;
  again.load_from(bytes);
  try {
    other->LoadState(again);
    ADD_FAILURE() << "loaded a GPT's FP8 state into an MLP";
  } catch (const c10::Error& e) {
    EXPECT_THAT(e.what(), AllOf(HasSubstr("blocks.0.qkv"), HasSubstr("not this model's")));
  }
}

// Per-step training losses of the tiny GPT on synthetic tokens under
// `plugin`, from the same initial weights and batches whatever the plugin.
std::vector<double> TrainLosses(PrecisionPlugin& plugin, torch::Device device, int steps) {
  auto data = DatasetRegistry::Load(
      "synthetic-tokens",
      {{"vocab", "256"}, {"seq_len", "32"}, {"train_tokens", "8192"}, {"test_tokens", "0"}},
      /*seed=*/7);
  EXPECT_OK(data);
  if (!data.ok()) return {};
  torch::manual_seed(11);
  std::unique_ptr<Model> model = TinyGpt();
  plugin.ConvertModule(*model);
  model->ToDevice(device);
  model->SetTraining(true);
  torch::optim::AdamW optimizer(model->Parameters(),
                                torch::optim::AdamWOptions(3e-3).weight_decay(0.0));
  std::vector<double> losses;
  const int64_t batch = 16;
  for (int step = 0; step < steps; ++step) {
    const int64_t start = (step * batch) % (data->train->size() - batch);
    Batch b = data->train->Get(torch::arange(start, start + batch, torch::kInt64));
    optimizer.zero_grad();
    torch::Tensor logits;
    {
      auto guard = plugin.ForwardGuard();
      logits = model->Forward(plugin.ConvertInput(b.inputs.to(device)));
    }
    logits = plugin.ConvertOutput(logits);
    torch::Tensor loss = torch::nn::functional::cross_entropy(logits.reshape({-1, 256}),
                                                              b.targets.to(device).reshape({-1}));
    plugin.Backward(loss);
    plugin.OptimizerStep(optimizer);
    losses.push_back(loss.item<double>());
  }
  return losses;
}

// The largest per-step difference between two loss curves.
double MaxGap(const std::vector<double>& a, const std::vector<double>& b) {
  double gap = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    gap = std::max(gap, std::fabs(a[i] - b[i]));
  }
  return gap;
}

// Measured on this CPU (2 cores, LibTorch 1.13), 30 steps, 6 data/init
// seeds: the loss falls from ln(256) = 5.55 to about 0.35 under FP8 and 0.25
// under bf16-mixed. The largest per-step gap FP8 vs bf16-mixed is 0.156 to
// 0.187, almost all of it from the bf16 weights (bf16-true vs bf16-mixed:
// 0.156 to 0.160); FP8 vs bf16-true, FP8's own share, is 0.028 to 0.048.
// The gaps peak mid-descent, where a small lag is a large loss difference.
// The bounds leave room for other seeds and libraries but not for a broken
// FP8 path (which stalls near 5.5, or diverges).
constexpr int kSteps = 30;
constexpr double kGapToBf16Mixed = 0.25;
constexpr double kGapToBf16True = 0.08;

struct Curves {
  std::vector<double> fp8, bf16_mixed, bf16_true;
};

void ExpectFp8Tracks(const Curves& c, const std::string& what) {
  ASSERT_EQ(c.fp8.size(), static_cast<size_t>(kSteps));
  ASSERT_EQ(c.bf16_mixed.size(), static_cast<size_t>(kSteps));
  ASSERT_EQ(c.bf16_true.size(), static_cast<size_t>(kSteps));
  const double to_mixed = MaxGap(c.fp8, c.bf16_mixed);
  const double to_true = MaxGap(c.fp8, c.bf16_true);
  ::testing::Test::RecordProperty("max_gap_to_bf16_mixed", std::to_string(to_mixed));
  ::testing::Test::RecordProperty("max_gap_to_bf16_true", std::to_string(to_true));
  std::cout << what << ": loss " << c.fp8.front() << " -> " << c.fp8.back() << " (bf16-mixed "
            << c.bf16_mixed.back() << ", bf16-true " << c.bf16_true.back()
            << "); max per-step gap to bf16-mixed " << to_mixed << ", to bf16-true " << to_true
            << "\n";
  EXPECT_LT(to_mixed, kGapToBf16Mixed);
  EXPECT_LT(to_true, kGapToBf16True);
  // It learns: two runs that both stay put would pass the gap checks.
  EXPECT_LT(c.fp8.back(), c.fp8.front() - 3.0);
}

TEST(TransformerEnginePrecisionTest, TinyGptLossTracksBf16MixedOnCpu) {
  auto fp8 = Emulated();
  MixedPrecision bf16_mixed(torch::kBFloat16, c10::DeviceType::CPU);
  auto bf16_true = PrecisionRegistry::Create("bf16-true", torch::kCPU);
  ASSERT_OK(bf16_true);
  ExpectFp8Tracks(
      {TrainLosses(*fp8, torch::kCPU, kSteps), TrainLosses(bf16_mixed, torch::kCPU, kSteps),
       TrainLosses(**bf16_true, torch::kCPU, kSteps)},
      "FP8 (emulated, CPU)");
}

TEST(TransformerEnginePrecisionTest, TinyGptLossTracksBf16MixedOnCudaWithScaledMm) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  if (!compat::kHasFp8) GTEST_SKIP() << "LibTorch " << compat::LibTorchVersion() << " has no FP8";
  const DeviceCapabilities caps = DeviceCapabilities::Probe(torch::kCUDA);
  if (caps.compute_capability < 89) GTEST_SKIP() << caps.device_name << " has no FP8 GEMMs";
  auto fp8 = PrecisionRegistry::Create("transformer-engine", torch::kCUDA);
  ASSERT_OK(fp8);
  MixedPrecision bf16_mixed(torch::kBFloat16, c10::DeviceType::CUDA);
  auto bf16_true = PrecisionRegistry::Create("bf16-true", torch::kCUDA);
  ASSERT_OK(bf16_true);
  ExpectFp8Tracks(
      {TrainLosses(**fp8, torch::kCUDA, kSteps), TrainLosses(bf16_mixed, torch::kCUDA, kSteps),
       TrainLosses(**bf16_true, torch::kCUDA, kSteps)},
      "FP8 (at::_scaled_mm, CUDA)");
}

}  // namespace
}  // namespace mantissa
