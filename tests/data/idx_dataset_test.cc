#include "server/data/idx_dataset.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdio>
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

std::string BigEndian(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

// An IDX file of `n` 2x3 images whose pixels are the item index, or labels i % 10.
std::string IdxBytes(bool images, uint32_t n, uint8_t label_offset = 0) {
  std::string bytes = std::string("\0\0\x08", 3) + static_cast<char>(images ? 3 : 1);
  bytes += BigEndian(n);
  if (images) bytes += BigEndian(2) + BigEndian(3);
  for (uint32_t i = 0; i < n; ++i) {
    if (images) {
      bytes += std::string(6, static_cast<char>(i));
    } else {
      bytes += static_cast<char>(i % 10 + label_offset);
    }
  }
  return bytes;
}

void WriteFile(const std::string& path, const std::string& bytes, bool gzip) {
  if (gzip) {
    gzFile f = gzopen((path + ".gz").c_str(), "wb");
    gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
    gzclose(f);
  } else {
    std::ofstream(path, std::ios::binary) << bytes;
  }
}

void WriteDataset(const std::string& dir, uint32_t train, uint32_t test, bool gzip) {
  WriteFile(dir + "/train-images-idx3-ubyte", IdxBytes(true, train), gzip);
  WriteFile(dir + "/train-labels-idx1-ubyte", IdxBytes(false, train), gzip);
  WriteFile(dir + "/t10k-images-idx3-ubyte", IdxBytes(true, test), gzip);
  WriteFile(dir + "/t10k-labels-idx1-ubyte", IdxBytes(false, test), gzip);
}

class IdxDatasetTest : public ::testing::TestWithParam<bool> {};

TEST_P(IdxDatasetTest, LoadsAnyNumberOfItemsPlainOrGzipped) {
  testing::TempDir dir;
  WriteDataset(dir.path(), 37, 11, /*gzip=*/GetParam());
  auto splits = DatasetRegistry::Load("fashion-mnist", {{"dir", dir.path()}}, 0);
  ASSERT_OK(splits);
  EXPECT_EQ(splits->train->size(), 37);
  EXPECT_EQ(splits->test->size(), 11);
  EXPECT_EQ(splits->spec.input_shape, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(splits->spec.num_classes, 10);
  Batch batch = splits->train->Get(torch::tensor({12, 0}, torch::kInt64));
  EXPECT_EQ(batch.inputs.sizes(), torch::IntArrayRef({2, 1, 2, 3}));
  EXPECT_EQ(batch.inputs.scalar_type(), torch::kFloat32);
  // Pixel 12 normalised with Fashion-MNIST's statistics.
  EXPECT_NEAR(batch.inputs[0][0][0][0].item<float>(), (12.0f / 255.0f - 0.2860f) / 0.3530f, 1e-5);
  EXPECT_EQ(batch.targets[0].item<int64_t>(), 2);
  EXPECT_EQ(batch.targets.scalar_type(), torch::kInt64);
}

INSTANTIATE_TEST_SUITE_P(PlainAndGzip, IdxDatasetTest, ::testing::Bool());

TEST(IdxDatasetErrorsTest, LimitsKeepTheFirstItems) {
  testing::TempDir dir;
  WriteDataset(dir.path(), 50, 20, true);
  auto splits = DatasetRegistry::Load(
      "fashion-mnist", {{"dir", dir.path()}, {"train_limit", "5"}, {"test_limit", "3"}}, 0);
  ASSERT_OK(splits);
  EXPECT_EQ(splits->train->size(), 5);
  EXPECT_EQ(splits->test->size(), 3);
}

TEST(IdxDatasetTest, MnistUsesMnistNormalisation) {
  testing::TempDir dir;
  WriteDataset(dir.path(), 20, 5, /*gzip=*/true);
  auto splits = DatasetRegistry::Load("mnist", {{"dir", dir.path()}}, 0);
  ASSERT_OK(splits);
  EXPECT_EQ(splits->train->size(), 20);
  EXPECT_EQ(splits->test->size(), 5);
  EXPECT_EQ(splits->spec.input_shape, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(splits->spec.num_classes, 10);
  Batch batch = splits->test->Get(torch::tensor({3}, torch::kInt64));
  EXPECT_NEAR(batch.inputs[0][0][1][2].item<float>(), (3.0f / 255.0f - 0.1307f) / 0.3081f, 1e-5);
  EXPECT_EQ(batch.targets[0].item<int64_t>(), 3);
}

TEST(IdxDatasetErrorsTest, MissingFilesNameThePath) {
  testing::TempDir dir;
  EXPECT_THAT(DatasetRegistry::Parse("fashion-mnist", {{"dir", dir.path()}}),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr(dir.path() + "/train-images-idx3-ubyte"),
                             HasSubstr("apt-get install dataset-fashion-mnist"))));
  // Only some files: the first missing one is named.
  WriteDataset(dir.path(), 3, 2, false);
  ASSERT_EQ(std::remove((dir.path() + "/t10k-labels-idx1-ubyte").c_str()), 0);
  EXPECT_THAT(DatasetRegistry::Parse("mnist", {{"dir", dir.path()}}),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr(dir.path() + "/t10k-labels-idx1-ubyte")));
}

