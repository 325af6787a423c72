#include "server/precision/grad_scaler.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "server/precision/fp32_precision.h"
#include "tests/testing/status_matchers.h"

namespace mantissa {
namespace {

using ::testing::HasSubstr;
using testing::StatusIs;

// torch.amp.GradScaler's update rule restated on host floats: the scale is a
// float32, factors are doubles, products are rounded back to float.
struct ReferenceScaler {
  float scale;
  int32_t tracker = 0;
  double growth_factor;
  double backoff_factor;
  int64_t growth_interval;

  explicit ReferenceScaler(const GradScaler::Options& o)
      : scale(static_cast<float>(o.init_scale)),
        growth_factor(o.growth_factor),
        backoff_factor(o.backoff_factor),
        growth_interval(o.growth_interval) {}

  void Update(bool found_inf) {
    if (found_inf) {
      scale = static_cast<float>(static_cast<double>(scale) * backoff_factor);
      tracker = 0;
      return;
    }
    const int32_t successful = tracker + 1;
    if (successful == growth_interval) {
      const float grown = static_cast<float>(static_cast<double>(scale) * growth_factor);
      if (std::isfinite(grown)) scale = grown;
      tracker = 0;
    } else {
      tracker = successful;
    }
  }

  float InvScale() const { return static_cast<float>(1.0 / static_cast<double>(scale)); }
};

std::unique_ptr<GradScaler> MakeScaler(const GradScaler::Options& options) {
  auto scaler = GradScaler::Create(options);
  EXPECT_OK(scaler);
  return scaler.ok() ? std::move(scaler).value() : nullptr;
}

// Two parameters whose gradients the tests write by hand, and an SGD over them.
struct Params {
  torch::Tensor w;
  torch::Tensor b;
  std::unique_ptr<torch::optim::SGD> sgd;

  explicit Params(torch::Device device = torch::kCPU) {
    const auto opts = torch::TensorOptions().dtype(torch::kFloat32).device(device);
    w = torch::tensor({0.5f, -1.25f, 2.0f}, opts).set_requires_grad(true);
    b = torch::tensor({{1.0f, 2.0f}, {3.0f, -4.0f}}, opts).set_requires_grad(true);
    sgd = std::make_unique<torch::optim::SGD>(std::vector<torch::Tensor>{w, b},
                                              torch::optim::SGDOptions(0.1));
  }

  // Gradients as a scaled backward would leave them, with an optional
  // non-finite value planted in `b`.
  void SetScaledGrads(float scale, float poison = 0.0f, bool poisoned = false) {
    const auto opts = w.options();
    w.mutable_grad() =
        torch::tensor({0.75f, -3.0f, 1.5f}, opts.device(torch::kCPU)).mul(scale).to(opts.device());
    auto bg = torch::tensor({{0.25f, 0.5f}, {-2.0f, 1.0f}}, opts.device(torch::kCPU)).mul(scale);
    if (poisoned) bg[1][0] = poison;
    b.mutable_grad() = bg.to(opts.device());
  }
};

std::vector<float> Values(const torch::Tensor& t) {
  torch::Tensor flat = t.detach().to(torch::kCPU, torch::kFloat32).contiguous().view(-1);
  return std::vector<float>(flat.data_ptr<float>(), flat.data_ptr<float>() + flat.numel());
}

TEST(GradScalerTest, CreateAcceptsDefaults) {
  auto scaler = GradScaler::Create({});
  ASSERT_OK(scaler);
  EXPECT_TRUE((*scaler)->enabled());
  EXPECT_EQ((*scaler)->scale(), 65536.0);
  EXPECT_EQ((*scaler)->growth_tracker(), 0);
  EXPECT_EQ((*scaler)->skipped_steps(), 0);
}

TEST(GradScalerTest, CreateRejectsBadInitScale) {
  for (double bad : {0.0, -1.0, std::numeric_limits<double>::infinity(),
                     std::numeric_limits<double>::quiet_NaN()}) {
    GradScaler::Options options;
    options.init_scale = bad;
    EXPECT_THAT(GradScaler::Create(options),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("grad_scaler.init_scale: must be a finite number > 0, got ")))
        << bad;
  }
  GradScaler::Options options;
  options.init_scale = -2.5;
  EXPECT_THAT(GradScaler::Create(options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("got -2.5")));
}

TEST(GradScalerTest, CreateRejectsBadGrowthFactor) {
  for (double bad : {1.0, 0.5, -2.0, std::numeric_limits<double>::quiet_NaN()}) {
    GradScaler::Options options;
    options.growth_factor = bad;
    EXPECT_THAT(GradScaler::Create(options),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("grad_scaler.growth_factor: must be > 1, got ")))
        << bad;
  }
  GradScaler::Options options;
  options.growth_factor = 1.0;
  EXPECT_THAT(GradScaler::Create(options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("got 1")));
}

