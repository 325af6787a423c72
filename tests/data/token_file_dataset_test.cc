#include "server/data/token_file_dataset.h"

#include <gtest/gtest.h>

#include <fstream>

#include "server/data/dataset_registry.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace mantissa {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::StatusIs;

// Writes `tokens` as little-endian uint16, as nanoGPT's prepare scripts do.
void WriteTokens(const std::string& path, const std::vector<int64_t>& tokens) {
  std::string bytes;
  for (int64_t t : tokens) {
    bytes += static_cast<char>(t & 0xff);
    bytes += static_cast<char>((t >> 8) & 0xff);
  }
  std::ofstream(path, std::ios::binary) << bytes;
}

// Token i is (i * 37) % 1000: distinct neighbours, and above 255 so the high
// byte matters.
std::vector<int64_t> Stream(int64_t n) {
  std::vector<int64_t> tokens(n);
  for (int64_t i = 0; i < n; ++i) tokens[i] = (i * 37) % 1000;
  return tokens;
}

TEST(TokenFileDatasetTest, ReadsWindowsFromDir) {
  testing::TempDir dir;
  WriteTokens(dir.File("train.bin"), Stream(305));
  WriteTokens(dir.File("val.bin"), Stream(45));
  const std::map<std::string, std::string> options = {
      {"dir", dir.path()}, {"vocab", "1000"}, {"seq_len", "10"}};
  ASSERT_OK(DatasetRegistry::Parse("tokens", options));
  auto splits = DatasetRegistry::Load("tokens", options, 0);
  ASSERT_OK(splits);
  EXPECT_EQ(splits->spec.task, Task::kLanguageModel);
  EXPECT_EQ(splits->spec.vocab_size, 1000);
  EXPECT_EQ(splits->spec.seq_len, 10);
  EXPECT_EQ(splits->spec.input_shape, std::vector<int64_t>{10});
  EXPECT_EQ(splits->train->size(), (305 - 1) / 10);
  ASSERT_NE(splits->test, nullptr);
  EXPECT_EQ(splits->test->size(), (45 - 1) / 10);

  const Batch b = splits->train->Get(torch::tensor({3, 0, 29}, torch::kInt64));
  ASSERT_EQ(b.inputs.sizes(), torch::IntArrayRef({3, 10}));
  ASSERT_EQ(b.targets.sizes(), torch::IntArrayRef({3, 10}));
  EXPECT_EQ(b.inputs.scalar_type(), torch::kInt64);
  EXPECT_EQ(b.targets.scalar_type(), torch::kInt64);
  const std::vector<int64_t> stream = Stream(305);
  const int64_t items[] = {3, 0, 29};
  for (int r = 0; r < 3; ++r) {
    for (int k = 0; k < 10; ++k) {
      EXPECT_EQ(b.inputs[r][k].item<int64_t>(), stream[items[r] * 10 + k]) << r << "," << k;
      EXPECT_EQ(b.targets[r][k].item<int64_t>(), stream[items[r] * 10 + k + 1]) << r << "," << k;
    }
  }
  // The last item ends on the file's last whole window: token 290..300.
  EXPECT_EQ(b.targets[2][9].item<int64_t>(), stream[300]);
}

TEST(TokenFileDatasetTest, TrainPathWithoutValHasNoTestSplit) {
  testing::TempDir dir;
  WriteTokens(dir.File("corpus.bin"), Stream(200));
  auto splits = DatasetRegistry::Load("tokens", {{"train", dir.File("corpus.bin")}}, 0);
  ASSERT_OK(splits);
  EXPECT_EQ(splits->test, nullptr);
  EXPECT_EQ(splits->spec.vocab_size, 65536);
  EXPECT_EQ(splits->spec.seq_len, 128);
  EXPECT_EQ(splits->train->size(), 1);  // 200 tokens: one window of 129
}

