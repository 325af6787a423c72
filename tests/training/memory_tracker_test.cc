#include "server/training/memory_tracker.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <iostream>
#include <thread>
#include <vector>

namespace mantissa {
namespace {

constexpr int64_t kMiB = int64_t{1} << 20;

class MemoryTrackerTest : public ::testing::Test {
 protected:
  // Installing is process-wide and idempotent, so every test may ask.
  void SetUp() override { MemoryTracker::InstallCpuCounting(); }

  MemoryTracker tracker_{torch::Device(torch::kCPU)};
};

TEST_F(MemoryTrackerTest, InstallIsIdempotent) {
  MemoryTracker::InstallCpuCounting();
  MemoryTracker::InstallCpuCounting();
  EXPECT_TRUE(MemoryTracker::CpuCountingInstalled());
  EXPECT_EQ(tracker_.Source(), "cpu counting allocator");
}

TEST_F(MemoryTrackerTest, CountsAllocationUntilFreed) {
  tracker_.Start();
  EXPECT_EQ(tracker_.CurrentBytes(), 0);
  torch::Tensor t = torch::empty({kMiB / 4}, torch::kFloat);
  EXPECT_GE(tracker_.CurrentBytes(), kMiB);
  t = torch::Tensor();
  EXPECT_EQ(tracker_.CurrentBytes(), 0);
}

TEST_F(MemoryTrackerTest, AllocatedMemoryStaysUsable) {
  torch::Tensor a = torch::arange(1000, torch::kDouble);
  torch::Tensor b = a.clone();
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_DOUBLE_EQ(b.sum().item<double>(), 999.0 * 1000.0 / 2.0);
}

TEST_F(MemoryTrackerTest, ZeroSizedTensorsCostNothing) {
  tracker_.Start();
  torch::Tensor t = torch::empty({0}, torch::kFloat);
  EXPECT_EQ(tracker_.CurrentBytes(), 0);
  EXPECT_EQ(tracker_.PeakBytes(), 0);
}

TEST_F(MemoryTrackerTest, CountsStorageGrowth) {
  tracker_.Start();
  torch::Tensor t = torch::empty({16}, torch::kFloat);
  t.resize_({kMiB / 4});
  EXPECT_GE(tracker_.CurrentBytes(), kMiB);
  t = torch::Tensor();
  EXPECT_EQ(tracker_.CurrentBytes(), 0);
}

TEST_F(MemoryTrackerTest, PeakKeepsHighWaterMarkUntilStart) {
  tracker_.Start();
  { torch::Tensor big = torch::empty({4 * kMiB / 4}, torch::kFloat); }
  EXPECT_EQ(tracker_.CurrentBytes(), 0);
  EXPECT_GE(tracker_.PeakBytes(), 4 * kMiB);

  tracker_.Start();
  EXPECT_EQ(tracker_.PeakBytes(), 0);
  torch::Tensor small = torch::empty({kMiB / 4}, torch::kFloat);
  EXPECT_GE(tracker_.PeakBytes(), kMiB);
  EXPECT_LT(tracker_.PeakBytes(), 4 * kMiB);
}

TEST_F(MemoryTrackerTest, FreeingOlderTensorsMakesCurrentNegative) {
  torch::Tensor before = torch::empty({kMiB / 4}, torch::kFloat);
  tracker_.Start();
  before = torch::Tensor();
  EXPECT_LE(tracker_.CurrentBytes(), -kMiB);
  EXPECT_EQ(tracker_.PeakBytes(), 0);
}

TEST_F(MemoryTrackerTest, ConcurrentAllocationsBalanceOut) {
  tracker_.Start();
  constexpr int kThreads = 4;
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([i] {
      MemoryTracker::InstallCpuCounting();
      std::vector<torch::Tensor> held;
      for (int step = 0; step < 500; ++step) {
        held.push_back(torch::empty({1000 + 37 * step + i}, torch::kFloat));
        if (held.size() > 8) held.erase(held.begin());
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(tracker_.CurrentBytes(), 0);
  // At least one thread's last eight tensors were alive at once.
  EXPECT_GE(tracker_.PeakBytes(), 8 * 4 * 1000);
}

TEST(MemoryTrackerNoCudaTest, CudaTrackerWithoutCudaReportsNothing) {
#ifdef MANTISSA_WITH_CUDA
  GTEST_SKIP() << "built with CUDA";
#else
  MemoryTracker tracker(torch::Device(torch::kCUDA, 0));
  tracker.Start();
  EXPECT_EQ(tracker.CurrentBytes(), 0);
  EXPECT_EQ(tracker.PeakBytes(), 0);
  EXPECT_EQ(tracker.Source(), "unavailable (no CUDA in this build)");
#endif
}

#ifdef MANTISSA_WITH_CUDA
TEST(MemoryTrackerCudaTest, CountsCudaAllocations) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  MemoryTracker tracker(torch::Device(torch::kCUDA, 0));
  EXPECT_EQ(tracker.Source(), "cuda caching allocator");
  tracker.Start();
  {
    torch::Tensor t = torch::empty({kMiB / 4}, torch::TensorOptions().device(torch::kCUDA, 0));
    EXPECT_GE(tracker.CurrentBytes(), kMiB);
  }
  EXPECT_EQ(tracker.CurrentBytes(), 0);
  EXPECT_GE(tracker.PeakBytes(), kMiB);
}
#endif

TEST(TensorBytesTest, CountsElementSizePerDtype) {
  EXPECT_EQ(TensorBytes({torch::zeros({3, 5}, torch::kFloat)}), 15 * 4);
  EXPECT_EQ(TensorBytes({torch::zeros({3, 5}, torch::kBFloat16)}), 15 * 2);
  EXPECT_EQ(TensorBytes({torch::zeros({3, 5}, torch::kDouble)}), 15 * 8);
  EXPECT_EQ(TensorBytes({torch::zeros({3, 5}, torch::kFloat), torch::zeros({7}, torch::kBFloat16),
                         torch::zeros({2, 2}, torch::kDouble), torch::Tensor()}),
            60 + 14 + 32);
  EXPECT_EQ(TensorBytes({}), 0);
  EXPECT_EQ(TensorBytes({torch::Tensor()}), 0);
}

TEST(GradientBytesTest, CountsOnlyDefinedGradients) {
  torch::nn::Linear linear(10, 4);  // 40 weights + 4 biases
  EXPECT_EQ(GradientBytes(linear->parameters()), 0);

  linear->forward(torch::randn({2, 10})).sum().backward();
  EXPECT_EQ(GradientBytes(linear->parameters()), 44 * 4);

  linear->bias.mutable_grad() = torch::Tensor();
  EXPECT_EQ(GradientBytes(linear->parameters()), 40 * 4);
}

TEST(GradientBytesTest, FollowsGradientDtype) {
  torch::nn::Linear linear(10, 4);
  linear->to(torch::kDouble);
  linear->forward(torch::randn({2, 10}, torch::kDouble)).sum().backward();
  EXPECT_EQ(GradientBytes(linear->parameters()), 44 * 8);

  linear->to(torch::kBFloat16);
  for (torch::Tensor& p : linear->parameters()) p.mutable_grad() = torch::ones_like(p);
  EXPECT_EQ(GradientBytes(linear->parameters()), 44 * 2);
}

// One optimizer step on Linear(10, 4): 44 float parameters, 176 bytes.
template <typename Optimizer, typename Options>
int64_t StateBytesAfterStep(const Options& options) {
  torch::manual_seed(0);
  torch::nn::Linear linear(10, 4);
  Optimizer optimizer(linear->parameters(), options);
  EXPECT_EQ(OptimizerStateBytes(optimizer), 0);
  optimizer.zero_grad();
  linear->forward(torch::randn({2, 10})).pow(2).sum().backward();
  optimizer.step();
  return OptimizerStateBytes(optimizer);
}

TEST(OptimizerStateBytesTest, SgdWithMomentumKeepsOneBufferPerParameter) {
  EXPECT_EQ(StateBytesAfterStep<torch::optim::SGD>(torch::optim::SGDOptions(0.1).momentum(0.9)),
            176);
}

TEST(OptimizerStateBytesTest, PlainSgdKeepsNoState) {
  EXPECT_EQ(StateBytesAfterStep<torch::optim::SGD>(torch::optim::SGDOptions(0.1)), 0);
}

TEST(OptimizerStateBytesTest, AdamKeepsTwoBuffersPerParameter) {
  EXPECT_EQ(StateBytesAfterStep<torch::optim::Adam>(torch::optim::AdamOptions(1e-3)), 2 * 176);
}

TEST(OptimizerStateBytesTest, AdamWithAmsgradKeepsThreeBuffersPerParameter) {
  EXPECT_EQ(StateBytesAfterStep<torch::optim::Adam>(torch::optim::AdamOptions(1e-3).amsgrad(true)),
            3 * 176);
}

TEST(OptimizerStateBytesTest, AdamWKeepsTwoBuffersPerParameter) {
  EXPECT_EQ(StateBytesAfterStep<torch::optim::AdamW>(torch::optim::AdamWOptions(1e-3)), 2 * 176);
}

TEST(OptimizerStateBytesTest, AdamWWithAmsgradKeepsThreeBuffersPerParameter) {
  EXPECT_EQ(
      StateBytesAfterStep<torch::optim::AdamW>(torch::optim::AdamWOptions(1e-3).amsgrad(true)),
      3 * 176);
}

struct StepMeasurement {
  int64_t peak = 0;
  int64_t parameter_bytes = 0;
  int64_t gradient_bytes = 0;
  int64_t optimizer_bytes = 0;
};

// Two AdamW steps of an MLP 784-1024-1024-10 on a batch of 64, measured
// from before the model exists, as a training job would be.
StepMeasurement MeasureMlpSteps(torch::Dtype dtype) {
  torch::manual_seed(0);
  MemoryTracker tracker(torch::Device(torch::kCPU));
  tracker.Start();
  StepMeasurement m;
  {
    torch::nn::Sequential model(torch::nn::Linear(784, 1024), torch::nn::ReLU(),
                                torch::nn::Linear(1024, 1024), torch::nn::ReLU(),
                                torch::nn::Linear(1024, 10));
    model->to(dtype);
    torch::optim::AdamW optimizer(model->parameters(), torch::optim::AdamWOptions(1e-3));
    torch::Tensor input = torch::randn({64, 784}, torch::dtype(dtype));
    torch::Tensor target = torch::randint(0, 10, {64}, torch::kLong);
    for (int step = 0; step < 2; ++step) {
      optimizer.zero_grad();
      torch::Tensor loss = torch::nn::functional::cross_entropy(model->forward(input), target);
      loss.backward();
      optimizer.step();
    }
    m.parameter_bytes = TensorBytes(model->parameters());
    m.gradient_bytes = GradientBytes(model->parameters());
    m.optimizer_bytes = OptimizerStateBytes(optimizer);
  }
  m.peak = tracker.PeakBytes();
  EXPECT_EQ(tracker.CurrentBytes(), 0) << "everything the run allocated was freed";
  return m;
}

class MlpMemoryTest : public MemoryTrackerTest {};

TEST_F(MlpMemoryTest, PeakCoversStateAndScalesWithDtype) {
  constexpr int64_t kParameters = (784 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * 10 + 10);
  const StepMeasurement fp32 = MeasureMlpSteps(torch::kFloat);
  const StepMeasurement bf16 = MeasureMlpSteps(torch::kBFloat16);
  const StepMeasurement fp64 = MeasureMlpSteps(torch::kDouble);

  for (const auto& [m, element_size] :
       {std::pair{fp32, int64_t{4}}, std::pair{bf16, int64_t{2}}, std::pair{fp64, int64_t{8}}}) {
    EXPECT_EQ(m.parameter_bytes, kParameters * element_size);
    EXPECT_EQ(m.gradient_bytes, kParameters * element_size);
    EXPECT_EQ(m.optimizer_bytes, 2 * kParameters * element_size);
    EXPECT_GE(m.peak, m.parameter_bytes + m.gradient_bytes + m.optimizer_bytes);
  }

  const double bf16_ratio = static_cast<double>(bf16.peak) / static_cast<double>(fp32.peak);
  const double fp64_ratio = static_cast<double>(fp64.peak) / static_cast<double>(fp32.peak);
  std::cout << "MLP peak bytes: fp32 " << fp32.peak << ", bf16 " << bf16.peak << " (" << bf16_ratio
            << "x), fp64 " << fp64.peak << " (" << fp64_ratio << "x)\n";
  EXPECT_THAT(bf16_ratio, ::testing::AllOf(::testing::Ge(0.4), ::testing::Le(0.6)));
  EXPECT_THAT(fp64_ratio, ::testing::AllOf(::testing::Ge(1.8), ::testing::Le(2.2)));
}

}  // namespace
}  // namespace mantissa