TEST(GradScalerTest, CreateRejectsBadBackoffFactor) {
  for (double bad : {0.0, 1.0, 1.5, -0.5, std::numeric_limits<double>::quiet_NaN()}) {
    GradScaler::Options options;
    options.backoff_factor = bad;
    EXPECT_THAT(GradScaler::Create(options),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("grad_scaler.backoff_factor: must be in (0, 1), got ")))
        << bad;
  }
  GradScaler::Options options;
  options.backoff_factor = 1.5;
  EXPECT_THAT(GradScaler::Create(options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("got 1.5")));
}

TEST(GradScalerTest, CreateRejectsBadGrowthInterval) {
  for (int64_t bad : {int64_t{0}, int64_t{-5}}) {
    GradScaler::Options options;
    options.growth_interval = bad;
    EXPECT_THAT(GradScaler::Create(options),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr(std::string("grad_scaler.growth_interval: must be >= 1, got ") +
                                   std::to_string(bad))));
  }
  // The tracker is int32: an interval it can never reach is refused too.
  GradScaler::Options options;
  options.growth_interval = int64_t{1} << 31;
  EXPECT_THAT(GradScaler::Create(options),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("grad_scaler.growth_interval: must be <= 2147483647")));
  options.growth_interval = std::numeric_limits<int32_t>::max();
  EXPECT_OK(GradScaler::Create(options));
}

// The resolver checks settings with CheckOptions and the trainer creates the
// scaler once: both must judge alike.
TEST(GradScalerTest, CheckOptionsIsCreatesCheck) {
  GradScaler::Options bad_scale, bad_growth, bad_backoff, bad_interval;
  bad_scale.init_scale = 0;
  bad_growth.growth_factor = 1;
  bad_backoff.backoff_factor = 1;
  bad_interval.growth_interval = 0;
  for (const GradScaler::Options& options :
       {GradScaler::Options(), bad_scale, bad_growth, bad_backoff, bad_interval}) {
    EXPECT_EQ(GradScaler::CheckOptions(options), GradScaler::Create(options).status());
  }
}

TEST(GradScalerTest, CreateAcceptsBoundaryValues) {
  GradScaler::Options options;
  options.init_scale = 1e-30;
  options.growth_factor = 1.0000001;
  options.backoff_factor = 0.999;
  options.growth_interval = 1;
  EXPECT_OK(GradScaler::Create(options));
}

enum class GradKind { kFinite, kInf, kNegInf, kNaN };

// Replays a scripted pattern of clean and poisoned steps on `device` and checks
// every observable against ReferenceScaler after each step.
void RunScriptedPattern(const GradScaler::Options& options, const std::vector<GradKind>& pattern,
                        torch::Device device) {
  auto scaler = MakeScaler(options);
  ASSERT_NE(scaler, nullptr);
  Params params(device);
  ReferenceScaler ref(options);
  int64_t expected_skipped = 0;

  for (size_t i = 0; i < pattern.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "step " << i);
    const GradKind kind = pattern[i];
    const bool poisoned = kind != GradKind::kFinite;
    const float poison = kind == GradKind::kInf      ? std::numeric_limits<float>::infinity()
                         : kind == GradKind::kNegInf ? -std::numeric_limits<float>::infinity()
                                                     : std::numeric_limits<float>::quiet_NaN();

    // The loss drives lazy initialisation onto the device, as in training.
    torch::Tensor scaled =
        scaler->Scale(torch::full({}, 2.0f, torch::TensorOptions().device(device)));
    ASSERT_EQ(Values(scaled)[0], 2.0f * ref.scale);

    params.SetScaledGrads(ref.scale, poison, poisoned);
    const std::vector<float> raw_w = Values(params.w.grad());
    const std::vector<float> w_before = Values(params.w);
    const std::vector<float> b_before = Values(params.b);

    const OptimizerStepResult result = scaler->Step(*params.sgd);
    EXPECT_TRUE(result.skip_known);
    const bool skipped = result.skipped;
    EXPECT_EQ(skipped, poisoned);
    if (poisoned) ++expected_skipped;
    EXPECT_EQ(scaler->skipped_steps(), expected_skipped);

    // Gradients are unscaled by exactly the float-rounded double reciprocal,
    // whether or not the step was skipped.
    const std::vector<float> w_grad = Values(params.w.grad());
    for (size_t j = 0; j < raw_w.size(); ++j) {
      EXPECT_EQ(w_grad[j], raw_w[j] * ref.InvScale()) << "w.grad[" << j << "]";
    }

    if (poisoned) {
      EXPECT_EQ(Values(params.w), w_before);
      EXPECT_EQ(Values(params.b), b_before);
    } else {
      const std::vector<float> w_after = Values(params.w);
      for (size_t j = 0; j < w_after.size(); ++j) {
        EXPECT_FLOAT_EQ(w_after[j], w_before[j] - 0.1f * w_grad[j]) << "w[" << j << "]";
      }
      EXPECT_NE(Values(params.b), b_before);
    }

    scaler->Update();
    ref.Update(poisoned);
    EXPECT_EQ(scaler->scale(), static_cast<double>(ref.scale));
    EXPECT_EQ(scaler->growth_tracker(), ref.tracker);
  }
}

