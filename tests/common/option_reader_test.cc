#include "server/common/option_reader.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "google/protobuf/map.h"
#include "mantissa/v1/training.pb.h"
#include "tests/testing/status_matchers.h"

namespace mantissa {
namespace {

using ::mantissa::testing::IsOk;
using ::mantissa::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

using Options = std::map<std::string, std::string>;

TEST(OptionReaderTest, MissingKeysYieldDefaults) {
  OptionReader reader("model_options", Options{});
  EXPECT_EQ(*reader.Int("layers", 2, 1), 2);
  EXPECT_DOUBLE_EQ(*reader.Double("dropout", 0.25), 0.25);
  EXPECT_EQ(*reader.String("activation", "relu"), "relu");
  EXPECT_EQ(*reader.Choice("norm", "none", {"none", "layer"}), "none");
  EXPECT_THAT(*reader.IntList("hidden", {256, 128}), ElementsAre(256, 128));
  EXPECT_OK(reader.CheckAllUsed());
}

TEST(OptionReaderTest, ParsesPresentValues) {
  OptionReader reader("model_options", Options{{"layers", "4"},
                                               {"dropout", "0.5"},
                                               {"activation", "gelu"},
                                               {"norm", "layer"},
                                               {"hidden", "512, 64,8"}});
  EXPECT_EQ(*reader.Int("layers", 2, 1, 10), 4);
  EXPECT_DOUBLE_EQ(*reader.Double("dropout", 0.0), 0.5);
  EXPECT_EQ(*reader.String("activation", "relu"), "gelu");
  EXPECT_EQ(*reader.Choice("norm", "none", {"none", "layer"}), "layer");
  EXPECT_THAT(*reader.IntList("hidden", {}), ElementsAre(512, 64, 8));
  EXPECT_OK(reader.CheckAllUsed());
}

TEST(OptionReaderTest, AcceptsProtoMap) {
  v1::JobSpec spec;
  (*spec.mutable_model_options())["layers"] = "3";
  OptionReader reader("model_options", spec.model_options());
  EXPECT_EQ(*reader.Int("layers", 1), 3);
  EXPECT_OK(reader.CheckAllUsed());
}

TEST(OptionReaderTest, IntAcceptsBoundsInclusive) {
  OptionReader reader("dataset_options", Options{{"lo", "1"}, {"hi", "10"}, {"neg", "-5"}});
  EXPECT_EQ(*reader.Int("lo", 0, 1, 10), 1);
  EXPECT_EQ(*reader.Int("hi", 0, 1, 10), 10);
  EXPECT_EQ(*reader.Int("neg", 0), -5);
}

TEST(OptionReaderTest, IntBelowMinimumNamesFieldKeyAndValue) {
  OptionReader reader("model_options", Options{{"layers", "0"}});
  EXPECT_THAT(
      reader.Int("layers", 2, /*min_value=*/1),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr("model_options[layers]"), HasSubstr("'0'"), HasSubstr("[1, inf]"))));
}

TEST(OptionReaderTest, IntAboveMaximumShowsRange) {
  OptionReader reader("dataset_options", Options{{"classes", "11"}});
  EXPECT_THAT(
      reader.Int("classes", 10, 2, 10),
      StatusIs(absl::StatusCode::kInvalidArgument, AllOf(HasSubstr("dataset_options[classes]"),
                                                         HasSubstr("'11'"), HasSubstr("[2, 10]"))));
}

TEST(OptionReaderTest, IntRejectsNonIntegers) {
  for (const std::string bad : {"abc", "1.5", "", "3x", "99999999999999999999"}) {
    OptionReader reader("model_options", Options{{"layers", bad}});
    EXPECT_THAT(reader.Int("layers", 2),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(HasSubstr("model_options[layers]"), HasSubstr("'" + bad + "'"),
                               HasSubstr("integer"))))
        << "value: " << bad;
  }
}

TEST(OptionReaderTest, DoubleRejectsNonNumbers) {
  OptionReader reader("model_options", Options{{"dropout", "half"}});
  EXPECT_THAT(reader.Double("dropout", 0.0),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("model_options[dropout]"), HasSubstr("'half'"),
                             HasSubstr("number"))));
}

TEST(OptionReaderTest, DoubleParsesScientificNotation) {
  OptionReader reader("model_options", Options{{"eps", "1e-3"}});
  EXPECT_DOUBLE_EQ(*reader.Double("eps", 0.0), 1e-3);
}

TEST(OptionReaderTest, ChoiceErrorListsChoices) {
  OptionReader reader("model_options", Options{{"activation", "swish"}});
  EXPECT_THAT(reader.Choice("activation", "relu", {"relu", "gelu", "tanh"}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("model_options[activation]"), HasSubstr("'swish'"),
                             HasSubstr("relu|gelu|tanh"))));
}

TEST(OptionReaderTest, ChoiceIsCaseSensitive) {
  OptionReader reader("model_options", Options{{"activation", "RELU"}});
  EXPECT_THAT(reader.Choice("activation", "relu", {"relu", "gelu"}), Not(IsOk()));
}

TEST(OptionReaderTest, IntListSkipsBlankParts) {
  OptionReader reader("model_options", Options{{"hidden", " 32 ,,16 "}});
  EXPECT_THAT(*reader.IntList("hidden", {1}), ElementsAre(32, 16));
}

TEST(OptionReaderTest, IntListSingleValue) {
  OptionReader reader("model_options", Options{{"hidden", "7"}});
  EXPECT_THAT(*reader.IntList("hidden", {1}), ElementsAre(7));
}

TEST(OptionReaderTest, IntListRejectsNonPositiveAndGarbage) {
  for (const std::string bad : {"256,0", "256,-1", "256,abc", "1.5", "12;4"}) {
    OptionReader reader("model_options", Options{{"hidden", bad}});
    EXPECT_THAT(reader.IntList("hidden", {}),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(HasSubstr("model_options[hidden]"), HasSubstr("'" + bad + "'"),
                               HasSubstr("positive integers"))))
        << "value: " << bad;
  }
}

TEST(OptionReaderTest, CheckAllUsedRejectsUnknownKeyAndListsValidKeys) {
  OptionReader reader("model_options", Options{{"hiden", "128"}, {"layers", "2"}});
  ASSERT_OK(reader.Int("layers", 1).status());
  ASSERT_OK(reader.IntList("hidden", {64}).status());
  EXPECT_THAT(reader.CheckAllUsed(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("model_options"), HasSubstr("'hiden'"), HasSubstr("hidden"),
                             HasSubstr("layers"))));
}

TEST(OptionReaderTest, CheckAllUsedWithNothingReadSaysNone) {
  OptionReader reader("dataset_options", Options{{"size", "10"}});
  EXPECT_THAT(reader.CheckAllUsed(), StatusIs(absl::StatusCode::kInvalidArgument,
                                              AllOf(HasSubstr("dataset_options"),
                                                    HasSubstr("'size'"), HasSubstr("none"))));
}

TEST(OptionReaderTest, KeyReadWithBadValueStillCountsAsKnown) {
  OptionReader reader("model_options", Options{{"layers", "x"}});
  EXPECT_THAT(reader.Int("layers", 1), Not(IsOk()));
  EXPECT_OK(reader.CheckAllUsed());
}

}  // namespace
}  // namespace mantissa
