#include "server/training/gradient_monitor.h"

#include <gtest/gtest.h>

#include <limits>

#include "mantissa/v1/training.pb.h"

namespace mantissa {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// Leaf tensors with gradients set directly, one per shape.
std::vector<torch::Tensor> WithGrads(const std::vector<torch::Tensor>& grads) {
  std::vector<torch::Tensor> parameters;
  for (const torch::Tensor& grad : grads) {
    torch::Tensor p = torch::zeros_like(grad).set_requires_grad(true);
    p.mutable_grad() = grad.clone();
    parameters.push_back(p);
  }
  return parameters;
}

// torch::nn::utils::clip_grad_norm_'s total in `dtype`: the norm of the
// stacked per-gradient norms.
torch::Tensor ReferenceNorm(const std::vector<torch::Tensor>& grads, torch::Dtype dtype) {
  std::vector<torch::Tensor> norms;
  for (const torch::Tensor& g : grads) norms.push_back(g.to(dtype).norm(2));
  return torch::stack(norms).norm(2);
}

GradientMonitor Monitor(size_t parameters) {
  std::vector<std::string> names;
  for (size_t i = 0; i < parameters; ++i) names.push_back("p" + std::to_string(i));
  return GradientMonitor({.parameter_names = names});
}

std::vector<torch::Tensor> RandomGrads(torch::Dtype dtype) {
  torch::manual_seed(3);
  return {torch::randn({16, 8}).to(dtype), torch::randn({8}).to(dtype),
          torch::randn({4, 16}).to(dtype)};
}

TEST(GradientMonitorTest, TheNormIsTheGlobalL2NormOfTheGradients) {
  const std::vector<torch::Tensor> grads = RandomGrads(torch::kFloat32);
  GradientMonitor monitor = Monitor(grads.size());
  const torch::Tensor total = monitor.Observe(WithGrads(grads), {}, {});
  EXPECT_EQ(total.scalar_type(), torch::kFloat32);
  EXPECT_EQ(total.dim(), 0);
  // Bit for bit what clip_grad_norm_ computes in 32-true.
  EXPECT_EQ(total.item<float>(), ReferenceNorm(grads, torch::kFloat32).item<float>());
  const GradientMonitor::Interval interval = monitor.Read();
  EXPECT_EQ(interval.steps, 1);
  ASSERT_TRUE(interval.grad_norm.has_value());
  EXPECT_EQ(*interval.grad_norm, total.item<float>());
  EXPECT_EQ(*interval.max_grad_norm, total.item<float>());
  EXPECT_EQ(interval.non_finite_steps, 0);
  EXPECT_EQ(interval.first_non_finite_index, -1);
}

TEST(GradientMonitorTest, ScaledGradientsAreUnscaled) {
  const std::vector<torch::Tensor> grads = RandomGrads(torch::kFloat32);
  std::vector<torch::Tensor> scaled;
  for (const torch::Tensor& g : grads) scaled.push_back(g * 1024);
  GradientMonitor monitor = Monitor(grads.size());
  const torch::Tensor unscale = torch::full({1}, 1.0f / 1024);
  const torch::Tensor total = monitor.Observe(WithGrads(scaled), unscale, {});
  // A power of two: unscaling the norm is exact (accumulated in float64
  // while scaled, so compared in float64).
  EXPECT_DOUBLE_EQ(total.item<double>(), ReferenceNorm(grads, torch::kFloat64).item<double>());
  EXPECT_EQ(*monitor.Read().grad_norm, total.item<double>());
}

TEST(GradientMonitorTest, GradientsScaledNearFloat32sMaximumAreFinite) {
  // A grad scaler near float32's maximum scales finite gradients to ~1e30,
  // whose squares overflow float32: the step is fine and must count.
  const std::vector<torch::Tensor> grads = RandomGrads(torch::kFloat32);
  std::vector<torch::Tensor> scaled;
  for (const torch::Tensor& g : grads) scaled.push_back(g * 1e30);
  GradientMonitor monitor = Monitor(grads.size());
  const torch::Tensor total = monitor.Observe(WithGrads(scaled), torch::full({1}, 1e-30f), {});
  EXPECT_NEAR(total.item<double>(), ReferenceNorm(grads, torch::kFloat64).item<double>(),
              1e-5 * total.item<double>());
  const GradientMonitor::Interval interval = monitor.Read();
  EXPECT_EQ(interval.non_finite_steps, 0);
  ASSERT_TRUE(interval.grad_norm.has_value());
}

TEST(GradientMonitorTest, Float64GradientsAccumulateInFloat64) {
  const std::vector<torch::Tensor> grads = RandomGrads(torch::kFloat64);
  GradientMonitor monitor = Monitor(grads.size());
  const torch::Tensor total = monitor.Observe(WithGrads(grads), torch::full({1}, 0.5f), {});
  EXPECT_EQ(total.scalar_type(), torch::kFloat64);
  EXPECT_DOUBLE_EQ(total.item<double>(),
                   0.5 * ReferenceNorm(grads, torch::kFloat64).item<double>());
}

TEST(GradientMonitorTest, Bf16GradientsAccumulateInFloat32) {
  std::vector<torch::Tensor> grads = RandomGrads(torch::kBFloat16);
  // Large enough that a bf16 sum of squares would round visibly.
  grads.push_back(torch::full({4096}, 1.0078125, torch::kBFloat16));
  GradientMonitor monitor = Monitor(grads.size());
  const torch::Tensor total = monitor.Observe(WithGrads(grads), {}, {});
  EXPECT_EQ(total.scalar_type(), torch::kFloat32);
  const float reference = ReferenceNorm(grads, torch::kFloat32).item<float>();
  EXPECT_NEAR(total.item<float>(), reference, 1e-6 * reference);
  EXPECT_NE(ReferenceNorm(grads, torch::kBFloat16).item<float>(), reference);
}

TEST(GradientMonitorTest, AMissingGradientCountsAsZero) {
  const std::vector<torch::Tensor> grads = RandomGrads(torch::kFloat32);
  std::vector<torch::Tensor> parameters = WithGrads(grads);
  parameters.push_back(torch::zeros({3}).set_requires_grad(true));  // no gradient
  GradientMonitor monitor = Monitor(parameters.size());
  // A zero among the norms: the same up to the order of the sum.
  EXPECT_FLOAT_EQ(monitor.Observe(parameters, {}, {}).item<float>(),
                  ReferenceNorm(grads, torch::kFloat32).item<float>());
}

// One parameter whose gradient is `value` * ones(4): norm 2 * |value|.
double Step(GradientMonitor& monitor, float value, const torch::Tensor& loss = {}) {
  return monitor.Observe(WithGrads({torch::full({4}, value)}), {}, loss).item<double>();
}

TEST(GradientMonitorTest, LatestAndLargestSkipNonFiniteSteps) {
  GradientMonitor monitor = Monitor(1);
  Step(monitor, 1.5f);  // norm 3
  Step(monitor, 2.5f);  // 5
  Step(monitor, kInf);
  Step(monitor, std::nanf(""));
  Step(monitor, 1.0f);   // 2
  Step(monitor, 1e20f);  // finite gradient, but its float32 norm overflows
  const GradientMonitor::Interval interval = monitor.Read();
  EXPECT_EQ(interval.steps, 6);
  EXPECT_DOUBLE_EQ(*interval.grad_norm, 2.0);
  EXPECT_DOUBLE_EQ(*interval.max_grad_norm, 5.0);
  EXPECT_EQ(interval.non_finite_steps, 3);
  EXPECT_EQ(interval.first_non_finite_index, 2);
  EXPECT_FALSE(interval.loss_non_finite);
  EXPECT_EQ(interval.non_finite_parameters, std::vector<int>{0});
}

TEST(GradientMonitorTest, AnIntervalWithoutAFiniteNormHasNone) {
  GradientMonitor monitor = Monitor(1);
  Step(monitor, kInf);
  const GradientMonitor::Interval interval = monitor.Read();
  EXPECT_EQ(interval.steps, 1);
  EXPECT_FALSE(interval.grad_norm.has_value());
  EXPECT_FALSE(interval.max_grad_norm.has_value());
}

TEST(GradientMonitorTest, RecordsTheFirstNonFiniteStepInBackwardOrder) {
  GradientMonitor monitor = Monitor(4);
  const torch::Tensor ok = torch::ones({2});
  const torch::Tensor inf = torch::full({2}, kInf);
  const torch::Tensor finite_loss = torch::tensor(0.5f);
  monitor.Observe(WithGrads({ok, ok, ok, ok}), {}, finite_loss);
  monitor.Observe(WithGrads({ok, inf, ok, inf}), {}, finite_loss);  // the first
  monitor.Observe(WithGrads({inf, ok, ok, ok}), {}, torch::tensor(kInf));
  const GradientMonitor::Interval interval = monitor.Read();
  EXPECT_EQ(interval.steps, 3);
  EXPECT_EQ(interval.non_finite_steps, 2);
  EXPECT_EQ(interval.first_non_finite_index, 1);
  EXPECT_FALSE(interval.loss_non_finite);
  EXPECT_EQ(interval.non_finite_parameters, (std::vector<int>{3, 1}));  // output first
}

TEST(GradientMonitorTest, ANonFiniteLossWithFiniteGradientsIsRecorded) {
  GradientMonitor monitor = Monitor(1);
  Step(monitor, 1.0f, torch::tensor(0.5f));
  Step(monitor, 1.0f, torch::tensor(std::nanf("")));
  const GradientMonitor::Interval interval = monitor.Read();
  EXPECT_EQ(interval.non_finite_steps, 1);
  EXPECT_EQ(interval.first_non_finite_index, 1);
  EXPECT_TRUE(interval.loss_non_finite);
  EXPECT_TRUE(interval.non_finite_parameters.empty());
  EXPECT_DOUBLE_EQ(*interval.grad_norm, 2.0);  // its gradients were finite
}

TEST(GradientMonitorTest, ReadStartsANewInterval) {
  GradientMonitor monitor = Monitor(1);
  Step(monitor, 4.0f);
  Step(monitor, kInf);
  ASSERT_EQ(monitor.Read().steps, 2);
  const GradientMonitor::Interval empty = monitor.Read();
  EXPECT_EQ(empty.steps, 0);
  EXPECT_FALSE(empty.grad_norm.has_value());
  EXPECT_EQ(empty.non_finite_steps, 0);
  Step(monitor, 1.0f);
  Step(monitor, 0.5f);
  const GradientMonitor::Interval next = monitor.Read();
  EXPECT_EQ(next.steps, 2);
  EXPECT_DOUBLE_EQ(*next.max_grad_norm, 2.0);  // not the previous interval's 8
  EXPECT_DOUBLE_EQ(*next.grad_norm, 1.0);
  EXPECT_EQ(next.non_finite_steps, 0);
}

TEST(GradientMonitorTest, ReduceMaxCombinesTheRanksBeforeTheRead) {
  // Two ranks' monitors; the reducer stands in for the all-reduce.
  GradientMonitor rank0 = Monitor(2), rank1 = Monitor(2);
  rank0.Observe(WithGrads({torch::ones({4}), torch::ones({4})}), {}, torch::tensor(1.0f));
  rank1.Observe(WithGrads({torch::ones({4}), torch::ones({4})}), {}, torch::tensor(kInf));
  torch::Tensor rank1_state;
  rank1.Read([&](const torch::Tensor& t) {
    EXPECT_EQ(t.scalar_type(), torch::kFloat64);
    rank1_state = t.clone();
  });
  int calls = 0;
  const GradientMonitor::Interval interval = rank0.Read([&](const torch::Tensor& t) {
    ++calls;
    t.copy_(torch::maximum(t, rank1_state));
  });
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(interval.steps, 1);
  EXPECT_EQ(interval.non_finite_steps, 1);  // rank 1's loss
  EXPECT_TRUE(interval.loss_non_finite);
  EXPECT_FLOAT_EQ(*interval.grad_norm, std::sqrt(8.0f));
}

TEST(GradientMonitorTest, NonFiniteNowReadsTheCurrentGradients) {
  GradientMonitor monitor = Monitor(3);
  EXPECT_EQ(monitor.NonFiniteNow(WithGrads(
                {torch::full({2}, kInf), torch::ones({2}), torch::full({2}, std::nanf(""))})),
            (std::vector<int>{2, 0}));
  EXPECT_TRUE(
      monitor.NonFiniteNow(WithGrads({torch::ones(2), torch::ones(2), torch::ones(2)})).empty());
  EXPECT_EQ(monitor.Read().steps, 0);  // not a step
}

TEST(ParameterNamesTest, NamesAreTheModulePaths) {
  torch::nn::Sequential net(torch::nn::Linear(4, 8), torch::nn::ReLU(), torch::nn::Linear(8, 2));
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (const auto& item : net->named_parameters()) named.emplace_back(item.key(), item.value());
  std::vector<torch::Tensor> parameters = net->parameters();
  parameters.push_back(torch::zeros({1}));  // not the model's
  EXPECT_EQ(ParameterNames(parameters, named),
            (std::vector<std::string>{"0.weight", "0.bias", "2.weight", "2.bias", "parameter 4"}));
}

TEST(DescribeNonFiniteStepTest, OneLineForEventsAndErrors) {
  v1::NonFiniteStep step;
  step.set_step(14);
  step.set_epoch(1);
  step.set_batch(13);
  step.set_batches(1);
  step.set_first_item(832);
  step.set_items(64);
  step.add_parameters("2.weight");
  step.add_parameters("2.bias");
  step.set_non_finite_parameters(2);
  step.set_skipped(true);
  step.set_steps_in_interval(1);
  EXPECT_EQ(DescribeNonFiniteStep(step, 938, 6),
            "step 14 (epoch 1, batch 13 of 938 in the seeded order, items 832-895): loss finite; "
            "non-finite gradients in 2 of 6 parameters: 2.weight, 2.bias; skipped by the grad "
            "scaler");
  step.set_loss_non_finite(true);
  step.set_batches(2);
  step.set_non_finite_parameters(12);
  step.set_skipped(false);
  step.set_steps_in_interval(3);
  EXPECT_EQ(DescribeNonFiniteStep(step, 938, 20),
            "step 14 (epoch 1, batches 13-14 of 938 in the seeded order, items 832-895): loss not "
            "finite; non-finite gradients in 12 of 20 parameters: 2.weight, 2.bias, ...; the "
            "first of 3 such steps since the previous report");
  step.clear_parameters();
  step.set_non_finite_parameters(0);
  step.set_steps_in_interval(1);
  EXPECT_EQ(DescribeNonFiniteStep(step, 938, 20),
            "step 14 (epoch 1, batches 13-14 of 938 in the seeded order, items 832-895): loss not "
            "finite; gradients finite");
}

}  // namespace
}  // namespace mantissa