const std::vector<GradKind> kPattern = {
    GradKind::kFinite, GradKind::kFinite, GradKind::kFinite,  // grows at the 3rd
    GradKind::kInf,    GradKind::kFinite, GradKind::kNaN,     // backoffs reset the tracker
    GradKind::kFinite, GradKind::kFinite, GradKind::kFinite,  // grows again
    GradKind::kFinite, GradKind::kNegInf, GradKind::kNaN,     // consecutive backoffs
    GradKind::kFinite, GradKind::kFinite, GradKind::kFinite, GradKind::kFinite,
    GradKind::kFinite, GradKind::kFinite, GradKind::kFinite,
};

class GradScalerDeviceTest : public ::testing::TestWithParam<bool> {
 protected:
  torch::Device device() const { return GetParam() ? torch::kCUDA : torch::kCPU; }
  void SetUp() override {
    if (GetParam() && !torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  }
};

TEST_P(GradScalerDeviceTest, ScriptedPatternMatchesReference) {
  GradScaler::Options options;
  options.init_scale = 1024.0;
  options.growth_interval = 3;
  RunScriptedPattern(options, kPattern, device());
}

TEST_P(GradScalerDeviceTest, ScriptedPatternWithInexactFactorsMatchesReference) {
  // Factors that are not powers of two make every product round to float.
  GradScaler::Options options;
  options.init_scale = 1000.3;
  options.growth_factor = 1.7;
  options.backoff_factor = 0.3;
  options.growth_interval = 3;
  RunScriptedPattern(options, kPattern, device());
}

TEST_P(GradScalerDeviceTest, GrowthPastFloatMaxIsRefusedAndResetsTracker) {
  GradScaler::Options options;
  options.init_scale = FLT_MAX;
  options.growth_factor = 2.0;
  options.growth_interval = 1;
  auto scaler = MakeScaler(options);
  ASSERT_NE(scaler, nullptr);
  Params params(device());
  for (int i = 0; i < 3; ++i) {
    scaler->Scale(torch::ones({}, torch::TensorOptions().device(device())));
    params.SetScaledGrads(1.0f);
    EXPECT_FALSE(scaler->Step(*params.sgd).skipped);
    scaler->Update();
    EXPECT_EQ(scaler->scale(), static_cast<double>(FLT_MAX));
    EXPECT_EQ(scaler->growth_tracker(), 0);
  }
  // Backoff still works from there.
  scaler->Scale(torch::ones({}, torch::TensorOptions().device(device())));
  params.SetScaledGrads(1.0f, std::numeric_limits<float>::infinity(), true);
  EXPECT_TRUE(scaler->Step(*params.sgd).skipped);
  scaler->Update();
  EXPECT_EQ(scaler->scale(), static_cast<double>(static_cast<float>(double{FLT_MAX} * 0.5)));
}

INSTANTIATE_TEST_SUITE_P(Devices, GradScalerDeviceTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Cuda" : "Cpu";
                         });

TEST(GradScalerTest, GrowsExactlyAtGrowthInterval) {
  GradScaler::Options options;
  options.init_scale = 8.0;
  options.growth_interval = 3;
  auto scaler = MakeScaler(options);
  ASSERT_NE(scaler, nullptr);
  Params params;
  const std::vector<std::pair<double, int64_t>> expected = {{8.0, 1},  {8.0, 2},  {16.0, 0},
                                                            {16.0, 1}, {16.0, 2}, {32.0, 0}};
  for (const auto& [scale, tracker] : expected) {
    scaler->Scale(torch::ones({}));
    params.SetScaledGrads(static_cast<float>(scaler->scale()));
    EXPECT_FALSE(scaler->Step(*params.sgd).skipped);
    scaler->Update();
    EXPECT_EQ(scaler->scale(), scale);
    EXPECT_EQ(scaler->growth_tracker(), tracker);
  }
}

TEST(GradScalerTest, BackoffResetsTracker) {
  GradScaler::Options options;
  options.init_scale = 64.0;
  options.growth_interval = 3;
  auto scaler = MakeScaler(options);
  ASSERT_NE(scaler, nullptr);
  Params params;
  auto run = [&](bool inf) {
    scaler->Scale(torch::ones({}));
    params.SetScaledGrads(static_cast<float>(scaler->scale()),
                          std::numeric_limits<float>::infinity(), inf);
    EXPECT_EQ(scaler->Step(*params.sgd).skipped, inf);
    scaler->Update();
  };
  run(false);
  run(false);
  EXPECT_EQ(scaler->growth_tracker(), 2);
  run(true);
  EXPECT_EQ(scaler->scale(), 32.0);
  EXPECT_EQ(scaler->growth_tracker(), 0);
  // Two clean steps after the backoff are not enough to grow: the count restarted.
  run(false);
  run(false);
  EXPECT_EQ(scaler->scale(), 32.0);
  EXPECT_EQ(scaler->growth_tracker(), 2);
  run(false);
  EXPECT_EQ(scaler->scale(), 64.0);
  EXPECT_EQ(scaler->growth_tracker(), 0);
  EXPECT_EQ(scaler->skipped_steps(), 1);
}

