#include "server/data/csv_dataset.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "server/data/dataset_registry.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace mantissa {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::StatusIs;

std::string WriteCsv(const testing::TempDir& dir, const std::string& text,
                     const std::string& name = "data.csv") {
  const std::string path = dir.File(name);
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

// `rows` rows: a = i, b = 10 * i, label "cat"/"dog"/"emu" by i % 3.
std::string Animals(int rows) {
  std::string text = "a,b,species\n";
  const char* names[] = {"emu", "cat", "dog"};
  for (int i = 0; i < rows; ++i) absl::StrAppend(&text, i, ",", 10 * i, ",", names[i % 3], "\n");
  return text;
}

torch::Tensor All(const Dataset& d) { return torch::arange(d.size(), torch::kInt64); }

TEST(CsvDatasetTest, SplitsMapsStringLabelsAndStandardises) {
  testing::TempDir dir;
  const std::string path = WriteCsv(dir, Animals(40));
  auto splits = DatasetRegistry::Load("csv", {{"path", path}}, 5);
  ASSERT_OK(splits);
  EXPECT_EQ(splits->train->size(), 32);
  ASSERT_NE(splits->test, nullptr);
  EXPECT_EQ(splits->test->size(), 8);
  EXPECT_EQ(splits->spec.task, Task::kClassification);
  EXPECT_EQ(splits->spec.input_shape, std::vector<int64_t>{2});
  EXPECT_EQ(splits->spec.num_classes, 3);
  const Batch train = splits->train->Get(All(*splits->train));
  EXPECT_EQ(train.inputs.scalar_type(), torch::kFloat32);
  EXPECT_EQ(train.targets.scalar_type(), torch::kInt64);
  // Standardised with the training split's own statistics.
  EXPECT_TRUE(torch::allclose(train.inputs.mean(0), torch::zeros({2}), 1e-4, 1e-4));
  EXPECT_TRUE(torch::allclose(train.inputs.std(0, false), torch::ones({2}), 1e-4, 1e-4));
  // Both features scale the row index alike, so they stay equal after it.
  EXPECT_TRUE(torch::allclose(train.inputs.select(1, 0), train.inputs.select(1, 1), 1e-4, 1e-4));
}

TEST(CsvDatasetTest, UnnormalisedValuesAndLabelsMatchTheRows) {
  testing::TempDir dir;
  const std::string path = WriteCsv(dir, Animals(40));
  auto splits = DatasetRegistry::Load("csv", {{"path", path}, {"normalize", "false"}}, 5);
  ASSERT_OK(splits);
  std::vector<bool> seen(40, false);
  for (const Dataset* d : {splits->train.get(), splits->test.get()}) {
    const Batch b = d->Get(All(*d));
    for (int64_t r = 0; r < d->size(); ++r) {
      const int64_t i = static_cast<int64_t>(b.inputs[r][0].item<float>());
      ASSERT_GE(i, 0);
      ASSERT_LT(i, 40);
      EXPECT_FALSE(seen[i]) << "row " << i << " appears twice";
      seen[i] = true;
      EXPECT_EQ(b.inputs[r][1].item<float>(), 10.0f * i);
      // Sorted label names: cat = 0, dog = 1, emu = 2; row i is emu/cat/dog by i % 3.
      const int64_t expected[] = {2, 0, 1};
      EXPECT_EQ(b.targets[r].item<int64_t>(), expected[i % 3]) << "row " << i;
    }
  }
  EXPECT_EQ(std::count(seen.begin(), seen.end(), true), 40);
}

TEST(CsvDatasetTest, SplitIsDeterministicFromSeed) {
  testing::TempDir dir;
  const std::string path = WriteCsv(dir, Animals(40));
  const std::map<std::string, std::string> options = {{"path", path}, {"normalize", "false"}};
  auto a = DatasetRegistry::Load("csv", options, 1);
  auto b = DatasetRegistry::Load("csv", options, 1);
  auto c = DatasetRegistry::Load("csv", options, 2);
  ASSERT_OK(a);
  ASSERT_OK(b);
  ASSERT_OK(c);
  const torch::Tensor test_a = a->test->Get(All(*a->test)).inputs;
  EXPECT_TRUE(torch::equal(test_a, b->test->Get(All(*b->test)).inputs));
  EXPECT_FALSE(torch::equal(test_a, c->test->Get(All(*c->test)).inputs));
}

TEST(CsvDatasetTest, LabelColumnByNameIntegerLabelsAndClasses) {
  testing::TempDir dir;
  // CRLF line endings, blanks around fields, quotes and a trailing blank line.
  const std::string path = WriteCsv(dir,
                                    "\"y\", x1 ,x2\r\n"
                                    "0, 1.5, 2\r\n"
                                    "4, -1, 3e2\r\n"
                                    "2, 0, 0\r\n"
                                    "\r\n");
  auto splits = DatasetRegistry::Load(
      "csv", {{"path", path}, {"label", "y"}, {"test_fraction", "0"}, {"normalize", "false"}}, 0);
  ASSERT_OK(splits);
  EXPECT_EQ(splits->test, nullptr);
  EXPECT_EQ(splits->spec.input_shape, std::vector<int64_t>{2});
  EXPECT_EQ(splits->spec.num_classes, 5);  // integer labels used as they are: max + 1
  const Batch b = splits->train->Get(All(*splits->train));
  // Row order is the permutation's; find the row with label 4.
  const int64_t r = (b.targets == 4).nonzero().item<int64_t>();
  EXPECT_EQ(b.inputs[r][0].item<float>(), -1.0f);
  EXPECT_EQ(b.inputs[r][1].item<float>(), 300.0f);

  auto with_classes = DatasetRegistry::Load(
      "csv", {{"path", path}, {"label", "y"}, {"classes", "10"}, {"test_fraction", "0"}}, 0);
  ASSERT_OK(with_classes);
  EXPECT_EQ(with_classes->spec.num_classes, 10);
}

TEST(CsvDatasetTest, ScikitLearnIris) {
  const std::string path = std::string(MANTISSA_TEST_DATA_DIR) + "/iris.csv";
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    GTEST_SKIP() << path << " is absent: ctest's fetch_test_data fixture fetches it from "
                 << "Debian's python3-sklearn (offline here?)";
  }
  ASSERT_OK(DatasetRegistry::Parse("csv", {{"path", path}}));
  auto splits = DatasetRegistry::Load("csv", {{"path", path}, {"test_fraction", "0.2"}}, 1);
  ASSERT_OK(splits);
  EXPECT_EQ(splits->train->size(), 120);
  EXPECT_EQ(splits->test->size(), 30);
  EXPECT_EQ(splits->spec.input_shape, std::vector<int64_t>{4});
  EXPECT_EQ(splits->spec.num_classes, 3);
  const Batch test = splits->test->Get(All(*splits->test));
  EXPECT_EQ(test.inputs.sizes(), torch::IntArrayRef({30, 4}));
  EXPECT_GE(test.targets.min().item<int64_t>(), 0);
  EXPECT_LE(test.targets.max().item<int64_t>(), 2);
}

