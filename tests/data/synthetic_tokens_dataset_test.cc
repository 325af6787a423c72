#include "server/data/synthetic_tokens_dataset.h"

#include <gtest/gtest.h>

#include "server/data/dataset_registry.h"
#include "tests/testing/status_matchers.h"

namespace mantissa {
namespace {

using ::testing::HasSubstr;
using testing::StatusIs;

const std::map<std::string, std::string> kSmall = {{"vocab", "50"},
                                                   {"period", "8"},
                                                   {"train_tokens", "1000"},
                                                   {"test_tokens", "200"},
                                                   {"seq_len", "16"}};

torch::Tensor AllItems(const Dataset& d) { return torch::arange(d.size(), torch::kInt64); }

TEST(SyntheticTokensDatasetTest, SpecAndSizes) {
  auto splits = DatasetRegistry::Load("synthetic-tokens", kSmall, 7);
  ASSERT_OK(splits);
  EXPECT_EQ(splits->spec.task, Task::kLanguageModel);
  EXPECT_EQ(splits->spec.vocab_size, 50);
  EXPECT_EQ(splits->spec.seq_len, 16);
  EXPECT_EQ(splits->spec.input_shape, std::vector<int64_t>{16});
  EXPECT_EQ(splits->train->size(), (1000 - 1) / 16);
  ASSERT_NE(splits->test, nullptr);
  EXPECT_EQ(splits->test->size(), (200 - 1) / 16);
}

TEST(SyntheticTokensDatasetTest, DefaultsMatchTheDocumentedOnes) {
  auto splits = DatasetRegistry::Load("synthetic-tokens", {}, 1);
  ASSERT_OK(splits);
  EXPECT_EQ(splits->spec.vocab_size, 256);
  EXPECT_EQ(splits->spec.seq_len, 64);
  EXPECT_EQ(splits->train->size(), (65536 - 1) / 64);
  EXPECT_EQ(splits->test->size(), (8192 - 1) / 64);
}

TEST(SyntheticTokensDatasetTest, TargetsAreInputsShiftedByOneAndRepeatThePattern) {
  auto splits = DatasetRegistry::Load("synthetic-tokens", kSmall, 7);
  ASSERT_OK(splits);
  const Batch b = splits->train->Get(torch::tensor({5, 0, 6}, torch::kInt64));
  ASSERT_EQ(b.inputs.sizes(), torch::IntArrayRef({3, 16}));
  ASSERT_EQ(b.targets.sizes(), torch::IntArrayRef({3, 16}));
  EXPECT_EQ(b.inputs.scalar_type(), torch::kInt64);
  EXPECT_EQ(b.targets.scalar_type(), torch::kInt64);
  // Within a window: target k is input k + 1.
  EXPECT_TRUE(torch::equal(b.inputs.slice(1, 1), b.targets.slice(1, 0, 15)));
  // Windows are contiguous: item 5's last target is item 6's first input.
  EXPECT_EQ(b.targets[0][15].item<int64_t>(), b.inputs[2][0].item<int64_t>());
  // No noise: the stream repeats with the period, across items too.
  EXPECT_TRUE(torch::equal(b.inputs.slice(1, 0, 8), b.inputs.slice(1, 8, 16)));
  EXPECT_TRUE(torch::equal(b.inputs[0], b.inputs[1]));  // 5 * 16 is a multiple of 8
  EXPECT_GE(b.inputs.min().item<int64_t>(), 0);
  EXPECT_LT(b.inputs.max().item<int64_t>(), 50);
  // The pattern is random, not constant.
  EXPECT_TRUE((b.inputs[0] != b.inputs[0][0]).any().item<bool>());
}

TEST(SyntheticTokensDatasetTest, TestSplitContinuesTheTrainingStream) {
  auto splits = DatasetRegistry::Load("synthetic-tokens", kSmall, 7);
  ASSERT_OK(splits);
  const Batch train = splits->train->Get(torch::tensor({0}, torch::kInt64));
  const Batch test = splits->test->Get(torch::tensor({0}, torch::kInt64));
  // Test token 0 is stream position 1000, which is 1000 % 8 = 0 in the pattern.
  EXPECT_TRUE(torch::equal(test.inputs, train.inputs));
}

TEST(SyntheticTokensDatasetTest, DeterministicFromSeed) {
  auto a = DatasetRegistry::Load("synthetic-tokens", kSmall, 42);
  auto b = DatasetRegistry::Load("synthetic-tokens", kSmall, 42);
  auto c = DatasetRegistry::Load("synthetic-tokens", kSmall, 43);
  ASSERT_OK(a);
  ASSERT_OK(b);
  ASSERT_OK(c);
  const torch::Tensor all = AllItems(*a->train);
  EXPECT_TRUE(torch::equal(a->train->Get(all).inputs, b->train->Get(all).inputs));
  EXPECT_TRUE(torch::equal(a->test->Get(AllItems(*a->test)).targets,
                           b->test->Get(AllItems(*b->test)).targets));
  EXPECT_FALSE(torch::equal(a->train->Get(all).inputs, c->train->Get(all).inputs));
}

TEST(SyntheticTokensDatasetTest, NoiseReplacesAboutThatFractionOfTokens) {
  std::map<std::string, std::string> noisy = kSmall;
  noisy["noise"] = "0.5";
  auto clean = DatasetRegistry::Load("synthetic-tokens", kSmall, 3);
  auto dirty = DatasetRegistry::Load("synthetic-tokens", noisy, 3);
  ASSERT_OK(clean);
  ASSERT_OK(dirty);
  const torch::Tensor all = AllItems(*clean->train);
  const double changed = (clean->train->Get(all).inputs != dirty->train->Get(all).inputs)
                             .to(torch::kFloat64)
                             .mean()
                             .item<double>();
  // Half the positions get a uniform token, 1/50 of which equals the original.
  EXPECT_GT(changed, 0.4);
  EXPECT_LT(changed, 0.6);
  EXPECT_LT(dirty->train->Get(all).inputs.max().item<int64_t>(), 50);
}

TEST(SyntheticTokensDatasetTest, NoTestSplitWhenTestTokensIsZero) {
  auto splits = DatasetRegistry::Load("synthetic-tokens", {{"test_tokens", "0"}}, 1);
  ASSERT_OK(splits);
  EXPECT_EQ(splits->test, nullptr);
}

TEST(SyntheticTokensDatasetTest, OutOfRangeItemThrows) {
  auto splits = DatasetRegistry::Load("synthetic-tokens", kSmall, 7);
  ASSERT_OK(splits);
  const int64_t n = splits->train->size();
  EXPECT_THROW(splits->train->Get(torch::tensor({n}, torch::kInt64)), c10::Error);
  EXPECT_THROW(splits->train->Get(torch::tensor({-1}, torch::kInt64)), c10::Error);
}

TEST(SyntheticTokensDatasetTest, BadOptionsNameTheKey) {
  EXPECT_THAT(DatasetRegistry::Parse("synthetic-tokens", {{"noise", "1.5"}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("dataset_options[noise]")));
  EXPECT_THAT(
      DatasetRegistry::Parse("synthetic-tokens", {{"train_tokens", "64"}, {"seq_len", "64"}}),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("dataset_options[train_tokens]: 64 tokens hold no window")));
  EXPECT_THAT(
      DatasetRegistry::Parse("synthetic-tokens", {{"test_tokens", "10"}, {"seq_len", "16"}}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("dataset_options[test_tokens]")));
  EXPECT_THAT(DatasetRegistry::Parse("synthetic-tokens", {{"vocab", "1"}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("dataset_options[vocab]")));
  EXPECT_THAT(DatasetRegistry::Parse("synthetic-tokens", {{"length", "3"}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown option 'length'")));
  EXPECT_OK(DatasetRegistry::Parse("synthetic-tokens", kSmall));
}

}  // namespace
}  // namespace mantissa