TEST(GradScalerTest, UnscaleMultipliesByDoubleReciprocalRoundedToFloat) {
  for (double init : {3.0, 1000.3, 65536.0, 7.1e-3, 1.0e30}) {
    SCOPED_TRACE(init);
    GradScaler::Options options;
    options.init_scale = init;
    auto scaler = MakeScaler(options);
    ASSERT_NE(scaler, nullptr);
    Params params;
    scaler->Scale(torch::ones({}));
    const float scale = static_cast<float>(init);
    const float inv = static_cast<float>(1.0 / static_cast<double>(scale));
    params.w.mutable_grad() = torch::tensor({1.0f, -7.5f, 123.456f});
    params.b.mutable_grad() = torch::tensor({{0.1f, 2.0f}, {-3.0f, 1e-20f}});
    const std::vector<float> w_raw = Values(params.w.grad());
    const std::vector<float> b_raw = Values(params.b.grad());
    scaler->Unscale(*params.sgd);
    const std::vector<float> w = Values(params.w.grad());
    const std::vector<float> b = Values(params.b.grad());
    for (size_t i = 0; i < w.size(); ++i) EXPECT_EQ(w[i], w_raw[i] * inv);
    for (size_t i = 0; i < b.size(); ++i) EXPECT_EQ(b[i], b_raw[i] * inv);
  }
}

TEST(GradScalerTest, UnscaleMultipliesEvenWhenAGradientIsNonFinite) {
  GradScaler::Options options;
  options.init_scale = 4.0;
  auto scaler = MakeScaler(options);
  ASSERT_NE(scaler, nullptr);
  Params params;
  scaler->Scale(torch::ones({}));
  params.w.mutable_grad() = torch::tensor({8.0f, std::numeric_limits<float>::quiet_NaN(), 2.0f});
  params.b.mutable_grad() = torch::tensor({{4.0f, 12.0f}, {-4.0f, 0.0f}});
  const std::vector<float> w_before = Values(params.w);
  EXPECT_TRUE(scaler->Step(*params.sgd).skipped);
  const std::vector<float> w_grad = Values(params.w.grad());
  EXPECT_EQ(w_grad[0], 2.0f);
  EXPECT_TRUE(std::isnan(w_grad[1]));
  EXPECT_EQ(w_grad[2], 0.5f);
  EXPECT_EQ(Values(params.b.grad()), (std::vector<float>{1.0f, 3.0f, -1.0f, 0.0f}));
  EXPECT_EQ(Values(params.w), w_before);
}

TEST(GradScalerTest, FiniteCheckSeesGradientBeforeUnscaling) {
  // With a scale below 1 the unscaled value overflows, but the gradient itself
  // was finite: the kernel checks the input, so the step is not skipped.
  GradScaler::Options options;
  options.init_scale = 0.5;
  auto scaler = MakeScaler(options);
  ASSERT_NE(scaler, nullptr);
  Params params;
  scaler->Scale(torch::ones({}));
  params.w.mutable_grad() = torch::tensor({FLT_MAX, 1.0f, 1.0f});
  params.b.mutable_grad() = torch::zeros({2, 2});
  scaler->Unscale(*params.sgd);
  EXPECT_TRUE(std::isinf(Values(params.w.grad())[0]));
  EXPECT_FALSE(scaler->Step(*params.sgd).skipped);
  EXPECT_EQ(scaler->skipped_steps(), 0);
}

TEST(GradScalerTest, UnscaleTwiceInOneStepDividesOnce) {
  GradScaler::Options options;
  options.init_scale = 16.0;
  auto scaler = MakeScaler(options);
  ASSERT_NE(scaler, nullptr);
  Params params;
  scaler->Scale(torch::ones({}));
  params.w.mutable_grad() = torch::tensor({32.0f, 16.0f, -64.0f});
  params.b.mutable_grad() = torch::full({2, 2}, 16.0f);
  scaler->Unscale(*params.sgd);
  scaler->Unscale(*params.sgd);
  EXPECT_EQ(Values(params.w.grad()), (std::vector<float>{2.0f, 1.0f, -4.0f}));
  // Step must not unscale a third time either.
  const std::vector<float> w_before = Values(params.w);
  EXPECT_FALSE(scaler->Step(*params.sgd).skipped);
  EXPECT_EQ(Values(params.w.grad()), (std::vector<float>{2.0f, 1.0f, -4.0f}));
  EXPECT_FLOAT_EQ(Values(params.w)[0], w_before[0] - 0.2f);
  scaler->Update();

  // The next step unscales again.
  params.w.mutable_grad() = torch::tensor({32.0f, 16.0f, -64.0f});
  scaler->Unscale(*params.sgd);
  EXPECT_EQ(Values(params.w.grad()), (std::vector<float>{2.0f, 1.0f, -4.0f}));
}

TEST(GradScalerTest, FoundInfDoesNotLeakIntoNextStep) {
  GradScaler::Options options;
  options.init_scale = 2.0;
  auto scaler = MakeScaler(options);
  ASSERT_NE(scaler, nullptr);
  Params params;
  scaler->Scale(torch::ones({}));
  params.SetScaledGrads(2.0f, std::numeric_limits<float>::infinity(), true);
  EXPECT_TRUE(scaler->Step(*params.sgd).skipped);
  scaler->Update();
  scaler->Scale(torch::ones({}));
  params.SetScaledGrads(1.0f);
  EXPECT_FALSE(scaler->Step(*params.sgd).skipped);
  EXPECT_EQ(scaler->skipped_steps(), 1);
}

