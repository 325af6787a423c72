#include "client/arg_parser.h"

#include <optional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mantissa::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

struct Flags {
  std::optional<std::string> model;
  std::optional<int64_t> steps;
  std::optional<uint64_t> seed;
  std::optional<double> lr;
  bool wait = false;
  bool help = false;
  std::vector<std::string> options;
};

class ArgParserTest : public ::testing::Test {
 protected:
  ArgParserTest() {
    parser_.AddString("model", &flags_.model, "model", "NAME");
    parser_.AddInt("batch-size", &flags_.steps, "batch size");
    parser_.AddUint("seed", &flags_.seed, "seed");
    parser_.AddDouble("lr", &flags_.lr, "learning rate");
    parser_.AddBool("wait", &flags_.wait, "wait");
    parser_.AddBool("help", &flags_.help, "help");
    parser_.AddShortName('h', "help");
    parser_.AddRepeated("model-option", &flags_.options, "option", "KEY=VALUE");
  }

  Flags flags_;
  ArgParser parser_;
};

TEST_F(ArgParserTest, AcceptsBothValueForms) {
  auto positional = parser_.Parse({"--model=mlp", "--batch-size", "32", "--lr", "1e-3"});
  ASSERT_TRUE(positional.ok()) << positional.status();
  EXPECT_THAT(*positional, IsEmpty());
  EXPECT_EQ(flags_.model, "mlp");
  EXPECT_EQ(flags_.steps, 32);
  EXPECT_DOUBLE_EQ(flags_.lr.value(), 1e-3);
}

TEST_F(ArgParserTest, LeavesFlagsThatDoNotAppearUnset) {
  ASSERT_TRUE(parser_.Parse({"--model", "mlp"}).ok());
  EXPECT_FALSE(flags_.steps.has_value());
  EXPECT_FALSE(flags_.lr.has_value());
  EXPECT_FALSE(flags_.seed.has_value());
  EXPECT_FALSE(flags_.wait);
}

TEST_F(ArgParserTest, CollectsPositionalArgumentsAroundFlags) {
  auto positional = parser_.Parse({"abc", "--wait", "def"});
  ASSERT_TRUE(positional.ok());
  EXPECT_THAT(*positional, ElementsAre("abc", "def"));
  EXPECT_TRUE(flags_.wait);
}

TEST_F(ArgParserTest, DoubleDashEndsFlags) {
  auto positional = parser_.Parse({"--", "--wait"});
  ASSERT_TRUE(positional.ok());
  EXPECT_THAT(*positional, ElementsAre("--wait"));
  EXPECT_FALSE(flags_.wait);
}

TEST_F(ArgParserTest, StopAtPositionalLeavesTheRestUnparsed) {
  parser_.set_stop_at_positional(true);
  auto positional = parser_.Parse({"--wait", "submit", "--unknown", "x"});
  ASSERT_TRUE(positional.ok()) << positional.status();
  EXPECT_THAT(*positional, ElementsAre("submit", "--unknown", "x"));
  EXPECT_TRUE(flags_.wait);
}

TEST_F(ArgParserTest, RepeatedFlagAppendsEveryValue) {
  ASSERT_TRUE(parser_.Parse({"--model-option", "a=1", "--model-option=b=2=3"}).ok());
  EXPECT_THAT(flags_.options, ElementsAre("a=1", "b=2=3"));
}

TEST_F(ArgParserTest, BoolTakesAnOptionalExplicitValue) {
  ASSERT_TRUE(parser_.Parse({"--wait=true", "--help=false"}).ok());
  EXPECT_TRUE(flags_.wait);
  EXPECT_FALSE(flags_.help);
  auto bad = parser_.Parse({"--wait=maybe"});
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("--wait"));
}

TEST(ArgParserOptionalBoolTest, UnsetUnlessGivenAndExplicitFalseIsKept) {
  std::optional<bool> scaler;
  ArgParser parser;
  parser.AddBool("grad-scaler-enabled", &scaler, "scaler");
  ASSERT_TRUE(parser.Parse({}).ok());
  EXPECT_FALSE(scaler.has_value());
  auto positional = parser.Parse({"--grad-scaler-enabled", "job1"});
  ASSERT_TRUE(positional.ok()) << positional.status();
  EXPECT_THAT(*positional, ElementsAre("job1"));
  EXPECT_EQ(scaler, true);
  ASSERT_TRUE(parser.Parse({"--grad-scaler-enabled=false"}).ok());
  EXPECT_EQ(scaler, false);
  ASSERT_TRUE(parser.Parse({"--grad-scaler-enabled=yes"}).ok());
  EXPECT_EQ(scaler, true);
  auto bad = parser.Parse({"--grad-scaler-enabled=off"});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), "--grad-scaler-enabled: 'off' is not true or false");
  EXPECT_THAT(parser.Help(), HasSubstr("  --grad-scaler-enabled  scaler\n"));
}

