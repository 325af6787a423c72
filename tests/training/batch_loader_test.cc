#include "server/training/batch_loader.h"

#include <gtest/gtest.h>

#include "tests/testing/status_matchers.h"

namespace mantissa {
namespace {

using ::testing::HasSubstr;
using testing::StatusIs;

// Item i is the number i, so a batch shows which items it holds.
TensorDataset Numbers(int64_t n) {
  return TensorDataset(torch::arange(n, torch::kFloat32).unsqueeze(1), torch::arange(n));
}

std::vector<int64_t> Targets(const Batch& batch) {
  const torch::Tensor t = batch.targets.contiguous();
  return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
}

TEST(BatchLoaderTest, EachEpochVisitsEveryItemOnceInASeededOrder) {
  const TensorDataset data = Numbers(10);
  auto loader = BatchLoader::Create(
      {.dataset = &data, .batch_size = 4, .seed = 7, .first_batch = 0, .end_batch = 6});
  ASSERT_OK(loader);
  EXPECT_EQ((*loader)->batches_per_epoch(), 3);  // 4 + 4 + 2
  std::vector<int64_t> epochs[2];
  for (int b = 0; b < 6; ++b) {
    auto batch = (*loader)->Next();
    ASSERT_OK(batch);
    EXPECT_EQ(batch->targets.size(0), b % 3 == 2 ? 2 : 4);
    for (int64_t v : Targets(*batch)) epochs[b / 3].push_back(v);
  }
  EXPECT_THAT((*loader)->Next(), StatusIs(absl::StatusCode::kOutOfRange, ::testing::_));
  for (auto& items : epochs) {
    std::vector<int64_t> sorted = items;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(sorted, (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  }
  EXPECT_NE(epochs[0], epochs[1]);  // a new order each epoch
}

TEST(BatchLoaderTest, StartingMidwayGivesTheBatchesAFullRunWouldHave) {
  const TensorDataset data = Numbers(50);
  auto full = BatchLoader::Create(
      {.dataset = &data, .batch_size = 8, .seed = 3, .first_batch = 0, .end_batch = 20});
  auto resumed = BatchLoader::Create(
      {.dataset = &data, .batch_size = 8, .seed = 3, .first_batch = 9, .end_batch = 20});
  ASSERT_OK(full);
  ASSERT_OK(resumed);
  for (int b = 0; b < 9; ++b) ASSERT_OK((*full)->Next());
  for (int b = 9; b < 20; ++b) {
    auto x = (*full)->Next();
    auto y = (*resumed)->Next();
    ASSERT_OK(x);
    ASSERT_OK(y);
    EXPECT_EQ(Targets(*x), Targets(*y)) << "batch " << b;
  }
}

// A dataset whose Get throws like a LibTorch op on bad data.
class BrokenDataset final : public Dataset {
 public:
  int64_t size() const override { return 8; }
  Batch Get(const torch::Tensor&) const override {
    return {torch::ones({1}).index_select(0, torch::tensor({5}, torch::kInt64)), {}};
  }
};

TEST(BatchLoaderTest, ADatasetErrorEndsTheStreamWithContext) {
  const BrokenDataset data;
  auto loader = BatchLoader::Create(
      {.dataset = &data, .batch_size = 4, .seed = 1, .first_batch = 0, .end_batch = 4});
  ASSERT_OK(loader);
  EXPECT_THAT((*loader)->Next(), StatusIs(absl::StatusCode::kInternal, HasSubstr("batch 0")));
  EXPECT_FALSE((*loader)->Next().ok());
}

TEST(BatchLoaderTest, StoppingEarlyJoinsTheThread) {
  const TensorDataset data = Numbers(1000);
  auto loader = BatchLoader::Create(
      {.dataset = &data, .batch_size = 1, .seed = 1, .first_batch = 0, .end_batch = 1000});
  ASSERT_OK(loader);
  ASSERT_OK((*loader)->Next());
  loader->reset();  // must not hang with the producer blocked on a full queue
}

TEST(BatchLoaderTest, RejectsEmptyDatasetsAndBadRanges) {
  const TensorDataset empty = Numbers(0);
  EXPECT_THAT(BatchLoader::Create({.dataset = &empty, .batch_size = 4}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty")));
  const TensorDataset data = Numbers(4);
  EXPECT_THAT(
      BatchLoader::Create({.dataset = &data, .batch_size = 4, .first_batch = 5, .end_batch = 2}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("range")));
}

TEST(BatchLoaderTest, RejectsARankOutsideTheWorld) {
  const TensorDataset data = Numbers(4);
  EXPECT_THAT(BatchLoader::Create({.dataset = &data, .batch_size = 2, .rank = 2, .world_size = 2}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rank 2 of world size 2")));
  EXPECT_THAT(BatchLoader::Create({.dataset = &data, .batch_size = 2, .world_size = 0}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("world size 0")));
}

TEST(BatchLoaderTest, ARanksShareOfAShortLastBatchMayBeEmpty) {
  // 5 items, 2 per rank on 2 ranks: global batches of 4 and 1; rank 1 has
  // no item of the second.
  const TensorDataset data = Numbers(5);
  auto loader = BatchLoader::Create(
      {.dataset = &data, .batch_size = 2, .end_batch = 2, .rank = 1, .world_size = 2});
  ASSERT_OK(loader);
  EXPECT_EQ((*loader)->batches_per_epoch(), 2);
  auto first = (*loader)->Next();
  ASSERT_OK(first);
  EXPECT_EQ(first->targets.size(0), 2);
  auto second = (*loader)->Next();
  ASSERT_OK(second);
  EXPECT_EQ(second->targets.size(0), 0);
  EXPECT_EQ(second->inputs.size(0), 0);
}

}  // namespace
}  // namespace mantissa