TEST(GradScalerTest, TheFoundInfReducerDecidesTheSkipOncePerStep) {
  // Data parallel: another rank's overflow, reported by the reducer, skips
  // this rank's step and backs its scale off although its gradients are
  // finite; unscaling before the step (clipping) does not reduce twice.
  GradScaler::Options options;
  options.init_scale = 8.0;
  auto scaler = MakeScaler(options);
  ASSERT_NE(scaler, nullptr);
  int calls = 0;
  bool other_rank_overflowed = true;
  scaler->set_found_inf_reducer([&](const torch::Tensor& found_inf) {
    ++calls;
    EXPECT_EQ(found_inf.item<float>(), 0.0f);  // this rank's own gradients are finite
    if (other_rank_overflowed) found_inf.fill_(1.0f);
  });
  Params params;
  scaler->Scale(torch::ones({}));
  params.SetScaledGrads(8.0f);
  const std::vector<float> w_before = Values(params.w);
  scaler->Unscale(*params.sgd);
  EXPECT_TRUE(scaler->Step(*params.sgd).skipped);
  scaler->Update();
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(Values(params.w), w_before);
  EXPECT_EQ(scaler->scale(), 4.0);
  EXPECT_EQ(scaler->skipped_steps(), 1);

  other_rank_overflowed = false;
  scaler->Scale(torch::ones({}));
  params.SetScaledGrads(4.0f);
  EXPECT_FALSE(scaler->Step(*params.sgd).skipped);
  scaler->Update();
  EXPECT_EQ(calls, 2);
  EXPECT_NE(Values(params.w), w_before);
}

TEST(GradScalerTest, SkipsParametersWithoutGradients) {
  GradScaler::Options options;
  options.init_scale = 2.0;
  auto scaler = MakeScaler(options);
  ASSERT_NE(scaler, nullptr);
  Params params;
  scaler->Scale(torch::ones({}));
  params.w.mutable_grad() = torch::tensor({2.0f, 4.0f, 6.0f});
  const std::vector<float> b_before = Values(params.b);
  EXPECT_FALSE(scaler->Step(*params.sgd).skipped);
  EXPECT_EQ(Values(params.w.grad()), (std::vector<float>{1.0f, 2.0f, 3.0f}));
  EXPECT_FALSE(params.b.grad().defined());
  EXPECT_EQ(Values(params.b), b_before);
}

TEST(GradScalerTest, HandlesScalarAndMixedDtypeGradients) {
  GradScaler::Options options;
  options.init_scale = 3.0;
  auto scaler = MakeScaler(options);
  ASSERT_NE(scaler, nullptr);
  torch::Tensor scalar = torch::tensor(1.0f).set_requires_grad(true);
  torch::Tensor dbl = torch::tensor({1.0, 2.0}, torch::kFloat64).set_requires_grad(true);
  torch::Tensor bf16 = torch::ones({3}, torch::kBFloat16).set_requires_grad(true);
  torch::optim::SGD sgd({scalar, dbl, bf16}, torch::optim::SGDOptions(0.5));
  scaler->Scale(torch::ones({}));
  scalar.mutable_grad() = torch::tensor(6.0f);
  dbl.mutable_grad() = torch::tensor({0.1, 9.0}, torch::kFloat64);
  bf16.mutable_grad() = torch::tensor({3.0f, 1.0f, 100.0f}).to(torch::kBFloat16);
  scaler->Unscale(sgd);

  const float inv = static_cast<float>(1.0 / 3.0);
  EXPECT_EQ(scalar.grad().dim(), 0);
  EXPECT_EQ(scalar.grad().item<float>(), 6.0f * inv);
  // fp64 gradients are multiplied in double by the float inv_scale.
  EXPECT_EQ(dbl.grad()[0].item<double>(), 0.1 * static_cast<double>(inv));
  EXPECT_EQ(dbl.grad()[1].item<double>(), 9.0 * static_cast<double>(inv));
  // bf16 gradients are multiplied in float, then rounded to bf16.
  const torch::Tensor bf_expected =
      (torch::tensor({3.0f, 1.0f, 100.0f}).to(torch::kBFloat16).to(torch::kFloat32) * inv)
          .to(torch::kBFloat16);
  EXPECT_TRUE(torch::equal(bf16.grad(), bf_expected));

  scaler->Update();

  // A non-finite bf16 gradient is caught like a float one.
  bf16.mutable_grad()[1] = std::numeric_limits<float>::infinity();
  EXPECT_TRUE(scaler->Step(sgd).skipped);
}

