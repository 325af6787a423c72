#include "server/training/fused_adam.h"

#include <gtest/gtest.h>

#include <sstream>
#include <vector>

#include "server/training/optimizer_registry.h"

namespace mantissa {
namespace {

const torch::optim::AdamWParamState& OnlyState(torch::optim::Optimizer& optimizer) {
  EXPECT_EQ(optimizer.state().size(), 1u);
  return static_cast<const torch::optim::AdamWParamState&>(*optimizer.state().begin()->second);
}

TEST(FusedAdamTest, CpuParametersKeepThePortableOptimizer) {
  const std::vector<torch::Tensor> cpu = {torch::zeros({3}, torch::requires_grad())};
  EXPECT_FALSE(FusedOptimizer::Supported(cpu));
  EXPECT_FALSE(FusedOptimizer::Supported({}));
  OptimizerConfig config;
  config.name = "adamw";
  config.lr = 0.1;
  config.eps = 1e-8;
  auto optimizer = OptimizerRegistry::Create(config, cpu);
  ASSERT_TRUE(optimizer.ok());
  EXPECT_NE(dynamic_cast<torch::optim::AdamW*>(optimizer->get()), nullptr);
  EXPECT_EQ(dynamic_cast<FusedOptimizer*>(optimizer->get()), nullptr);
}

// Load and save need no kernel, so CPU parameters show that a fused
// optimizer reads and writes the portable one's checkpoints unchanged.
TEST(FusedAdamTest, ReadsAndWritesThePortableOptimizersState) {
  torch::manual_seed(3);
  torch::Tensor w = torch::randn({4}).set_requires_grad(true);
  torch::optim::AdamW portable({w}, torch::optim::AdamWOptions(0.01).weight_decay(0.1));
  for (int i = 0; i < 3; ++i) {
    w.mutable_grad() = torch::randn({4});
    portable.step();
  }
  std::stringstream first;
  {
    torch::serialize::OutputArchive archive;
    portable.save(archive);
    archive.save_to(first);
  }

  torch::Tensor v = w.detach().clone().set_requires_grad(true);
  FusedAdamW fused({v}, torch::optim::AdamWOptions(0.5));
  {
    torch::serialize::InputArchive archive;
    archive.load_from(first);
    fused.load(archive);
  }
  std::stringstream second;
  {
    torch::serialize::OutputArchive archive;
    fused.save(archive);
    archive.save_to(second);
  }

  torch::Tensor u = w.detach().clone().set_requires_grad(true);
  torch::optim::AdamW back({u}, torch::optim::AdamWOptions(0.5));
  {
    torch::serialize::InputArchive archive;
    archive.load_from(second);
    back.load(archive);
  }
  const torch::optim::AdamWParamState& expected = OnlyState(portable);
  const torch::optim::AdamWParamState& got = OnlyState(back);
  EXPECT_EQ(got.step(), 3);
  EXPECT_TRUE(torch::equal(got.exp_avg(), expected.exp_avg()));
  EXPECT_TRUE(torch::equal(got.exp_avg_sq(), expected.exp_avg_sq()));
}

}  // namespace
}  // namespace mantissa
