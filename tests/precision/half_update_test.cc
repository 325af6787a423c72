// JobSpec.bf16_update's rounding of the optimizer's update into half
// weights: what nearest loses and kahan/stochastic keep, that stochastic
// rounding is unbiased and seeded, that weight decay and the grad scaler's
// skips act as in the plain optimizers, and that the state survives a
// checkpoint.

#include "server/precision/half_update.h"

#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <limits>
#include <sstream>
#include <stdexcept>

#include "server/precision/half_precision.h"
#include "server/precision/precision_registry.h"
#include "tests/testing/status_matchers.h"

namespace mantissa {
namespace {

using ::testing::HasSubstr;
using testing::StatusIs;

constexpr UpdateRounding kNearest = UpdateRounding::kNearest;
constexpr UpdateRounding kStochastic = UpdateRounding::kStochastic;
constexpr UpdateRounding kKahan = UpdateRounding::kKahan;

std::unique_ptr<PrecisionPlugin> Plugin(torch::Dtype dtype, UpdateRounding rounding,
                                        uint64_t seed = 7) {
  auto plugin = PrecisionRegistry::Create(dtype == torch::kBFloat16 ? "bf16-true" : "16-true",
                                          torch::kCPU, DelayedScaling(), {rounding, seed});
  EXPECT_OK(plugin);
  return plugin.ok() ? *std::move(plugin) : nullptr;
}

const HalfUpdate& UpdateOf(const PrecisionPlugin& plugin) {
  return dynamic_cast<const HalfPrecision&>(plugin).update();
}

torch::Tensor Float(const torch::Tensor& t) { return t.to(torch::kFloat32); }

// The distance from |x| to the next larger value of `dtype` (x float32).
torch::Tensor Ulp(const torch::Tensor& x, torch::Dtype dtype) {
  const int mantissa = dtype == torch::kBFloat16 ? 7 : 10;
  const torch::Tensor exponent = torch::floor(torch::log2(x.abs().clamp_min(1e-30)));
  return torch::pow(2.0, exponent - mantissa);
}

struct DtypeCase {
  torch::Dtype dtype;
  const char* name;
};

class HalfUpdateDtypeTest : public ::testing::TestWithParam<DtypeCase> {};

// A weight of 1.0 and an update of 1e-4, 1,000 times: 1.1 in exact
// arithmetic. Nearest rounds every update away (half a unit in the last
// place of 1.0 is 2^-9 in bfloat16, 2^-11 in float16).
double TrainOnes(torch::Dtype dtype, UpdateRounding rounding, int64_t numel, double* compensated) {
  torch::Tensor weight = torch::ones({numel}, torch::TensorOptions().dtype(dtype));
  weight.set_requires_grad(true);
  torch::optim::SGD sgd({weight}, torch::optim::SGDOptions(1e-4));
  std::unique_ptr<PrecisionPlugin> plugin = Plugin(dtype, rounding);
  for (int i = 0; i < 1000; ++i) {
    weight.mutable_grad() = torch::full({numel}, -1.0, torch::TensorOptions().dtype(dtype));
    EXPECT_FALSE(plugin->OptimizerStep(sgd).skipped);
  }
  EXPECT_EQ(weight.scalar_type(), dtype);
  if (compensated != nullptr) {
    const auto& c = UpdateOf(*plugin).compensation();
    torch::Tensor sum = Float(weight);
    if (!c.empty()) sum = sum + Float(c[0]);
    *compensated = sum.mean().item<double>();
  }
  return Float(weight).mean().item<double>();
}

TEST_P(HalfUpdateDtypeTest, NearestLosesSmallUpdatesThatKahanAndStochasticKeep) {
  const torch::Dtype dtype = GetParam().dtype;
  EXPECT_EQ(TrainOnes(dtype, kNearest, 1, nullptr), 1.0);
  double compensated = 0;
  const double kahan = TrainOnes(dtype, kKahan, 1, &compensated);
  EXPECT_LT(std::abs(kahan - 1.1), 0.01) << kahan;
  // The weight plus its compensation: closer still, but for the rounding of
  // compensation + update in the buffer's own dtype at every step.
  EXPECT_NEAR(compensated, 1.1, 0.005);
  std::cout << GetParam().name << ": kahan " << kahan << " (with compensation " << compensated
            << ")";
  // Stochastic: each element is 1.1 in expectation; the mean of 4,096
  // elements has a standard error near 5e-4.
  const double stochastic = TrainOnes(dtype, kStochastic, 4096, nullptr);
  EXPECT_LT(std::abs(stochastic - 1.1), 0.005) << stochastic;
  std::cout << ", stochastic mean " << stochastic << "\n";
}

// Values strictly between two neighbours of `dtype`, both signs: the mean of
// many draws is the value within a few standard errors, and every draw is one
// of the two neighbours.
TEST_P(HalfUpdateDtypeTest, StochasticRoundIsUnbiasedBetweenTheTwoNeighbours) {
  const torch::Dtype dtype = GetParam().dtype;
  constexpr int64_t kDraws = 200000;
  at::Generator generator = at::detail::createCPUGenerator(3);
  for (const double base : {1.0, -3.0, 0.15625, -1000.0}) {
    for (const double fraction : {0.1, 0.5, 0.93}) {
      const double ulp = Ulp(torch::tensor({base}), dtype).item<double>();
      const double lo = base, hi = base + (base > 0 ? 1 : -1) * ulp;
      // As float32 holds it.
      const double x = static_cast<float>(base + (hi - lo) * fraction);
      const torch::Tensor input = torch::full({kDraws}, x, torch::kFloat32);
      const torch::Tensor out = Float(StochasticRound(input, dtype, generator));
      EXPECT_TRUE(torch::logical_or(out == lo, out == hi).all().item<bool>()) << x;
      const double p = std::abs(x - lo) / ulp;
      const double standard_error = ulp * std::sqrt(p * (1 - p) / kDraws);
      EXPECT_NEAR(out.mean().item<double>(), x, 5 * standard_error) << x;
    }
  }
}

// float16's subnormals (below 2^-14, 2^-24 apart) and the values below its
// smallest subnormal: rounded at their own spacing, not to nearest.
TEST(HalfUpdateTest, StochasticRoundIsUnbiasedInFloat16sSubnormalRange) {
  constexpr int64_t kDraws = 200000;
  const double ulp = std::ldexp(1.0, -24);
  at::Generator generator = at::detail::createCPUGenerator(4);
  for (const double sign : {1.0, -1.0}) {
    for (const double units : {0.0, 1.0, 5.0, 700.0, 1023.0}) {
      for (const double fraction : {0.1, 0.5, 0.93}) {
        const double lo = sign * units * ulp, hi = sign * (units + 1) * ulp;
        const double x = static_cast<float>(lo + (hi - lo) * fraction);
        const torch::Tensor input = torch::full({kDraws}, x, torch::kFloat32);
        const torch::Tensor out = Float(StochasticRound(input, torch::kFloat16, generator));
        EXPECT_TRUE(torch::logical_or(out == lo, out == hi).all().item<bool>()) << x;
        const double standard_error = ulp * std::sqrt(fraction * (1 - fraction) / kDraws);
        EXPECT_NEAR(out.mean().item<double>(), x, 5 * standard_error) << x;
      }
    }
  }
}

TEST_P(HalfUpdateDtypeTest, StochasticRoundReturnsANeighbourAndIsReproducibleBySeed) {
  const torch::Dtype dtype = GetParam().dtype;
  // Within float16's normal range.
  const torch::Tensor x = torch::randn({4096}) * 100;
  const torch::Tensor magnitude = x.abs().clamp_min(1e-3);
  const torch::Tensor ulp = Ulp(magnitude, dtype);
  const torch::Tensor down = torch::floor(magnitude / ulp) * ulp;
  at::Generator a = at::detail::createCPUGenerator(5);
  const torch::Tensor out = Float(StochasticRound(x.sign() * magnitude, dtype, a)).abs();
  EXPECT_TRUE(torch::logical_or(out == down, out == down + ulp).all().item<bool>());

  auto draw = [&](uint64_t seed) {
    at::Generator g = at::detail::createCPUGenerator(seed);
    return StochasticRound(x, dtype, g);
  };
  EXPECT_TRUE(torch::equal(draw(11), draw(11)));
  EXPECT_FALSE(torch::equal(draw(11), draw(12)));
  // Infinities pass through.
  const torch::Tensor inf = torch::tensor({std::numeric_limits<float>::infinity()});
  EXPECT_TRUE(std::isinf(Float(StochasticRound(inf, dtype, a)).item<float>()));
}

INSTANTIATE_TEST_SUITE_P(BothHalfDtypes, HalfUpdateDtypeTest,
                         ::testing::Values(DtypeCase{torch::kBFloat16, "bfloat16"},
                                           DtypeCase{torch::kFloat16, "float16"}),
                         [](const ::testing::TestParamInfo<DtypeCase>& info) {
                           return std::string(info.param.name);
                         });

TEST(HalfUpdateTest, ParsesTheNamesAndRefusesOthers) {
  EXPECT_EQ(*ParseUpdateRounding(""), kNearest);
  EXPECT_EQ(*ParseUpdateRounding("nearest"), kNearest);
  EXPECT_EQ(*ParseUpdateRounding("stochastic"), kStochastic);
  EXPECT_EQ(*ParseUpdateRounding("Kahan"), kKahan);
  EXPECT_THAT(ParseUpdateRounding("compensated"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("bf16_update: unknown value 'compensated'; valid values: "
                                 "nearest, stochastic, kahan")));
  EXPECT_EQ(UpdateRoundingNames(), (std::vector<std::string>{"nearest", "stochastic", "kahan"}));
}

// Weight decay and the optimizer's own arithmetic: one step with
// kahan/stochastic (compensation 0) is the plain optimizer's step on float32
// copies, rounded, to within one bfloat16 unit in the last place.
enum class Opt { kSgd, kAdam, kAdamW };

std::unique_ptr<torch::optim::Optimizer> MakeOptimizer(Opt opt, const torch::Tensor& param) {
  using namespace torch::optim;  // NOLINT(build/namespaces)
  switch (opt) {
    case Opt::kSgd:
      return std::make_unique<SGD>(std::vector<torch::Tensor>{param},
                                   SGDOptions(0.05).momentum(0.9).weight_decay(0.5));
    case Opt::kAdam:
      return std::make_unique<Adam>(std::vector<torch::Tensor>{param},
                                    AdamOptions(0.02).weight_decay(0.5));
    case Opt::kAdamW:
      return std::make_unique<AdamW>(std::vector<torch::Tensor>{param},
                                     AdamWOptions(0.02).weight_decay(0.5));
  }
  return nullptr;
}

double WeightDecayOf(torch::optim::Optimizer& optimizer) {
  auto& options = optimizer.param_groups()[0].options();
  if (auto* o = dynamic_cast<torch::optim::SGDOptions*>(&options)) return o->weight_decay();
  if (auto* o = dynamic_cast<torch::optim::AdamOptions*>(&options)) return o->weight_decay();
  return dynamic_cast<torch::optim::AdamWOptions&>(options).weight_decay();
}

TEST(HalfUpdateTest, WeightDecayMatchesThePlainOptimizerInFloat32) {
  torch::manual_seed(1);
  // Weights of magnitude 0.5-2 and steps of a few units in their last place,
  // weight decay a large part of them: a decay applied twice, not at all or
  // coupled instead of decoupled moves the result by several units.
  const torch::Tensor magnitude = torch::rand({512}) * 1.5 + 0.5;
  const torch::Tensor w0 = (magnitude * torch::randn({512}).sign()).to(torch::kBFloat16);
  const torch::Tensor g0 = (torch::randn({512}) * 0.3).to(torch::kBFloat16);
  for (const Opt opt : {Opt::kSgd, Opt::kAdam, Opt::kAdamW}) {
    torch::Tensor reference = Float(w0).set_requires_grad(true);
    auto plain = MakeOptimizer(opt, reference);
    reference.mutable_grad() = Float(g0);
    plain->step();
    const torch::Tensor expected = Float(reference.detach());
    const torch::Tensor ulp = Ulp(expected, torch::kBFloat16);
    for (const UpdateRounding rounding : {kKahan, kStochastic}) {
      SCOPED_TRACE(::testing::Message() << "optimizer " << static_cast<int>(opt) << " rounding "
                                        << UpdateRoundingName(rounding));
      torch::Tensor weight = w0.clone().set_requires_grad(true);
      auto optimizer = MakeOptimizer(opt, weight);
      weight.mutable_grad() = g0.clone();
      std::unique_ptr<PrecisionPlugin> plugin = Plugin(torch::kBFloat16, rounding);
      plugin->OptimizerStep(*optimizer);
      EXPECT_EQ(WeightDecayOf(*optimizer), 0.5);  // put back after the step
      const torch::Tensor got = Float(weight.detach());
      EXPECT_FALSE(torch::equal(got, Float(w0)));
      EXPECT_TRUE(((got - expected).abs() <= ulp).all().item<bool>())
          << ((got - expected).abs() / ulp).max().item<float>() << " units";
      if (rounding == kKahan) {
        // The weight plus its compensation is the float32 step but for the
        // optimizer's bfloat16 arithmetic (a few 2^-9 of the step) and the
        // compensation's rounding: far closer than the weight alone.
        const torch::Tensor exact = got + Float(UpdateOf(*plugin).compensation()[0]);
        // AdamW's decay is added in float32, beside the optimizer's part.
        torch::Tensor step = (expected - Float(w0)).abs();
        if (opt == Opt::kAdamW) step = step + Float(w0).abs() * (0.02 * 0.5);
        EXPECT_TRUE(((exact - expected).abs() <= step * 0.02 + ulp / 256).all().item<bool>())
            << ((exact - expected).abs() / ulp).max().item<float>() << " units";
        EXPECT_LT((exact - expected).abs().sum().item<double>() * 10,
                  (got - expected).abs().sum().item<double>());
      }
    }
  }
}

TEST(HalfUpdateTest, TheOptimizerKeepsItsStateAndGradientsAcrossTheSwap) {
  // set_data keeps the TensorImpl: the optimizer state is keyed by it and
  // stays one entry per parameter; .grad stays where it was.
  torch::Tensor a = torch::randn({8}).to(torch::kBFloat16).set_requires_grad(true);
  torch::Tensor b = torch::randn({3, 4}).to(torch::kBFloat16).set_requires_grad(true);
  torch::optim::Adam adam({a, b}, torch::optim::AdamOptions(0.01));
  std::unique_ptr<PrecisionPlugin> plugin = Plugin(torch::kBFloat16, kKahan);
  const void* a_data = a.data_ptr();
  for (int i = 0; i < 3; ++i) {
    a.mutable_grad() = torch::ones_like(a);
    b.mutable_grad() = torch::ones_like(b);
    const torch::Tensor grad = a.grad();
    plugin->OptimizerStep(adam);
    EXPECT_TRUE(a.grad().is_same(grad));
  }
  EXPECT_EQ(a.data_ptr(), a_data);  // the weight's own storage, updated in place
  EXPECT_EQ(adam.state().size(), 2u);
  for (const auto& entry : adam.state()) {
    EXPECT_EQ(static_cast<torch::optim::AdamParamState&>(*entry.second).step(), 3);
  }
  EXPECT_EQ(UpdateOf(*plugin).steps(), 3);
}

TEST(HalfUpdateTest, AFailingStepPutsTheWeightsAndWeightDecayBack) {
  torch::Tensor weight = torch::randn({8}).to(torch::kBFloat16).set_requires_grad(true);
  const torch::Tensor before = weight.detach().clone();
  const void* data = weight.data_ptr();
  torch::optim::AdamW adamw({weight}, torch::optim::AdamWOptions(0.01).weight_decay(0.1));
  weight.mutable_grad() = torch::ones_like(weight);
  HalfUpdate update({kKahan, 1});
  EXPECT_THROW(update.Step(adamw, nullptr,
                           []() -> OptimizerStepResult { throw std::runtime_error("boom"); }),
               std::runtime_error);
  EXPECT_EQ(weight.data_ptr(), data);
  EXPECT_TRUE(torch::equal(weight.detach(), before));
  EXPECT_EQ(WeightDecayOf(adamw), 0.1);
}

// An optimizer whose skip is decided on the device, as the fused Adam/AdamW
// (CUDA only) do: with AdamWOptions, so the decay is decoupled and must be
// masked by found-inf too.
class DeviceSkippingAdamW : public torch::optim::AdamW, public DeviceScaledOptimizer {
 public:
  using torch::optim::AdamW::AdamW;
  void StepScaled(const torch::Tensor& grad_scale, const torch::Tensor& found_inf) override {
    torch::NoGradGuard no_grad;
    const double lr = param_groups()[0].options().get_lr();
    for (auto& param : param_groups()[0].params()) {
      torch::Tensor grad = Float(param.grad());
      if (grad_scale.defined()) grad = grad / grad_scale;
      const torch::Tensor update =
          torch::where(found_inf.reshape({}) != 0, torch::zeros_like(grad), torch::sign(grad) * lr);
      param.sub_(update.to(param.scalar_type()));
    }
  }
};

struct Snapshot {
  torch::Tensor weight, compensation, momentum;
};

TEST(HalfUpdateTest, AStepTheScalerSkipsChangesNothing) {
  for (const UpdateRounding rounding : {kKahan, kStochastic}) {
    SCOPED_TRACE(UpdateRoundingName(rounding));
    // Decided on the host: SGD with momentum and weight decay.
    torch::Tensor weight = torch::randn({16}).to(torch::kBFloat16).set_requires_grad(true);
    torch::optim::SGD sgd({weight}, torch::optim::SGDOptions(0.01).momentum(0.9).weight_decay(0.1));
    std::unique_ptr<PrecisionPlugin> plugin = Plugin(torch::kBFloat16, rounding);
    plugin->set_grad_scaler(*GradScaler::Create({.init_scale = 1024.0}));
    auto snapshot = [&] {
      const auto& c = UpdateOf(*plugin).compensation();
      const auto& state = sgd.state().begin()->second;
      return Snapshot{weight.detach().clone(), c.empty() ? torch::Tensor() : c[0].clone(),
                      static_cast<torch::optim::SGDParamState&>(*state).momentum_buffer().clone()};
    };
    auto backward = [&](double value) {
      sgd.zero_grad();
      plugin->Backward((Float(weight) * value).sum());
    };
    backward(1.0);
    EXPECT_FALSE(plugin->OptimizerStep(sgd).skipped);
    const Snapshot before = snapshot();
    backward(std::numeric_limits<float>::infinity());
    EXPECT_TRUE(plugin->OptimizerStep(sgd).skipped);
    const Snapshot after = snapshot();
    EXPECT_TRUE(torch::equal(after.weight, before.weight));
    EXPECT_TRUE(torch::equal(after.momentum, before.momentum));
    if (rounding == kKahan) EXPECT_TRUE(torch::equal(after.compensation, before.compensation));
  }
}

TEST(HalfUpdateTest, AStepSkippedOnTheDeviceChangesNothingEvenWithDecoupledDecay) {
  for (const UpdateRounding rounding : {kKahan, kStochastic}) {
    SCOPED_TRACE(UpdateRoundingName(rounding));
    torch::Tensor weight = (torch::rand({64}) + 1).to(torch::kBFloat16).set_requires_grad(true);
    DeviceSkippingAdamW optimizer(std::vector<torch::Tensor>{weight},
                                  torch::optim::AdamWOptions(0.02).weight_decay(0.5));
    std::unique_ptr<PrecisionPlugin> plugin = Plugin(torch::kBFloat16, rounding);
    plugin->set_grad_scaler(*GradScaler::Create({.init_scale = 1024.0}));
    auto backward = [&](double value) {
      optimizer.zero_grad();
      plugin->Backward((Float(weight) * value).sum());
    };
    const torch::Tensor initial = weight.detach().clone();
    backward(1.0);
    EXPECT_FALSE(plugin->OptimizerStep(optimizer).skip_known);
    const torch::Tensor weight_before = weight.detach().clone();
    EXPECT_FALSE(torch::equal(weight_before, initial));
    const auto& c = UpdateOf(*plugin).compensation();
    const torch::Tensor compensation_before = c.empty() ? torch::Tensor() : c[0].clone();
    backward(std::numeric_limits<float>::infinity());
    plugin->OptimizerStep(optimizer);
    EXPECT_EQ(plugin->grad_scaler()->skipped_steps(), 1);
    EXPECT_TRUE(torch::equal(weight.detach(), weight_before));
    if (rounding == kKahan) EXPECT_TRUE(torch::equal(c[0], compensation_before));
    backward(1.0);
    plugin->OptimizerStep(optimizer);
    EXPECT_FALSE(torch::equal(weight.detach(), weight_before));
  }
}

TEST(HalfUpdateTest, StateBytesAndCheckpointsCarryTheCompensation) {
  auto run = [](PrecisionPlugin& plugin, torch::Tensor& weight, torch::optim::SGD& sgd, int steps) {
    for (int i = 0; i < steps; ++i) {
      weight.mutable_grad() = torch::full_like(weight, -1.0 - i);
      plugin.OptimizerStep(sgd);
    }
  };
  auto make_weight = [] { return torch::ones({10, 3}, torch::kBFloat16).set_requires_grad(true); };
  torch::Tensor first_weight = make_weight();
  torch::optim::SGD first_sgd({first_weight}, torch::optim::SGDOptions(1e-3));
  std::unique_ptr<PrecisionPlugin> first = Plugin(torch::kBFloat16, kKahan);
  EXPECT_EQ(first->StateBytes(), 0);
  EXPECT_EQ(first->update_rounding(), "kahan");
  run(*first, first_weight, first_sgd, 3);
  EXPECT_EQ(first->StateBytes(), 30 * 2);
  EXPECT_EQ(Plugin(torch::kBFloat16, kStochastic)->StateBytes(), 0);

  std::stringstream stream;
  {
    torch::serialize::OutputArchive archive;
    first->SaveState(archive);
    archive.save_to(stream);
  }
  torch::Tensor second_weight = first_weight.detach().clone().set_requires_grad(true);
  torch::optim::SGD second_sgd({second_weight}, torch::optim::SGDOptions(1e-3));
  std::unique_ptr<PrecisionPlugin> second = Plugin(torch::kBFloat16, kKahan);
  torch::serialize::InputArchive archive;
  archive.load_from(stream);
  second->LoadState(archive);
  EXPECT_EQ(second->StateBytes(), 30 * 2);
  EXPECT_EQ(UpdateOf(*second).steps(), 3);
  ASSERT_EQ(UpdateOf(*second).compensation().size(), 1u);
  EXPECT_TRUE(
      torch::equal(UpdateOf(*second).compensation()[0], UpdateOf(*first).compensation()[0]));
  EXPECT_FALSE(torch::equal(UpdateOf(*first).compensation()[0], torch::zeros({10, 3})));
  // Both go on alike.
  run(*first, first_weight, first_sgd, 4);
  run(*second, second_weight, second_sgd, 4);
  EXPECT_TRUE(torch::equal(first_weight, second_weight));
  EXPECT_TRUE(
      torch::equal(UpdateOf(*second).compensation()[0], UpdateOf(*first).compensation()[0]));
}

TEST(HalfUpdateTest, StochasticRunsAreReproducibleBySeed) {
  auto run = [](uint64_t seed) {
    torch::Tensor weight = torch::ones({256}, torch::kBFloat16).set_requires_grad(true);
    torch::optim::SGD sgd({weight}, torch::optim::SGDOptions(1e-3));
    std::unique_ptr<PrecisionPlugin> plugin = Plugin(torch::kBFloat16, kStochastic, seed);
    for (int i = 0; i < 5; ++i) {
      weight.mutable_grad() = torch::full_like(weight, -1.0);
      plugin->OptimizerStep(sgd);
    }
    return weight.detach().clone();
  };
  EXPECT_TRUE(torch::equal(run(1), run(1)));
  EXPECT_FALSE(torch::equal(run(1), run(2)));
}

}  // namespace
}  // namespace mantissa