TEST(GradScalerTest, DisabledPassesThrough) {
  GradScaler::Options options;
  options.enabled = false;
  options.init_scale = 1024.0;
  auto scaler = MakeScaler(options);
  ASSERT_NE(scaler, nullptr);
  EXPECT_FALSE(scaler->enabled());
  Params params;
  const torch::Tensor loss = torch::tensor(3.5f);
  const torch::Tensor scaled = scaler->Scale(loss);
  EXPECT_TRUE(scaled.is_same(loss));
  EXPECT_EQ(scaled.item<float>(), 3.5f);

  // Even an inf gradient is stepped on, unscaled, and not counted.
  params.w.mutable_grad() = torch::tensor({1.0f, 2.0f, 4.0f});
  params.b.mutable_grad() = torch::tensor({{1.0f, 1.0f}, {1.0f, 1.0f}});
  scaler->Unscale(*params.sgd);
  EXPECT_EQ(Values(params.w.grad()), (std::vector<float>{1.0f, 2.0f, 4.0f}));
  const std::vector<float> w_before = Values(params.w);
  EXPECT_FALSE(scaler->Step(*params.sgd).skipped);
  EXPECT_NE(Values(params.w), w_before);
  params.w.mutable_grad() = torch::tensor({std::numeric_limits<float>::infinity(), 0.0f, 0.0f});
  EXPECT_FALSE(scaler->Step(*params.sgd).skipped);
  EXPECT_TRUE(std::isinf(Values(params.w)[0]));
  scaler->Update();
  EXPECT_EQ(scaler->skipped_steps(), 0);
  EXPECT_EQ(scaler->scale(), 1024.0);
  EXPECT_EQ(scaler->growth_tracker(), 0);
}

TEST(GradScalerTest, UpdateWithoutInfCheckLeavesScale) {
  GradScaler::Options options;
  options.init_scale = 8.0;
  options.growth_interval = 1;
  auto scaler = MakeScaler(options);
  ASSERT_NE(scaler, nullptr);
  scaler->Scale(torch::ones({}));
  scaler->Update();
  EXPECT_EQ(scaler->scale(), 8.0);
  EXPECT_EQ(scaler->growth_tracker(), 0);
}

TEST(GradScalerTest, SaveLoadRoundTrip) {
  GradScaler::Options options;
  options.init_scale = 1000.3;
  options.growth_factor = 1.7;
  options.backoff_factor = 0.3;
  options.growth_interval = 4;
  auto scaler = MakeScaler(options);
  ASSERT_NE(scaler, nullptr);
  Params params;
  // clean, inf, clean, clean: scale backed off once, tracker at 2, one skip.
  for (bool inf : {false, true, false, false}) {
    scaler->Scale(torch::ones({}));
    params.SetScaledGrads(1.0f, std::numeric_limits<float>::infinity(), inf);
    scaler->Step(*params.sgd);
    scaler->Update();
  }
  const double saved_scale = scaler->scale();
  ASSERT_EQ(saved_scale, static_cast<double>(static_cast<float>(
                             static_cast<double>(static_cast<float>(1000.3)) * 0.3)));
  ASSERT_EQ(scaler->growth_tracker(), 2);
  ASSERT_EQ(scaler->skipped_steps(), 1);

  std::stringstream stream;
  {
    torch::serialize::OutputArchive archive;
    scaler->Save(archive);
    archive.save_to(stream);
  }

  // A fresh scaler with other options takes the checkpoint's values.
  auto restored = MakeScaler({});
  ASSERT_NE(restored, nullptr);
  {
    torch::serialize::InputArchive archive;
    archive.load_from(stream);
    restored->Load(archive);
  }
  EXPECT_EQ(restored->scale(), saved_scale);
  EXPECT_EQ(restored->growth_tracker(), 2);
  EXPECT_EQ(restored->skipped_steps(), 1);
  EXPECT_EQ(restored->options().growth_factor, 1.7);
  EXPECT_EQ(restored->options().backoff_factor, 0.3);
  EXPECT_EQ(restored->options().growth_interval, 4);

  // Both continue identically: two more clean steps reach the interval.
  Params params2;
  for (int i = 0; i < 3; ++i) {
    for (GradScaler* s : {scaler.get(), restored.get()}) {
      Params& p = s == scaler.get() ? params : params2;
      EXPECT_EQ(s->Scale(torch::ones({})).item<float>(), static_cast<float>(s->scale()));
      p.SetScaledGrads(1.0f);
      EXPECT_FALSE(s->Step(*p.sgd).skipped);
      s->Update();
    }
    EXPECT_EQ(restored->scale(), scaler->scale());
    EXPECT_EQ(restored->growth_tracker(), scaler->growth_tracker());
  }
  EXPECT_EQ(restored->scale(), static_cast<double>(static_cast<float>(saved_scale * 1.7)));
  EXPECT_EQ(restored->growth_tracker(), 1);
}

TEST(GradScalerTest, LoadAfterLazyInitOverwritesLiveState) {
  auto source = MakeScaler({});
  ASSERT_NE(source, nullptr);
  GradScaler::Options options;
  options.init_scale = 4.0;
  auto scaler = MakeScaler(options);
  ASSERT_NE(scaler, nullptr);
  scaler->Scale(torch::ones({}));
  std::stringstream stream;
  {
    torch::serialize::OutputArchive archive;
    source->Save(archive);
    archive.save_to(stream);
  }
  torch::serialize::InputArchive archive;
  archive.load_from(stream);
  scaler->Load(archive);
  EXPECT_EQ(scaler->scale(), 65536.0);
  EXPECT_EQ(scaler->Scale(torch::ones({})).item<float>(), 65536.0f);
}