TEST(CsvDatasetErrorsTest, MissingFileIsFailedPreconditionAtValidate) {
  testing::TempDir dir;
  EXPECT_THAT(DatasetRegistry::Parse("csv", {{"path", dir.File("nope.csv")}}),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("dataset_options[path]"), HasSubstr(dir.File("nope.csv")))));
}

TEST(CsvDatasetErrorsTest, BadOptions) {
  testing::TempDir dir;
  const std::string path = WriteCsv(dir, Animals(5));
  EXPECT_THAT(DatasetRegistry::Parse("csv", {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("dataset_options[path]")));
  EXPECT_THAT(
      DatasetRegistry::Parse("csv", {{"path", path}, {"test_fraction", "1"}}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("dataset_options[test_fraction]")));
  EXPECT_THAT(
      DatasetRegistry::Parse("csv", {{"path", path}, {"normalize", "yes"}}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("dataset_options[normalize]")));
  EXPECT_THAT(DatasetRegistry::Parse("csv", {{"path", path}, {"classes", "1"}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("dataset_options[classes]")));
  EXPECT_THAT(DatasetRegistry::Parse("csv", {{"file", path}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown option 'file'")));
}

// Loads `text` with `options` (path added) and returns the status.
absl::Status LoadText(const std::string& text, std::map<std::string, std::string> options = {}) {
  testing::TempDir dir;
  options["path"] = WriteCsv(dir, text, "bad.csv");
  return DatasetRegistry::Load("csv", options, 0).status();
}

TEST(CsvDatasetErrorsTest, BadContentNamesFileLineAndColumn) {
  EXPECT_THAT(LoadText(""), StatusIs(absl::StatusCode::kInvalidArgument,
                                     AllOf(HasSubstr("bad.csv"), HasSubstr("is empty"))));
  EXPECT_THAT(LoadText("a,b,label\n\n"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("header but no data rows")));
  EXPECT_THAT(LoadText("a,b,label\n1,2,0\n", {{"label", "species"}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("no column 'species'"), HasSubstr("header has 3 columns"),
                             Not(HasSubstr("a, b")))));
  EXPECT_THAT(
      LoadText("a,b,c,d,label\n1,2,3,4,0\n\n1,2,0\n"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr("bad.csv"), HasSubstr("line 4 has 3 columns, the header has 5"))));
  EXPECT_THAT(LoadText("sepal_length,sepal_width,label\n1,2,0\n1,abc,1\n"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("bad.csv"), HasSubstr("line 3, column 2: not a number"),
                             Not(HasSubstr("abc")), Not(HasSubstr("sepal")))));
  EXPECT_THAT(LoadText("a,label\n,0\n"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("column 1: not a number")));
  EXPECT_THAT(LoadText("a,label\nnan,0\n"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a finite number")));
  EXPECT_THAT(LoadText("label\n0\n"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("a feature column")));
  EXPECT_THAT(LoadText("a,label\n1,0\n2,1\n3,5\n", {{"classes", "3"}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("line 4: the label is out of range for classes=3"),
                             Not(HasSubstr("label 5")))));
  EXPECT_THAT(
      LoadText("a,label\n1,x\n2,y\n3,z\n", {{"classes", "2"}}),
      StatusIs(absl::StatusCode::kInvalidArgument, AllOf(HasSubstr("line 4"), Not(HasSubstr("'z'")),
                                                         HasSubstr("out of range for classes=2"))));
  EXPECT_THAT(LoadText("a,label\n1,0\n2,1\n", {{"test_fraction", "0.9"}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("leave no training rows")));
}

// Found by tests/fuzz/csv_fuzzer: the number of classes was the largest
// label + 1, which overflowed for a label of 2^63 - 1.
TEST(CsvDatasetErrorsTest, LabelOverTheLargestClassIdIsInvalidArgument) {
  EXPECT_THAT(LoadText("a,label\n1,9223372036854775807\n2,1\n"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("line 2: the label is over the largest class id 16777215"),
                             Not(HasSubstr("922337")))));
  EXPECT_THAT(LoadText("a,label\n1,16777216\n2,1\n"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("largest class id")));
}

}  // namespace
}  // namespace mantissa
