// The FP8 arithmetic of the transformer-engine plugin: rounding to the E4M3
// and E5M2 grids, TransformerEngine's delayed scaling, and the FP8 Linear's
// forward and backward against a fake-quantized reference computed here
// independently (by enumerating every FP8 value), all on the CPU with the
// emulated backend; then the real at::_scaled_mm path where a GPU allows.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "server/common/torch_compat.h"
#include "server/precision/delayed_scaling.h"
#include "server/precision/fp8_linear.h"
#include "server/precision/fp8_scaling_group.h"
#include "server/precision/fp8_tensor.h"
#include "server/runtime/device_capabilities.h"
#include "tests/testing/status_matchers.h"

namespace mantissa {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using testing::StatusIs;

// Every finite non-negative value of the format, from its bit patterns, in
// increasing order; the index is the code, so an even index has an even
// mantissa (the ties-to-even choice).
std::vector<double> Grid(Fp8Dtype dtype) {
  const int mantissa_bits = dtype == Fp8Dtype::kE4M3 ? 3 : 2;
  const int exponent_bits = dtype == Fp8Dtype::kE4M3 ? 4 : 5;
  const int bias = (1 << (exponent_bits - 1)) - 1;
  std::vector<double> values;
  for (int e = 0; e < (1 << exponent_bits); ++e) {
    for (int m = 0; m < (1 << mantissa_bits); ++m) {
      const double fraction = static_cast<double>(m) / (1 << mantissa_bits);
      // E4M3 "fn": only S.1111.111 is NaN; E5M2: exponent 31 is inf/NaN.
      if (dtype == Fp8Dtype::kE4M3 && e == 15 && m == 7) continue;
      if (dtype == Fp8Dtype::kE5M2 && e == 31) continue;
      values.push_back(e == 0 ? std::ldexp(fraction, 1 - bias)
                              : std::ldexp(1.0 + fraction, e - bias));
    }
  }
  return values;
}

// Round to nearest, ties to even, saturating: by search over the grid.
double RefRound(double v, Fp8Dtype dtype) {
  static const std::vector<double> e4m3 = Grid(Fp8Dtype::kE4M3);
  static const std::vector<double> e5m2 = Grid(Fp8Dtype::kE5M2);
  const std::vector<double>& grid = dtype == Fp8Dtype::kE4M3 ? e4m3 : e5m2;
  const double a = std::fabs(v);
  if (a >= grid.back()) return std::copysign(grid.back(), v);
  const size_t hi = std::upper_bound(grid.begin(), grid.end(), a) - grid.begin();
  const size_t lo = hi - 1;
  const double down = a - grid[lo], up = grid[hi] - a;
  const size_t pick = down < up ? lo : up < down ? hi : (lo % 2 == 0 ? lo : hi);
  return std::copysign(grid[pick], v);
}

// Fake quantization in double: round(x * scale) / scale.
torch::Tensor RefFakeQuant(const torch::Tensor& x, double scale, Fp8Dtype dtype) {
  torch::Tensor d = x.detach().to(torch::kFloat64).contiguous().clone();
  double* p = d.data_ptr<double>();
  for (int64_t i = 0; i < d.numel(); ++i) {
    // The product is taken in float32, as the plugin does.
    const float scaled = static_cast<float>(p[i]) * static_cast<float>(scale);
    p[i] = RefRound(scaled, dtype) / static_cast<float>(scale);
  }
  return d;
}

float Scalar(const torch::Tensor& t) { return t.item<float>(); }

TEST(Fp8FormatTest, GridsHaveTheKnownExtremes) {
  EXPECT_EQ(Grid(Fp8Dtype::kE4M3).back(), 448.0);
  EXPECT_EQ(Grid(Fp8Dtype::kE5M2).back(), 57344.0);
  EXPECT_EQ(Fp8Max(Fp8Dtype::kE4M3), 448.0);
  EXPECT_EQ(Fp8Max(Fp8Dtype::kE5M2), 57344.0);
  EXPECT_EQ(Grid(Fp8Dtype::kE4M3)[1], 0.001953125);           // 2^-9
  EXPECT_EQ(Grid(Fp8Dtype::kE5M2)[1], std::ldexp(1.0, -16));  // 2^-16
}

TEST(Fp8FormatTest, RoundsKnownValues) {
  struct Case {
    float in;
    float e4m3;
    float e5m2;
  };
  const std::vector<Case> cases = {
      {1.0625f, 1.0f, 1.0f},                           // E4M3: halfway 1.0|1.125 -> even 1.0
      {1.1875f, 1.25f, 1.25f},                         // E4M3: halfway 1.125|1.25 -> even 1.25
      {1.125f, 1.125f, 1.0f},                          // exact in E4M3; E5M2 tie 1.0|1.25 -> 1.0
      {1.375f, 1.375f, 1.5f},                          // E5M2 tie 1.25|1.5 -> even 1.5
      {449.0f, 448.0f, 448.0f},                        // E4M3 saturates
      {464.0f, 448.0f, 448.0f},                        // E4M3: 480 would be NaN -> saturate
      {1e6f, 448.0f, 57344.0f},                        // both saturate
      {-1e6f, -448.0f, -57344.0f},                     // with the sign
      {0.001953125f, 0.001953125f, 0.001953125f},      // E4M3 min subnormal
      {0.0009765625f, 0.0f, 0.0009765625f},            // half of it: tie -> 0
      {0.00146484375f, 0.001953125f, 0.00146484375f},  // 0.75 * 2^-9 -> up
      {std::ldexp(1.0f, -16), 0.0f, std::ldexp(1.0f, -16)},  // E5M2 min subnormal
      {0.0f, 0.0f, 0.0f},
      {3.0f, 3.0f, 3.0f},
      {-2.6f, -2.5f, -2.5f},
      {std::numeric_limits<float>::infinity(), 448.0f, 57344.0f},
  };
  std::vector<float> in;
  for (const Case& c : cases) in.push_back(c.in);
  const torch::Tensor x = torch::tensor(in);
  const torch::Tensor e4m3 = RoundToFp8(x, Fp8Dtype::kE4M3);
  const torch::Tensor e5m2 = RoundToFp8(x, Fp8Dtype::kE5M2);
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(e4m3[i].item<float>(), cases[i].e4m3) << "E4M3 of " << cases[i].in;
    EXPECT_EQ(e5m2[i].item<float>(), cases[i].e5m2) << "E5M2 of " << cases[i].in;
  }
  EXPECT_TRUE(std::isnan(RoundToFp8(torch::tensor({NAN}), Fp8Dtype::kE4M3).item<float>()));
}