TEST(IdxDatasetErrorsTest, MissingMnistSaysNoPackageShipsIt) {
  // The default dir, which no Debian package fills.
  const absl::Status status = DatasetRegistry::Parse("mnist", {}).status();
  if (status.ok()) GTEST_SKIP() << "MNIST is installed in /usr/share/datasets/mnist";
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kFailedPrecondition,
                               AllOf(HasSubstr("/usr/share/datasets/mnist/"),
                                     HasSubstr("no Debian package ships MNIST"),
                                     HasSubstr("dataset_options dir="))));
}

TEST(IdxDatasetErrorsTest, UnknownOptionIsRejected) {
  EXPECT_THAT(
      DatasetRegistry::Parse("mnist", {{"directory", "/x"}}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown option 'directory'")));
}

TEST(IdxDatasetErrorsTest, TruncatedFileIsDataLoss) {
  testing::TempDir dir;
  WriteDataset(dir.path(), 10, 4, false);
  std::string bytes = IdxBytes(true, 10);
  WriteFile(dir.path() + "/train-images-idx3-ubyte", bytes.substr(0, bytes.size() - 7), false);
  EXPECT_THAT(
      DatasetRegistry::Load("fashion-mnist", {{"dir", dir.path()}}, 0),
      StatusIs(absl::StatusCode::kDataLoss, HasSubstr("train-images-idx3-ubyte: truncated")));
}

TEST(IdxDatasetErrorsTest, WrongMagicIsInvalidArgument) {
  testing::TempDir dir;
  WriteDataset(dir.path(), 10, 4, false);
  // Labels where images belong: one dimension instead of three.
  WriteFile(dir.path() + "/train-images-idx3-ubyte", IdxBytes(false, 10), false);
  EXPECT_THAT(DatasetRegistry::Load("fashion-mnist", {{"dir", dir.path()}}, 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bad IDX magic")));
}

TEST(IdxDatasetErrorsTest, LabelOutOfRangeIsInvalidArgument) {
  testing::TempDir dir;
  WriteDataset(dir.path(), 10, 4, false);
  WriteFile(dir.path() + "/t10k-labels-idx1-ubyte", IdxBytes(false, 4, /*label_offset=*/200),
            false);
  // The offending label is the file's content: not quoted.
  EXPECT_THAT(DatasetRegistry::Load("fashion-mnist", {{"dir", dir.path()}}, 0),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("out of range"), Not(HasSubstr("label 2")))));
}

TEST(IdxDatasetErrorsTest, MismatchedCountsAreInvalidArgument) {
  testing::TempDir dir;
  WriteDataset(dir.path(), 10, 4, false);
  WriteFile(dir.path() + "/train-labels-idx1-ubyte", IdxBytes(false, 9), false);
  EXPECT_THAT(DatasetRegistry::Load("fashion-mnist", {{"dir", dir.path()}}, 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("10 images but")));
}

// Found by tests/fuzz/idx_fuzzer: the header's dimensions were allocated
// before the data was read, so a few bytes could claim terabytes.
TEST(IdxDatasetErrorsTest, HeaderClaimingMoreThanTheFileHoldsIsDataLoss) {
  testing::TempDir dir;
  const std::string path = dir.File("train-images-idx3-ubyte");
  // (2^32 - 1)^3 pixels: the byte count overflows int64.
  WriteFile(path,
            std::string("\0\0\x08\x03", 4) + BigEndian(0xffffffff) + BigEndian(0xffffffff) +
                BigEndian(0xffffffff) + "x",
            false);
  EXPECT_THAT(IdxDataset::ReadIdx(path, 3, 0),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("more bytes than the file holds")));
  // 60000 28x28 images (47 MB) claimed by a gzipped file of a few dozen bytes.
  WriteFile(path, std::string("\0\0\x08\x03", 4) + BigEndian(60000) + BigEndian(28) + BigEndian(28),
            true);
  EXPECT_THAT(IdxDataset::ReadIdx(path + ".gz", 3, 0),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("more bytes than the file holds")));
  // The limit is what gets allocated: two images fit in what the file holds.
  WriteFile(path, IdxBytes(true, 2).replace(4, 4, BigEndian(1000000)), false);
  auto two = IdxDataset::ReadIdx(path, 3, 2);
  ASSERT_OK(two);
  EXPECT_EQ(two->sizes(), torch::IntArrayRef({2, 2, 3}));
}

}  // namespace
}  // namespace mantissa
