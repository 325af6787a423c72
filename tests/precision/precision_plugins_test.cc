// Each plugin's effect on the dtypes of parameters, gradients, activations
// and outputs, on a real MLP step.

#include <gtest/gtest.h>

#include "server/models/mlp.h"
#include "server/precision/precision_registry.h"
#include "tests/testing/status_matchers.h"

namespace mantissa {
namespace {

struct Expect {
  std::string precision;
  torch::Dtype parameters;
  torch::Dtype activations;  // the Linear layers' outputs inside forward
};

class PrecisionPluginTest : public ::testing::TestWithParam<Expect> {};

TEST_P(PrecisionPluginTest, DtypesOfAStep) {
  const Expect& e = GetParam();
  auto plugin = PrecisionRegistry::Create(e.precision, torch::kCPU);
  ASSERT_OK(plugin);
  PrecisionPlugin& p = **plugin;
  EXPECT_EQ(p.name(), e.precision);

  std::unique_ptr<Model> model;
  {
    auto init = p.ModuleInitGuard();
    model = Mlp::Build({.hidden = {16}}, {.input_shape = {8}, .num_classes = 4});
  }
  // Created directly in the target dtype, before any conversion.
  for (const torch::Tensor& param : model->Parameters())
    EXPECT_EQ(param.scalar_type(), e.parameters);
  // The default dtype is restored after the init scope.
  EXPECT_EQ(torch::zeros({1}).scalar_type(), torch::kFloat32);
  p.ConvertModule(*model);
  for (const torch::Tensor& param : model->Parameters())
    EXPECT_EQ(param.scalar_type(), e.parameters);

  torch::Tensor x = p.ConvertInput(torch::randn({3, 8}));
  EXPECT_EQ(x.scalar_type(), e.activations);
  EXPECT_EQ(p.ConvertInput(torch::tensor({1, 2}, torch::kInt64)).scalar_type(), torch::kInt64);
  torch::Tensor logits;
  {
    auto guard = p.ForwardGuard();
    logits = model->Forward(x);
  }
  EXPECT_EQ(logits.scalar_type(), e.activations);
  torch::Tensor out = p.ConvertOutput(logits);
  EXPECT_EQ(out.scalar_type(), torch::kFloat32);
  // Autocast is off again outside the forward scope.
  EXPECT_EQ(torch::linear(torch::ones({1, 2}), torch::ones({2, 2})).scalar_type(), torch::kFloat32);

  torch::Tensor loss = torch::nn::functional::cross_entropy(out, torch::tensor({0, 1, 2}));
  torch::optim::SGD sgd(model->Parameters(), torch::optim::SGDOptions(0.1));
  const torch::Tensor before = model->Parameters()[0].clone();
  p.Backward(loss);
  for (const torch::Tensor& param : model->Parameters()) {
    ASSERT_TRUE(param.grad().defined());
    EXPECT_EQ(param.grad().scalar_type(), e.parameters);
  }
  EXPECT_FALSE(p.OptimizerStep(sgd).skipped);
  EXPECT_FALSE(torch::equal(before, model->Parameters()[0]));
  EXPECT_EQ(p.parameter_dtype(), e.parameters);
}

INSTANTIATE_TEST_SUITE_P(AllCpuModes, PrecisionPluginTest,
                         ::testing::Values(Expect{"32-true", torch::kFloat32, torch::kFloat32},
                                           Expect{"64-true", torch::kFloat64, torch::kFloat64},
                                           Expect{"bf16-mixed", torch::kFloat32, torch::kBFloat16},
                                           Expect{"bf16-true", torch::kBFloat16, torch::kBFloat16}),
                         [](const ::testing::TestParamInfo<Expect>& info) {
                           std::string name = info.param.precision;
                           for (char& c : name) c = c == '-' ? '_' : c;
                           return name;
                         });

TEST(PrecisionPluginScalerTest, ScalerSkipsAStepWithInfiniteGradients) {
  auto plugin = PrecisionRegistry::Create("bf16-mixed", torch::kCPU);
  ASSERT_OK(plugin);
  auto scaler = GradScaler::Create({.enabled = true, .init_scale = 1024.0});
  ASSERT_OK(scaler);
  (*plugin)->set_grad_scaler(std::move(*scaler));
  std::unique_ptr<Model> model =
      Mlp::Build({.hidden = {4}}, {.input_shape = {2}, .num_classes = 2});
  torch::optim::SGD sgd(model->Parameters(), torch::optim::SGDOptions(0.1));
  const torch::Tensor before = model->Parameters()[0].clone();
  // An infinite loss makes every gradient non-finite.
  torch::Tensor loss =
      model->Forward(torch::ones({1, 2})).sum() * std::numeric_limits<float>::infinity();
  (*plugin)->Backward(loss);
  EXPECT_TRUE((*plugin)->OptimizerStep(sgd).skipped);
  EXPECT_TRUE(torch::equal(before, model->Parameters()[0]));
  EXPECT_EQ((*plugin)->grad_scaler()->skipped_steps(), 1);
  EXPECT_DOUBLE_EQ((*plugin)->grad_scaler()->scale(), 512.0);
}

}  // namespace
}  // namespace mantissa