TEST(Fp8FormatTest, MatchesTheEnumeratedGridEverywhere) {
  torch::manual_seed(0);
  // Magnitudes from far below the subnormals to beyond the maximum.
  const torch::Tensor x =
      torch::randn({4000}) * torch::exp2(torch::randint(-22, 18, {4000}).to(torch::kFloat32));
  for (Fp8Dtype dtype : {Fp8Dtype::kE4M3, Fp8Dtype::kE5M2}) {
    const torch::Tensor got = RoundToFp8(x, dtype);
    for (int64_t i = 0; i < x.numel(); ++i) {
      const float v = x[i].item<float>();
      ASSERT_EQ(got[i].item<float>(), static_cast<float>(RefRound(v, dtype)))
          << Fp8DtypeName(dtype) << " of " << v;
    }
  }
}

TEST(DelayedScalingTest, ParseUsesTransformerEngineNamesAndDefaults) {
  auto defaults = DelayedScaling::Parse("", std::nullopt, "", std::nullopt);
  ASSERT_OK(defaults);
  EXPECT_EQ(defaults->fp8_format, DelayedScaling::Format::kHybrid);
  EXPECT_EQ(defaults->amax_history_len, 1024);
  EXPECT_EQ(defaults->amax_compute_algo, DelayedScaling::AmaxComputeAlgo::kMax);
  EXPECT_EQ(defaults->margin, 0);
  EXPECT_EQ(defaults->forward_dtype(), Fp8Dtype::kE4M3);
  EXPECT_EQ(defaults->backward_dtype(), Fp8Dtype::kE5M2);

  auto e4m3 = DelayedScaling::Parse("E4M3", 16, "most_recent", 2);
  ASSERT_OK(e4m3);
  EXPECT_EQ(e4m3->backward_dtype(), Fp8Dtype::kE4M3);
  EXPECT_EQ(e4m3->amax_compute_algo, DelayedScaling::AmaxComputeAlgo::kMostRecent);

  EXPECT_THAT(DelayedScaling::Parse("E5M2", {}, "", {}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("fp8.fp8_format"), HasSubstr("HYBRID"), HasSubstr("E4M3"))));
  EXPECT_THAT(DelayedScaling::Parse("", {}, "mean", {}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("fp8.amax_compute_algo"), HasSubstr("most_recent"))));
  EXPECT_THAT(DelayedScaling::Parse("", 0, "", {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("fp8.amax_history_len")));
  EXPECT_THAT(DelayedScaling::Parse("", 1 << 20, "", {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("fp8.amax_history_len")));
  EXPECT_THAT(DelayedScaling::Parse("", {}, "", -1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("fp8.margin")));
}

DelayedScaling Recipe(int64_t len, DelayedScaling::AmaxComputeAlgo algo, int64_t margin = 0) {
  DelayedScaling r;
  r.amax_history_len = len;
  r.amax_compute_algo = algo;
  r.margin = margin;
  return r;
}

// One tensor in a group of its own, stepped as the plugin steps it: record
// the step's amax, then update.
struct OneTensor {
  OneTensor(Fp8Dtype dtype, const DelayedScaling& recipe)
      : group(std::make_shared<Fp8ScalingGroup>(recipe, torch::kCPU)), scaling(group, dtype) {}
  void Step(float amax) {
    scaling.Record(torch::tensor(amax));
    group->Update();
  }
  float scale() const { return Scalar(scaling.scale()); }

  std::shared_ptr<Fp8ScalingGroup> group;
  Fp8TensorScaling scaling;
};

TEST(DelayedScalingTest, ScaleIsFp8MaxOverTheHistorysAmax) {
  OneTensor s(Fp8Dtype::kE4M3, Recipe(3, DelayedScaling::AmaxComputeAlgo::kMax));
  EXPECT_EQ(s.scale(), 1.0f);  // before any step
  s.Step(8);
  EXPECT_EQ(s.scale(), 56.0f);  // 448 / 8
  // The history rolled: the step's amax is kept, slot [0] is free again.
  EXPECT_EQ(s.scaling.amax_history()[0].item<float>(), 0.0f);
  EXPECT_EQ(s.scaling.amax_history().sum().item<float>(), 8.0f);
  // 8 stays the max for amax_history_len = 3 updates, then leaves.
  s.Step(1);
  EXPECT_EQ(s.scale(), 56.0f);
  s.Step(1);
  EXPECT_EQ(s.scale(), 56.0f);
  s.Step(1);
  EXPECT_EQ(s.scale(), 448.0f);
}

TEST(DelayedScalingTest, MostRecentMarginAndE5M2) {
  OneTensor recent(Fp8Dtype::kE4M3, Recipe(16, DelayedScaling::AmaxComputeAlgo::kMostRecent));
  recent.Step(8);
  recent.Step(2);
  EXPECT_EQ(recent.scale(), 224.0f);  // 448 / 2, ignoring the earlier 8

  OneTensor margin(Fp8Dtype::kE4M3, Recipe(4, DelayedScaling::AmaxComputeAlgo::kMax, 2));
  margin.Step(2);
  EXPECT_EQ(margin.scale(), 56.0f);  // (448 / 2) / 2^2

  OneTensor e5m2(Fp8Dtype::kE5M2, Recipe(4, DelayedScaling::AmaxComputeAlgo::kMax));
  e5m2.Step(2);
  EXPECT_EQ(e5m2.scale(), 28672.0f);  // 57344 / 2
}

TEST(DelayedScalingTest, ZeroOrNonFiniteAmaxKeepsThePreviousScale) {
  for (float bad : {0.0f, std::numeric_limits<float>::infinity(), NAN}) {
    OneTensor s(Fp8Dtype::kE4M3, Recipe(1, DelayedScaling::AmaxComputeAlgo::kMax));
    s.Step(4);
    ASSERT_EQ(s.scale(), 112.0f);
    s.Step(bad);
    EXPECT_EQ(s.scale(), 112.0f) << "amax " << bad;
  }
  // An amax so small that 448 / amax overflows float32: the largest float.
  OneTensor tiny(Fp8Dtype::kE4M3, Recipe(1, DelayedScaling::AmaxComputeAlgo::kMax));
  tiny.Step(1e-40f);
  EXPECT_EQ(tiny.scale(), std::numeric_limits<float>::max());
}

TEST(DelayedScalingTest, OneGroupUpdateEqualsUpdatingEachTensorAlone) {
  for (DelayedScaling::AmaxComputeAlgo algo :
       {DelayedScaling::AmaxComputeAlgo::kMax, DelayedScaling::AmaxComputeAlgo::kMostRecent}) {
    const DelayedScaling recipe = Recipe(3, algo, /*margin=*/1);
    const std::vector<Fp8Dtype> dtypes = {Fp8Dtype::kE4M3, Fp8Dtype::kE5M2, Fp8Dtype::kE4M3};
    auto group = std::make_shared<Fp8ScalingGroup>(recipe, torch::kCPU);
    std::vector<Fp8TensorScaling> rows;
    std::vector<OneTensor> alone;
    for (Fp8Dtype dtype : dtypes) {
      rows.emplace_back(group, dtype);
      alone.emplace_back(dtype, recipe);
    }
    ASSERT_EQ(group->size(), 3);
    // Different amaxes per tensor and step, a zero and a NaN among them.
    const std::vector<std::vector<float>> amaxes = {
        {8, 0.5f, 3}, {1, 0, 300}, {2, 4, NAN}, {0.25f, 4, 1}, {6, 0.5f, 2}};
    for (size_t step = 0; step < amaxes.size(); ++step) {
      for (size_t i = 0; i < rows.size(); ++i) {
        rows[i].Record(torch::tensor(amaxes[step][i]));
        alone[i].Step(amaxes[step][i]);
      }
      group->Update();
      for (size_t i = 0; i < rows.size(); ++i) {
        SCOPED_TRACE(::testing::Message()
                     << DelayedScaling::AlgoName(algo) << " step " << step << " tensor " << i);
        EXPECT_EQ(Scalar(rows[i].scale()), alone[i].scale());
        EXPECT_TRUE(torch::equal(rows[i].amax_history().nan_to_num(-1),
                                 alone[i].scaling.amax_history().nan_to_num(-1)));
      }
    }
  }
}

TEST(DelayedScalingTest, AStepKeepsItsLargestAmaxAndAnUnrecordedUpdateChangesNothing) {
  OneTensor s(Fp8Dtype::kE4M3, Recipe(4, DelayedScaling::AmaxComputeAlgo::kMostRecent));
  // A layer that runs twice in a step records twice: the larger amax counts.
  s.scaling.Record(torch::tensor(2.0f));
  s.scaling.Record(torch::tensor(8.0f));
  s.scaling.Record(torch::tensor(4.0f, torch::kBFloat16));
  s.group->Update();
  EXPECT_EQ(s.scale(), 56.0f);  // 448 / 8
  // An evaluation forward records nothing; its update must not roll the
  // history or move the scale.
  const torch::Tensor history = s.scaling.amax_history().clone();
  s.group->Update();
  EXPECT_EQ(s.scale(), 56.0f);
  EXPECT_TRUE(torch::equal(s.scaling.amax_history(), history));
}

TEST(DelayedScalingTest, LoadChecksTheHistoryLength) {
  OneTensor s(Fp8Dtype::kE4M3, Recipe(4, DelayedScaling::AmaxComputeAlgo::kMax));
  s.scaling.Load(torch::tensor({0.f, 1.f, 2.f, 3.f}), torch::tensor(5.f));
  EXPECT_EQ(s.scale(), 5.0f);
  EXPECT_EQ(s.scaling.amax_history()[3].item<float>(), 3.0f);
  EXPECT_THROW(s.scaling.Load(torch::zeros({5}), torch::tensor(1.f)), c10::Error);
}

// One FP8 Linear step against the reference: forward, then backward with
// upstream gradient `g`. Float32 weights keep the comparison tight.
void ExpectStepMatchesReference(Fp8Linear& fp8, const torch::Tensor& x_in, const torch::Tensor& g,
                                Fp8Dtype grad_dtype) {
  Fp8LinearState& state = fp8->fp8_state();
  const double sx = Scalar(state.input.scale());
  const double sw = Scalar(state.weight.scale());
  const double sg = Scalar(state.grad_output.scale());
  for (const auto& p : fp8->parameters()) p.mutable_grad() = torch::Tensor();
  torch::Tensor x = x_in.clone().requires_grad_(true);
  torch::Tensor y = fp8->forward(x);
  y.backward(g);

  const torch::Tensor xq = RefFakeQuant(x.reshape({-1, x.size(-1)}), sx, Fp8Dtype::kE4M3);
  const torch::Tensor wq = RefFakeQuant(fp8->weight, sw, Fp8Dtype::kE4M3);
  const torch::Tensor gq = RefFakeQuant(g.reshape({-1, g.size(-1)}), sg, grad_dtype);
  const torch::Tensor b = fp8->bias.detach().to(torch::kFloat64);
  const torch::Tensor y_ref = torch::mm(xq, wq.t()) + b;
  const torch::Tensor dx_ref = torch::mm(gq, wq);
  const torch::Tensor dw_ref = torch::mm(gq.t(), xq);
  const torch::Tensor db_ref = g.reshape({-1, g.size(-1)}).to(torch::kFloat64).sum(0);

  auto close = [](const torch::Tensor& a, const torch::Tensor& ref) {
    return torch::allclose(a.detach().to(torch::kFloat64), ref, 1e-5, 1e-5);
  };
  EXPECT_TRUE(close(y.reshape({-1, y.size(-1)}), y_ref)) << "forward";
  EXPECT_TRUE(close(x.grad().reshape({-1, x.size(-1)}), dx_ref)) << "input gradient";
  EXPECT_TRUE(close(fp8->weight.grad(), dw_ref)) << "weight gradient";
  EXPECT_TRUE(close(fp8->bias.grad(), db_ref)) << "bias gradient";
  // Quantization is visible: the result differs from the exact product.
  const torch::Tensor exact = torch::mm(x.detach().reshape({-1, x.size(-1)}).to(torch::kFloat64),
                                        fp8->weight.detach().to(torch::kFloat64).t()) +
                              b;
  EXPECT_FALSE(torch::allclose(y_ref, exact, 1e-4, 1e-4));
  // What the plugin does after each backward.
  state.input.group().Update();
}

TEST(Fp8LinearTest, EmulatedForwardAndBackwardMatchAFakeQuantReference) {
  for (DelayedScaling::Format format :
       {DelayedScaling::Format::kHybrid, DelayedScaling::Format::kE4M3}) {
    torch::manual_seed(1);
    torch::nn::Linear linear(32, 16);
    DelayedScaling recipe = Recipe(4, DelayedScaling::AmaxComputeAlgo::kMax);
    recipe.fp8_format = format;
    Fp8Linear fp8(*linear, std::make_shared<Fp8ScalingGroup>(recipe, torch::kCPU),
                  Fp8Backend::kEmulated);
    // The parameters are the Linear's own tensors.
    EXPECT_TRUE(fp8->weight.is_same(linear->weight));
    EXPECT_TRUE(fp8->bias.is_same(linear->bias));
    fp8->train();
    float input_amax = 0, grad_amax = 0;  // over the history (4 steps > 3)
    for (int step = 0; step < 3; ++step) {
      // Growing inputs: later steps quantize with scales from smaller amaxes
      // and saturate, as delayed scaling does.
      const torch::Tensor x = torch::randn({3, 5, 32}) * (1 + 2 * step);
      const torch::Tensor g = torch::randn({3, 5, 16}) * 1e-3;
      SCOPED_TRACE(::testing::Message() << DelayedScaling::FormatName(format) << " step " << step);
      ExpectStepMatchesReference(fp8, x, g, recipe.backward_dtype());
      // The step recorded its amaxes: the next scales come from them.
      input_amax = std::max(input_amax, x.abs().max().item<float>());
      grad_amax = std::max(grad_amax, g.abs().max().item<float>());
      EXPECT_FLOAT_EQ(Scalar(fp8->fp8_state().input.scale()), 448.0f / input_amax);
      EXPECT_FLOAT_EQ(Scalar(fp8->fp8_state().grad_output.scale()),
                      static_cast<float>(Fp8Max(recipe.backward_dtype())) / grad_amax);
    }
  }
}

TEST(Fp8LinearTest, EvalModeUsesTheScalesWithoutUpdatingThem) {
  torch::nn::Linear linear(16, 16);
  auto group = std::make_shared<Fp8ScalingGroup>(Recipe(4, DelayedScaling::AmaxComputeAlgo::kMax),
                                                 torch::kCPU);
  Fp8Linear fp8(*linear, group, Fp8Backend::kEmulated);
  EXPECT_EQ(group->size(), 3);  // input, weight, output gradient
  fp8->train();
  fp8->forward(torch::randn({4, 16}));
  group->Update();
  const float trained = Scalar(fp8->fp8_state().input.scale());
  EXPECT_NE(trained, 1.0f);
  const torch::Tensor history = group->amax_history().clone();
  fp8->eval();
  torch::NoGradGuard no_grad;
  fp8->forward(torch::randn({4, 16}) * 100);
  group->Update();
  EXPECT_EQ(Scalar(fp8->fp8_state().input.scale()), trained);
  EXPECT_TRUE(torch::equal(group->amax_history(), history));
}

TEST(Fp8LinearTest, Bf16WeightsGiveBf16OutputsCloseToTheReference) {
  torch::manual_seed(2);
  torch::nn::Linear linear(32, 32);
  linear->to(torch::kBFloat16);
  Fp8Linear fp8(*linear,
                std::make_shared<Fp8ScalingGroup>(Recipe(4, DelayedScaling::AmaxComputeAlgo::kMax),
                                                  torch::kCPU),
                Fp8Backend::kEmulated);
  const torch::Tensor x = torch::randn({8, 32}, torch::kBFloat16);
  const torch::Tensor y = fp8->forward(x);
  EXPECT_EQ(y.scalar_type(), torch::kBFloat16);
  const torch::Tensor ref = torch::mm(RefFakeQuant(x, 1.0, Fp8Dtype::kE4M3),
                                      RefFakeQuant(fp8->weight, 1.0, Fp8Dtype::kE4M3).t()) +
                            fp8->bias.to(torch::kFloat64);
  // Only the final rounding to bf16 (8 bits) separates them.
  EXPECT_TRUE(torch::allclose(y.to(torch::kFloat64), ref, 1e-2, 1e-2));
}

// The production path, on a GPU that has it: float8 casts agree with the
// emulated grid bit for bit, and _scaled_mm's Linear with the emulated one.
TEST(Fp8ScaledMmTest, MatchesTheEmulationOnCuda) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  if (!compat::kHasFp8) GTEST_SKIP() << "LibTorch " << compat::LibTorchVersion() << " has no FP8";
  const DeviceCapabilities caps = DeviceCapabilities::Probe(torch::kCUDA);
  if (caps.compute_capability < 89) GTEST_SKIP() << caps.device_name << " has no FP8 GEMMs";

  torch::manual_seed(3);
  const torch::Tensor x = torch::randn({1000}, torch::kCUDA) * 300;
  const torch::Tensor scale = torch::tensor(0.7f, torch::kCUDA);
  for (Fp8Dtype dtype : {Fp8Dtype::kE4M3, Fp8Dtype::kE5M2}) {
    const Fp8Tensor real = QuantizeFp8(x, scale, dtype, Fp8Backend::kScaledMm);
    const Fp8Tensor emulated = QuantizeFp8(x, scale, dtype, Fp8Backend::kEmulated);
    EXPECT_TRUE(torch::equal(real.data.to(torch::kFloat32), emulated.data)) << Fp8DtypeName(dtype);
  }

  torch::nn::Linear linear(64, 48);
  linear->to(torch::kCUDA, torch::kBFloat16);
  torch::nn::Linear twin(64, 48);
  twin->to(torch::kCUDA, torch::kBFloat16);
  {
    torch::NoGradGuard no_grad;
    twin->weight.copy_(linear->weight);
    twin->bias.copy_(linear->bias);
  }
  const DelayedScaling recipe = Recipe(8, DelayedScaling::AmaxComputeAlgo::kMax);
  auto real_scaling = std::make_shared<Fp8ScalingGroup>(recipe, torch::kCUDA);
  auto emulated_scaling = std::make_shared<Fp8ScalingGroup>(recipe, torch::kCUDA);
  Fp8Linear real(*linear, real_scaling, Fp8Backend::kScaledMm);
  Fp8Linear emulated(*twin, emulated_scaling, Fp8Backend::kEmulated);
  for (int step = 0; step < 3; ++step) {
    // 37 rows: not a multiple of 16, so the weight gradient's GEMM is padded.
    const torch::Tensor in = torch::randn({37, 64}, torch::kCUDA).to(torch::kBFloat16);
    const torch::Tensor g = torch::randn({37, 48}, torch::kCUDA).to(torch::kBFloat16);
    torch::Tensor xr = in.clone().requires_grad_(true), xe = in.clone().requires_grad_(true);
    torch::Tensor yr = real->forward(xr), ye = emulated->forward(xe);
    yr.backward(g);
    ye.backward(g);
    real_scaling->Update();
    emulated_scaling->Update();
    auto close = [](const torch::Tensor& a, const torch::Tensor& b) {
      return torch::allclose(a.to(torch::kFloat32), b.to(torch::kFloat32), 2e-2, 2e-2);
    };
    EXPECT_TRUE(close(yr, ye)) << "forward, step " << step;
    EXPECT_TRUE(close(xr.grad(), xe.grad())) << "input gradient, step " << step;
    EXPECT_TRUE(close(linear->weight.grad(), twin->weight.grad())) << "weight gradient";
    EXPECT_TRUE(close(linear->bias.grad(), twin->bias.grad())) << "bias gradient";
    EXPECT_TRUE(torch::equal(real->fp8_state().input.scale(), emulated->fp8_state().input.scale()));
    linear->weight.mutable_grad() = torch::Tensor();
    twin->weight.mutable_grad() = torch::Tensor();
    linear->bias.mutable_grad() = torch::Tensor();
    twin->bias.mutable_grad() = torch::Tensor();
  }
}

}  // namespace
}  // namespace mantissa
