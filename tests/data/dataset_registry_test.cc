#include "server/data/dataset_registry.h"

#include <gtest/gtest.h>

#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace mantissa {
namespace {

using ::testing::HasSubstr;
using testing::StatusIs;

TEST(DatasetRegistryTest, EveryRowHasANameHelpAndParser) {
  ASSERT_EQ(DatasetRegistry::Names().size(), DatasetRegistry::Entries().size());
  for (const DatasetEntry& entry : DatasetRegistry::Entries()) {
    SCOPED_TRACE(entry.name);
    EXPECT_NE(std::string(entry.help), "");
    EXPECT_NE(entry.parse, nullptr);
    EXPECT_EQ(DatasetRegistry::Find(entry.name), &entry);
  }
  EXPECT_EQ(DatasetRegistry::Find("cifar"), nullptr);
}

// What Parse accepts, Load loads, with the spec the config was parsed for.
TEST(DatasetRegistryTest, GeneratedDatasetsParseTheirOptionsOnceAndLoad) {
  auto synthetic = DatasetRegistry::Parse(
      "synthetic", {{"train_size", "64"}, {"test_size", "16"}, {"features", "5"}});
  ASSERT_OK(synthetic);
  EXPECT_EQ((*synthetic)->name(), "synthetic");
  EXPECT_OK((*synthetic)->CheckFiles());
  auto splits = (*synthetic)->Load(/*seed=*/3);
  ASSERT_OK(splits);
  EXPECT_EQ(splits->train->size(), 64);
  EXPECT_EQ(splits->spec.input_shape, std::vector<int64_t>{5});

  auto tokens = DatasetRegistry::Parse(
      "synthetic-tokens", {{"train_tokens", "200"}, {"test_tokens", "0"}, {"seq_len", "8"}});
  ASSERT_OK(tokens);
  auto windows = (*tokens)->Load(/*seed=*/3);
  ASSERT_OK(windows);
  EXPECT_EQ(windows->spec.task, Task::kLanguageModel);
  EXPECT_EQ(windows->spec.seq_len, 8);
  EXPECT_EQ(windows->test, nullptr);
}

TEST(DatasetRegistryTest, FileDatasetsCheckTheirFilesWhenParsed) {
  testing::TempDir dir;
  EXPECT_THAT(DatasetRegistry::Parse("csv", {{"path", dir.File("missing.csv")}}),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("missing.csv")));
  EXPECT_THAT(DatasetRegistry::Parse("fashion-mnist", {{"dir", dir.path()}}),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("dataset-fashion-mnist")));
  EXPECT_THAT(DatasetRegistry::Parse("tokens", {{"dir", dir.path()}}),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("train.bin")));
}

TEST(DatasetRegistryTest, OnlyFileDatasetsHavePathsToConfine) {
  const FileRoots none;  // every path refused
  for (const DatasetEntry& entry : DatasetRegistry::Entries()) {
    SCOPED_TRACE(entry.name);
    const std::map<std::string, std::string> options = {
        {"path", "/etc/passwd"}, {"dir", "/etc"}, {"train", "/etc/passwd"}};
    auto confined = DatasetRegistry::ConfinePaths(entry.name, options, none);
    if (entry.confine_paths == nullptr) {
      ASSERT_OK(confined);
      EXPECT_EQ(*confined, options);
    } else {
      EXPECT_THAT(confined,
                  StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("dataset_options[")));
    }
  }
  // Unknown names are Parse's to refuse.
  EXPECT_OK(DatasetRegistry::ConfinePaths("cifar", {{"path", "/etc"}}, none));
}

}  // namespace
}  // namespace mantissa