TEST_F(ArgParserTest, BoolDoesNotConsumeTheNextArgument) {
  auto positional = parser_.Parse({"--wait", "job1"});
  ASSERT_TRUE(positional.ok());
  EXPECT_THAT(*positional, ElementsAre("job1"));
}

TEST_F(ArgParserTest, ShortNameAliasesItsFlag) {
  ASSERT_TRUE(parser_.Parse({"-h"}).ok());
  EXPECT_TRUE(flags_.help);
}

TEST_F(ArgParserTest, ValueMayStartWithADash) {
  ASSERT_TRUE(parser_.Parse({"--lr", "-0.5"}).ok());
  EXPECT_DOUBLE_EQ(flags_.lr.value(), -0.5);
}

TEST_F(ArgParserTest, UnknownFlagIsNamed) {
  auto result = parser_.Parse({"--model=mlp", "--bogus=1"});
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(result.status().message(), "unknown flag --bogus");
}

TEST_F(ArgParserTest, UnknownShortFlagIsNamed) {
  auto result = parser_.Parse({"-x"});
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().message(), "unknown flag -x");
}

TEST_F(ArgParserTest, UnknownFlagCarriesTheHint) {
  parser_.set_unknown_flag_hint("Flags of submit: --model");
  auto result = parser_.Parse({"--bogus"});
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().message(), "unknown flag --bogus\nFlags of submit: --model");
}

TEST_F(ArgParserTest, FlagNamesKeepTheOrderOfDefinition) {
  EXPECT_THAT(parser_.FlagNames(), ElementsAre("--model", "--batch-size", "--seed", "--lr",
                                               "--wait", "--help", "--model-option"));
}

TEST_F(ArgParserTest, SuggestsTheKebabCaseSpelling) {
  auto result = parser_.Parse({"--batch_size=3"});
  ASSERT_FALSE(result.ok());
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("did you mean --batch-size?"));
}

TEST_F(ArgParserTest, MissingValueIsAnError) {
  auto result = parser_.Parse({"--model"});
  ASSERT_FALSE(result.ok());
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("--model needs a value"));
}

TEST_F(ArgParserTest, NonNumbersAreErrorsNamingTheFlag) {
  auto not_int = parser_.Parse({"--batch-size=ten"});
  ASSERT_FALSE(not_int.ok());
  EXPECT_EQ(not_int.status().message(), "--batch-size: 'ten' is not an integer");

  auto fraction = parser_.Parse({"--batch-size=1.5"});
  EXPECT_FALSE(fraction.ok());

  auto not_double = parser_.Parse({"--lr=fast"});
  ASSERT_FALSE(not_double.ok());
  EXPECT_EQ(not_double.status().message(), "--lr: 'fast' is not a number");

  EXPECT_FALSE(parser_.Parse({"--lr=nan"}).ok());
}

TEST_F(ArgParserTest, UnsignedRejectsNegativeValues) {
  auto result = parser_.Parse({"--seed=-1"});
  ASSERT_FALSE(result.ok());
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("--seed"));
  ASSERT_TRUE(parser_.Parse({"--seed=18446744073709551615"}).ok());
  EXPECT_EQ(flags_.seed, 18446744073709551615u);
}

TEST_F(ArgParserTest, NegativeIntegersParse) {
  ASSERT_TRUE(parser_.Parse({"--batch-size=-4"}).ok());
  EXPECT_EQ(flags_.steps, -4);
}

TEST_F(ArgParserTest, HelpListsFlagsAligned) {
  const std::string help = parser_.Help();
  EXPECT_THAT(help, HasSubstr("  --model=NAME "));
  EXPECT_THAT(help, HasSubstr("  --batch-size=N "));
  EXPECT_THAT(help, HasSubstr("  -h, --help "));
  EXPECT_THAT(help, HasSubstr("  --model-option=KEY=VALUE  option\n"));
  // Every help text starts in the same column.
  EXPECT_NE(help.find("--wait                    wait\n"), std::string::npos) << help;
}

}  // namespace
}  // namespace mantissa::cli