TEST(GradScalerTest, LoadFromDisabledScalerStartsFresh) {
  GradScaler::Options disabled;
  disabled.enabled = false;
  auto source = MakeScaler(disabled);
  ASSERT_NE(source, nullptr);
  std::stringstream stream;
  {
    torch::serialize::OutputArchive archive;
    source->Save(archive);
    archive.save_to(stream);
  }
  GradScaler::Options options;
  options.init_scale = 4.0;
  auto scaler = MakeScaler(options);
  ASSERT_NE(scaler, nullptr);
  torch::serialize::InputArchive archive;
  archive.load_from(stream);
  scaler->Load(archive);
  EXPECT_EQ(scaler->scale(), 4.0);
  EXPECT_EQ(scaler->growth_tracker(), 0);
  EXPECT_EQ(scaler->Scale(torch::ones({})).item<float>(), 4.0f);
}

TEST(GradScalerTest, ScaledBackwardThenStepMatchesPlainSgd) {
  torch::manual_seed(7);
  torch::nn::Linear scaled_model(4, 3);
  torch::nn::Linear plain_model(4, 3);
  {
    torch::NoGradGuard no_grad;
    plain_model->weight.copy_(scaled_model->weight);
    plain_model->bias.copy_(scaled_model->bias);
  }
  torch::optim::SGD scaled_sgd(scaled_model->parameters(), torch::optim::SGDOptions(0.05));
  torch::optim::SGD plain_sgd(plain_model->parameters(), torch::optim::SGDOptions(0.05));
  GradScaler::Options options;
  options.init_scale = 1000.3;
  auto scaler = MakeScaler(options);
  ASSERT_NE(scaler, nullptr);

  const torch::Tensor initial_weight = scaled_model->weight.detach().clone();
  const torch::Tensor x = torch::randn({8, 4});
  const torch::Tensor y = torch::randn({8, 3});
  for (int step = 0; step < 3; ++step) {
    SCOPED_TRACE(step);
    const float scale = static_cast<float>(scaler->scale());
    torch::Tensor loss = torch::mse_loss(scaled_model(x), y);
    torch::Tensor scaled = scaler->Scale(loss);
    EXPECT_EQ(scaled.item<float>(), loss.item<float>() * scale);
    scaled_sgd.zero_grad();
    scaled.backward();
    EXPECT_FALSE(scaler->Step(scaled_sgd).skipped);
    scaler->Update();

    plain_sgd.zero_grad();
    torch::mse_loss(plain_model(x), y).backward();
    plain_sgd.step();

    EXPECT_TRUE(torch::allclose(scaled_model->weight, plain_model->weight, 1e-5, 1e-6));
    EXPECT_TRUE(torch::allclose(scaled_model->bias, plain_model->bias, 1e-5, 1e-6));
  }
  // The comparison is not vacuous: the weights did move.
  EXPECT_FALSE(torch::allclose(scaled_model->weight, initial_weight));
}

}  // namespace
}  // namespace mantissa

namespace mantissa {
namespace {

// The fused Adam kernels' contract on the CPU, as plain tensor ops (nothing
// read back): SGD on the gradients divided by grad_scale (when given),
// leaving every parameter alone where found_inf is set.
class DeviceScaledSgd : public torch::optim::SGD, public DeviceScaledOptimizer {
 public:
  using torch::optim::SGD::SGD;

  void StepScaled(const torch::Tensor& grad_scale, const torch::Tensor& found_inf) override {
    torch::NoGradGuard no_grad;
    ++calls;
    got_grad_scale = grad_scale.defined();
    for (torch::Tensor& p : param_groups()[0].params()) {
      const torch::Tensor grad = grad_scale.defined() ? p.grad() / grad_scale : p.grad();
      const double lr = param_groups()[0].options().get_lr();
      p.copy_(torch::where(found_inf != 0, p, p - lr * grad));
    }
  }

  int calls = 0;
  bool got_grad_scale = false;
};

struct DeviceScaledParams {
  torch::Tensor w = torch::tensor({0.5f, -1.25f, 2.0f}).set_requires_grad(true);
  torch::Tensor b = torch::tensor({{1.0f, 2.0f}, {3.0f, -4.0f}}).set_requires_grad(true);
  DeviceScaledSgd sgd{std::vector<torch::Tensor>{w, b}, torch::optim::SGDOptions(0.1)};

