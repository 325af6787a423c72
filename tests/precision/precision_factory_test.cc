#include "server/precision/precision_factory.h"

#include <gtest/gtest.h>

#include "server/models/mlp.h"
#include "server/precision/fp32_precision.h"
#include "tests/testing/status_matchers.h"

namespace mantissa {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using testing::StatusIs;

TEST(PrecisionFactoryTest, ResolvesCanonicalValuesAndAliases) {
  for (const std::string value : {"", "32", "32-true"}) {
    auto resolved = PrecisionFactory::Resolve(value);
    ASSERT_OK(resolved);
    EXPECT_EQ(resolved->canonical, "32-true");
    EXPECT_EQ(resolved->effective, "32-true");
    EXPECT_THAT(resolved->warnings, IsEmpty());
  }
}

TEST(PrecisionFactoryTest, UnknownValueListsEveryValidValue) {
  auto resolved = PrecisionFactory::Resolve("fp17");
  EXPECT_THAT(resolved, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'fp17'")));
  for (const char* v :
       {"32-true", "64-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true",
        "transformer-engine", "transformer-engine-float16", "32", "64", "16", "bf16"}) {
    EXPECT_THAT(std::string(resolved.status().message()), HasSubstr(v));
  }
}

TEST(PrecisionFactoryTest, KnownButUnavailableModesAreFailedPrecondition) {
  EXPECT_THAT(PrecisionFactory::Resolve("transformer-engine"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("compute capability")));
  // Aliases resolve to their canonical mode before the device check.
  EXPECT_THAT(PrecisionFactory::Resolve("bf16"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("'bf16'")));
}

TEST(PrecisionFactoryTest, ModesListEveryFabricValueInOrder) {
  std::vector<std::string> names;
  for (const PrecisionModeInfo& m : PrecisionFactory::Modes()) {
    names.push_back(m.name);
    EXPECT_EQ(m.supported, m.reason.empty()) << m.name;
  }
  EXPECT_THAT(names, ElementsAre("32-true", "64-true", "16-mixed", "bf16-mixed", "16-true",
                                 "bf16-true", "transformer-engine", "transformer-engine-float16"));
}

TEST(Fp32PrecisionTest, KeepsEverythingInFloat32) {
  auto plugin = PrecisionFactory::Create("32-true");
  ASSERT_OK(plugin);
  EXPECT_EQ((*plugin)->name(), "32-true");
  std::unique_ptr<Model> model =
      Mlp::Build({.hidden = {8}}, {.input_shape = {4}, .num_classes = 3});
  (*plugin)->ConvertModule(*model);
  for (const torch::Tensor& p : model->Parameters()) EXPECT_EQ(p.scalar_type(), torch::kFloat32);

  torch::Tensor x = (*plugin)->ConvertInput(torch::randn({2, 4}));
  EXPECT_EQ(x.scalar_type(), torch::kFloat32);
  torch::Tensor out;
  {
    auto guard = (*plugin)->ForwardGuard();
    out = model->Forward(x);
  }
  out = (*plugin)->ConvertOutput(out);
  EXPECT_EQ(out.scalar_type(), torch::kFloat32);

  torch::optim::SGD sgd(model->Parameters(), torch::optim::SGDOptions(0.1));
  const torch::Tensor before = model->Parameters()[0].clone();
  (*plugin)->Backward(out.sum());
  for (const torch::Tensor& p : model->Parameters()) {
    ASSERT_TRUE(p.grad().defined());
    EXPECT_EQ(p.grad().scalar_type(), torch::kFloat32);
  }
  EXPECT_FALSE((*plugin)->OptimizerStep(sgd).skipped);
  EXPECT_FALSE(torch::equal(before, model->Parameters()[0]));
}

}  // namespace
}  // namespace mantissa