TEST(TokenFileDatasetTest, TrainAndValPaths) {
  testing::TempDir dir;
  WriteTokens(dir.File("a.bin"), {65535, 1, 2, 3, 4});
  WriteTokens(dir.File("b.bin"), {7, 8, 9});
  auto splits = DatasetRegistry::Load(
      "tokens", {{"train", dir.File("a.bin")}, {"val", dir.File("b.bin")}, {"seq_len", "2"}}, 0);
  ASSERT_OK(splits);
  EXPECT_EQ(splits->train->size(), 2);
  EXPECT_EQ(splits->test->size(), 1);
  const Batch b = splits->train->Get(torch::tensor({0}, torch::kInt64));
  EXPECT_EQ(b.inputs[0][0].item<int64_t>(), 65535);  // the largest id fits the default vocab
  const Batch t = splits->test->Get(torch::tensor({0}, torch::kInt64));
  EXPECT_TRUE(torch::equal(t.inputs, torch::tensor({{7, 8}}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(t.targets, torch::tensor({{8, 9}}, torch::kInt64)));
}

TEST(TokenFileDatasetTest, OutOfRangeItemThrows) {
  testing::TempDir dir;
  WriteTokens(dir.File("a.bin"), Stream(21));
  auto splits =
      DatasetRegistry::Load("tokens", {{"train", dir.File("a.bin")}, {"seq_len", "10"}}, 0);
  ASSERT_OK(splits);
  EXPECT_EQ(splits->train->size(), 2);
  EXPECT_THROW(splits->train->Get(torch::tensor({2}, torch::kInt64)), c10::Error);
  EXPECT_THROW(splits->train->Get(torch::tensor({-1}, torch::kInt64)), c10::Error);
}

TEST(TokenFileDatasetErrorsTest, MissingFilesAreFailedPreconditionAtValidate) {
  testing::TempDir dir;
  EXPECT_THAT(DatasetRegistry::Parse("tokens", {{"dir", dir.path()}}),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("dataset_options[dir]"), HasSubstr(dir.File("train.bin")),
                             HasSubstr("not found"))));
  WriteTokens(dir.File("train.bin"), Stream(300));
  EXPECT_THAT(DatasetRegistry::Parse("tokens", {{"dir", dir.path()}}),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(dir.File("val.bin"))));
  EXPECT_THAT(DatasetRegistry::Parse(
                  "tokens", {{"train", dir.File("train.bin")}, {"val", dir.File("nope.bin")}}),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("dataset_options[val]"), HasSubstr(dir.File("nope.bin")))));
}

TEST(TokenFileDatasetErrorsTest, OddByteSize) {
  testing::TempDir dir;
  std::ofstream(dir.File("odd.bin"), std::ios::binary) << std::string(301, '\1');
  const std::map<std::string, std::string> options = {{"train", dir.File("odd.bin")}};
  const auto matcher = StatusIs(
      absl::StatusCode::kInvalidArgument,
      AllOf(HasSubstr(dir.File("odd.bin")), HasSubstr("not a whole number of uint16 tokens")));
  EXPECT_THAT(DatasetRegistry::Parse("tokens", options), matcher);
  EXPECT_THAT(DatasetRegistry::Load("tokens", options, 0), matcher);
}

TEST(TokenFileDatasetErrorsTest, TooShortForOneWindow) {
  testing::TempDir dir;
  WriteTokens(dir.File("short.bin"), Stream(10));
  EXPECT_THAT(
      DatasetRegistry::Load("tokens", {{"train", dir.File("short.bin")}, {"seq_len", "10"}}, 0),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr(dir.File("short.bin")), HasSubstr("too short"),
                     HasSubstr("seq_len + 1 = 11"))));
  std::ofstream(dir.File("empty.bin"), std::ios::binary) << "";
  EXPECT_THAT(DatasetRegistry::Load("tokens", {{"train", dir.File("empty.bin")}}, 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("too short")));
}

TEST(TokenFileDatasetErrorsTest, TokenAtOrAboveVocabNamesOffsetAndId) {
  testing::TempDir dir;
  std::vector<int64_t> tokens = Stream(300);
  for (int64_t& t : tokens) t %= 500;
  tokens[123] = 700;
  WriteTokens(dir.File("train.bin"), tokens);
  WriteTokens(dir.File("val.bin"), Stream(200));  // scanned only after train
  const std::map<std::string, std::string> options = {{"dir", dir.path()}, {"vocab", "500"}};
  EXPECT_OK(DatasetRegistry::Parse("tokens", options));  // reads no tokens
  EXPECT_THAT(
      DatasetRegistry::Load("tokens", options, 0),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr(dir.File("train.bin")), HasSubstr("token 123 is >= vocab 500"),
                     Not(HasSubstr("700")), HasSubstr("vocab mismatch"))));
  // The val file is scanned too.
  tokens[123] = 499;
  WriteTokens(dir.File("train.bin"), tokens);
  WriteTokens(dir.File("val.bin"), {1, 2, 500});
  EXPECT_THAT(
      DatasetRegistry::Load("tokens", {{"dir", dir.path()}, {"vocab", "500"}, {"seq_len", "2"}}, 0),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr(dir.File("val.bin")), HasSubstr("token 2 is >= vocab 500"))));
}

TEST(TokenFileDatasetErrorsTest, BadOptions) {
  EXPECT_THAT(DatasetRegistry::Parse("tokens", {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("dir=DIR")));
  EXPECT_THAT(DatasetRegistry::Parse("tokens", {{"dir", "/x"}, {"train", "/x/a.bin"}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not both")));
  EXPECT_THAT(DatasetRegistry::Parse("tokens", {{"val", "/x/a.bin"}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("dataset_options[val]")));
  EXPECT_THAT(DatasetRegistry::Parse("tokens", {{"dir", "/x"}, {"vocab", "65537"}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("dataset_options[vocab]")));
  EXPECT_THAT(DatasetRegistry::Parse("tokens", {{"dir", "/x"}, {"seq_len", "0"}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("dataset_options[seq_len]")));
  // A misspelt key is reported before the missing one it explains.
  EXPECT_THAT(
      DatasetRegistry::Parse("tokens", {{"train_path", "/x/a.bin"}}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown option 'train_path'")));
}

}  // namespace
}  // namespace mantissa