  void SetGrads(float scale, bool poisoned) {
    w.mutable_grad() = torch::tensor({0.75f, -3.0f, 1.5f}) * scale;
    b.mutable_grad() = torch::tensor({{0.25f, 0.5f}, {-2.0f, 1.0f}}) * scale;
    if (poisoned) b.mutable_grad()[1][0] = std::numeric_limits<float>::infinity();
  }
};

TEST(GradScalerDeviceScaledTest, TheOptimizerUnscalesAndSkipsAndTheSkipIsCountedLazily) {
  auto scaler = MakeScaler({.init_scale = 1024.0});
  ASSERT_NE(scaler, nullptr);
  DeviceScaledParams params;

  // A clean step: the scaler only checks (the gradients stay scaled) and
  // hands the scale over; the optimizer unscales.
  scaler->Scale(torch::ones({}));
  params.SetGrads(1024.0f, /*poisoned=*/false);
  const std::vector<float> w_before = Values(params.w);
  OptimizerStepResult result = scaler->Step(params.sgd);
  EXPECT_FALSE(result.skip_known);
  EXPECT_FALSE(result.skipped);
  EXPECT_EQ(params.sgd.calls, 1);
  EXPECT_TRUE(params.sgd.got_grad_scale);
  EXPECT_EQ(Values(params.w.grad()), (std::vector<float>{768.0f, -3072.0f, 1536.0f}));
  EXPECT_FLOAT_EQ(Values(params.w)[1], w_before[1] + 0.1f * 3.0f);
  scaler->Update();
  EXPECT_EQ(scaler->skipped_steps(), 0);
  EXPECT_EQ(scaler->scale(), 1024.0);

  // An inf gradient: nothing moves, the device count and the backoff see it.
  scaler->Scale(torch::ones({}));
  params.SetGrads(1024.0f, /*poisoned=*/true);
  const std::vector<float> w_kept = Values(params.w);
  const std::vector<float> b_kept = Values(params.b);
  result = scaler->Step(params.sgd);
  EXPECT_FALSE(result.skip_known);
  EXPECT_FALSE(result.skipped);  // not known here
  EXPECT_EQ(Values(params.w), w_kept);
  EXPECT_EQ(Values(params.b), b_kept);
  scaler->Update();
  EXPECT_EQ(scaler->skipped_steps(), 1);
  EXPECT_EQ(scaler->scale(), 512.0);

  // Clipping unscales first: then the optimizer gets no scale to divide by.
  scaler->Scale(torch::ones({}));
  params.SetGrads(512.0f, /*poisoned=*/false);
  scaler->Unscale(params.sgd);
  EXPECT_EQ(Values(params.w.grad()), (std::vector<float>{0.75f, -3.0f, 1.5f}));
  const std::vector<float> w_clipped_before = Values(params.w);
  scaler->Step(params.sgd);
  EXPECT_FALSE(params.sgd.got_grad_scale);
  EXPECT_FLOAT_EQ(Values(params.w)[0], w_clipped_before[0] - 0.1f * 0.75f);
  scaler->Update();
  EXPECT_EQ(scaler->skipped_steps(), 1);
  EXPECT_EQ(scaler->growth_tracker(), 1);

  // Checkpoints carry the skips counted on the device.
  torch::serialize::OutputArchive out;
  scaler->Save(out);
  std::stringstream stream;
  out.save_to(stream);
  auto restored = MakeScaler({.init_scale = 1024.0});
  ASSERT_NE(restored, nullptr);
  torch::serialize::InputArchive in;
  in.load_from(stream);
  restored->Load(in);
  EXPECT_EQ(restored->skipped_steps(), 1);
  EXPECT_EQ(restored->scale(), 512.0);
}

TEST(GradScalerDeviceScaledTest, ThePluginPassesOnThatTheSkipIsUnknown) {
  Fp32Precision plugin;
  auto scaler = GradScaler::Create({.init_scale = 8.0});
  ASSERT_OK(scaler);
  plugin.set_grad_scaler(std::move(*scaler));
  DeviceScaledParams params;
  plugin.grad_scaler()->Scale(torch::ones({}));
  params.SetGrads(8.0f, /*poisoned=*/true);
  const OptimizerStepResult result = plugin.OptimizerStep(params.sgd);
  EXPECT_FALSE(result.skip_known);
  EXPECT_EQ(plugin.grad_scaler()->skipped_steps(), 1);
  EXPECT_EQ(plugin.grad_scaler()->scale(), 4.0);  // updated in the same hook
}

TEST(GradScalerTest, ADiscardedStepIsUnscaledAgain) {
  auto scaler = MakeScaler({.init_scale = 4.0});
  ASSERT_NE(scaler, nullptr);
  Params params;
  scaler->Scale(torch::ones({}));
  params.SetScaledGrads(4.0f);
  scaler->Unscale(*params.sgd);
  EXPECT_EQ(Values(params.w.grad()), (std::vector<float>{0.75f, -3.0f, 1.5f}));
  // The step is abandoned (say a failed graph capture) and run again.
  scaler->DiscardStep();
  params.SetScaledGrads(4.0f);
  scaler->Unscale(*params.sgd);
  EXPECT_EQ(Values(params.w.grad()), (std::vector<float>{0.75f, -3.0f, 1.5f}));
  // Without the discard the second Unscale would have done nothing.
  params.SetScaledGrads(4.0f);
  scaler->Unscale(*params.sgd);
  EXPECT_EQ(Values(params.w.grad()), (std::vector<float>{3.0f, -12.0f, 6.0f}));
}

}  // namespace
}  // namespace mantissa