namespace mantissa {
namespace {

TEST(PrecisionPluginScalerTest, StateDictCarriesTheScalerAcrossPlugins) {
  auto make = [] {
    auto plugin = PrecisionRegistry::Create("bf16-mixed", torch::kCPU);
    auto scaler = GradScaler::Create({.enabled = true, .init_scale = 4096.0});
    (*plugin)->set_grad_scaler(std::move(*scaler));
    return std::move(*plugin);
  };
  std::unique_ptr<PrecisionPlugin> first = make();
  std::unique_ptr<Model> model =
      Mlp::Build({.hidden = {4}}, {.input_shape = {2}, .num_classes = 2});
  torch::optim::SGD sgd(model->Parameters(), torch::optim::SGDOptions(0.1));
  // Two overflowing steps: the scale backs off twice.
  for (int i = 0; i < 2; ++i) {
    sgd.zero_grad();
    first->Backward(model->Forward(torch::ones({1, 2})).sum() *
                    std::numeric_limits<float>::infinity());
    EXPECT_TRUE(first->OptimizerStep(sgd).skipped);
  }
  std::stringstream stream;
  {
    torch::serialize::OutputArchive archive;
    first->SaveState(archive);
    archive.save_to(stream);
  }
  std::unique_ptr<PrecisionPlugin> second = make();
  torch::serialize::InputArchive archive;
  archive.load_from(stream);
  second->LoadState(archive);
  EXPECT_DOUBLE_EQ(second->grad_scaler()->scale(), 1024.0);
  EXPECT_EQ(second->grad_scaler()->skipped_steps(), 2);
}

}  // namespace
}  // namespace mantissa

namespace mantissa {
namespace {

// bf16-true with a rounding other than nearest, through the grad scaler, on a
// real MLP: the weights move and keep their dtype, and kahan's buffers are
// one per parameter in the weights' dtype.
TEST(PrecisionPluginUpdateTest, TrueHalfRoundsAnMlpStepAsAsked) {
  for (const UpdateRounding rounding : {UpdateRounding::kKahan, UpdateRounding::kStochastic}) {
    SCOPED_TRACE(UpdateRoundingName(rounding));
    auto plugin =
        PrecisionRegistry::Create("bf16-true", torch::kCPU, DelayedScaling(), {rounding, 1});
    ASSERT_OK(plugin);
    PrecisionPlugin& p = **plugin;
    p.set_grad_scaler(*GradScaler::Create({.enabled = true, .init_scale = 256.0}));
    std::unique_ptr<Model> model;
    {
      auto init = p.ModuleInitGuard();
      model = Mlp::Build({.hidden = {16}}, {.input_shape = {8}, .num_classes = 4});
    }
    torch::optim::AdamW adamw(model->Parameters(), torch::optim::AdamWOptions(0.05));
    std::vector<torch::Tensor> before;
    int64_t bytes = 0;
    for (const torch::Tensor& param : model->Parameters()) {
      before.push_back(param.detach().clone());
      bytes += static_cast<int64_t>(param.nbytes());
    }
    const torch::Tensor out = p.ConvertOutput(model->Forward(p.ConvertInput(torch::randn({3, 8}))));
    p.Backward(torch::nn::functional::cross_entropy(out, torch::tensor({0, 1, 2})));
    EXPECT_FALSE(p.OptimizerStep(adamw).skipped);
    for (size_t i = 0; i < before.size(); ++i) {
      EXPECT_EQ(model->Parameters()[i].scalar_type(), torch::kBFloat16);
      EXPECT_FALSE(torch::equal(model->Parameters()[i], before[i])) << i;
    }
    EXPECT_EQ(p.StateBytes(), rounding == UpdateRounding::kKahan ? bytes : 0);
    EXPECT_EQ(p.update_rounding(), UpdateRoundingName(rounding));
  }
}

}  // namespace
}  // namespace mantissa
