#include "server/data/synthetic_dataset.h"

#include <gtest/gtest.h>

#include "server/data/dataset_registry.h"
#include "tests/testing/status_matchers.h"

namespace mantissa {
namespace {

using ::testing::HasSubstr;
using testing::StatusIs;

TEST(SyntheticDatasetTest, DeterministicFromSeed) {
  const std::map<std::string, std::string> options = {
      {"train_size", "100"}, {"features", "5"}, {"classes", "3"}};
  auto a = DatasetRegistry::Load("synthetic", options, 42);
  auto b = DatasetRegistry::Load("synthetic", options, 42);
  auto c = DatasetRegistry::Load("synthetic", options, 43);
  ASSERT_OK(a);
  ASSERT_OK(b);
  ASSERT_OK(c);
  const torch::Tensor all = torch::arange(100, torch::kInt64);
  EXPECT_TRUE(torch::equal(a->train->Get(all).inputs, b->train->Get(all).inputs));
  EXPECT_TRUE(torch::equal(a->train->Get(all).targets, b->train->Get(all).targets));
  EXPECT_FALSE(torch::equal(a->train->Get(all).inputs, c->train->Get(all).inputs));
  EXPECT_EQ(a->spec.input_shape, std::vector<int64_t>{5});
  EXPECT_EQ(a->spec.num_classes, 3);
  EXPECT_EQ(a->test->size(), 1024);
  const torch::Tensor targets = a->train->Get(all).targets;
  EXPECT_GE(targets.min().item<int64_t>(), 0);
  EXPECT_LT(targets.max().item<int64_t>(), 3);
}

TEST(SyntheticDatasetTest, NoTestSplitWhenTestSizeIsZero) {
  auto splits = DatasetRegistry::Load("synthetic", {{"test_size", "0"}}, 1);
  ASSERT_OK(splits);
  EXPECT_EQ(splits->test, nullptr);
}

TEST(SyntheticDatasetTest, BadOptionsNameTheKey) {
  EXPECT_THAT(DatasetRegistry::Parse("synthetic", {{"classes", "1"}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("dataset_options[classes]")));
  EXPECT_THAT(DatasetRegistry::Parse("synthetic", {{"noise", "-1"}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("noise")));
  EXPECT_THAT(DatasetRegistry::Parse("synthetic", {{"size", "3"}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown option 'size'")));
  EXPECT_THAT(
      DatasetRegistry::Parse("cifar", {}),
      StatusIs(absl::StatusCode::kNotFound,
               HasSubstr("synthetic, synthetic-tokens, fashion-mnist, mnist, csv, tokens")));
  EXPECT_THAT(DatasetRegistry::Load("cifar", {}, 0),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("unknown dataset 'cifar'")));
}

}  // namespace
}  // namespace mantissa
