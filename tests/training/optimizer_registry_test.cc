#include "server/training/optimizer_registry.h"

#include <gtest/gtest.h>

#include "tests/testing/status_matchers.h"

namespace mantissa {
namespace {

using ::testing::HasSubstr;
using testing::StatusIs;

// Every optimizer takes its settings and steps: a parameter with a gradient
// moves against it.
TEST(OptimizerRegistryTest, EveryOptimizerCreatesAndSteps) {
  ASSERT_EQ(OptimizerRegistry::Names().size(), OptimizerRegistry::Entries().size());
  for (const OptimizerEntry& entry : OptimizerRegistry::Entries()) {
    SCOPED_TRACE(entry.name);
    EXPECT_EQ(OptimizerRegistry::Find(entry.name), &entry);
    EXPECT_NE(std::string(entry.help), "");
    EXPECT_GE(entry.state_per_parameter, 1);
    OptimizerConfig config;
    config.name = entry.name;
    config.lr = 0.1;
    config.weight_decay = entry.default_weight_decay;
    if (entry.takes_momentum) config.momentum = 0.9;
    torch::Tensor w = torch::ones({3}, torch::requires_grad());
    auto optimizer = OptimizerRegistry::Create(config, {w});
    ASSERT_OK(optimizer);
    w.sum().backward();
    (*optimizer)->step();
    EXPECT_TRUE(torch::all(w < 1).item<bool>());
  }
}

TEST(OptimizerRegistryTest, UnknownNamesListTheValidOnes) {
  OptimizerConfig config;
  config.name = "lamb";
  EXPECT_EQ(OptimizerRegistry::Find("lamb"), nullptr);
  EXPECT_THAT(OptimizerRegistry::Create(config, {torch::ones({1}, torch::requires_grad())}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("unknown optimizer 'lamb'; valid optimizers: sgd, adam, adamw")));
}

}  // namespace
}  // namespace mantissa
