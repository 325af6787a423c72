#include "server/training/lr_schedule.h"

#include <gtest/gtest.h>

#include <cmath>

#include "tests/testing/status_matchers.h"

namespace mantissa {
namespace {

using ::testing::HasSubstr;
using testing::StatusIs;

TEST(LrScheduleTest, ConstantIsConstant) {
  auto s = LrSchedule::Create({.kind = "constant", .base_lr = 0.1, .total_steps = 10});
  ASSERT_OK(s);
  EXPECT_DOUBLE_EQ(s->LrAt(0), 0.1);
  EXPECT_DOUBLE_EQ(s->LrAt(9), 0.1);
}

TEST(LrScheduleTest, WarmupThenCosineToMinLr) {
  auto s = LrSchedule::Create(
      {.kind = "cosine", .base_lr = 1.0, .warmup_steps = 4, .total_steps = 104, .min_lr = 0.1});
  ASSERT_OK(s);
  EXPECT_DOUBLE_EQ(s->LrAt(0), 0.25);  // linear warmup
  EXPECT_DOUBLE_EQ(s->LrAt(3), 1.0);
  EXPECT_DOUBLE_EQ(s->LrAt(4), 1.0);  // decay starts at the peak
  EXPECT_NEAR(s->LrAt(54), 0.1 + 0.45 * (1 + std::cos(M_PI * 0.5)), 1e-12);  // halfway
  EXPECT_DOUBLE_EQ(s->LrAt(104), 0.1);
  EXPECT_DOUBLE_EQ(s->LrAt(500), 0.1);  // stays at min_lr past the end
}

TEST(LrScheduleTest, BadSettingsNameTheField) {
  EXPECT_THAT(LrSchedule::Create({.kind = "step"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("constant, cosine")));
  EXPECT_THAT(LrSchedule::Create({.kind = "cosine", .warmup_steps = -1}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("warmup_steps")));
  EXPECT_THAT(LrSchedule::Create({.kind = "cosine", .base_lr = 0.1, .min_lr = 0.2}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("min_lr")));
}

TEST(LrScheduleTest, CheckOptionsIsCreatesCheck) {
  const LrSchedule::Options bad[] = {
      {.kind = "step"}, {.kind = "cosine", .warmup_steps = -1}, {.base_lr = 0.1, .min_lr = 0.2}};
  for (const LrSchedule::Options& options : bad) {
    EXPECT_EQ(LrSchedule::CheckOptions(options), LrSchedule::Create(options).status());
  }
  EXPECT_OK(LrSchedule::CheckOptions({.kind = ""}));  // "" is constant
  auto s = LrSchedule::Create({.kind = "", .base_lr = 0.5, .total_steps = 0});
  ASSERT_OK(s);
  EXPECT_EQ(s->options().kind, "constant");
  EXPECT_EQ(s->options().total_steps, 1);
}

// Every schedule starts from warmup (none by default) at base_lr and never
// goes below min_lr or above base_lr.
TEST(LrScheduleTest, EveryKindStaysWithinItsBounds) {
  ASSERT_EQ(LrSchedule::Kinds().size(), LrSchedule::Table().size());
  for (const LrSchedule::Kind& kind : LrSchedule::Table()) {
    SCOPED_TRACE(kind.name);
    EXPECT_NE(std::string(kind.help), "");
    auto s =
        LrSchedule::Create({.kind = kind.name, .base_lr = 1.0, .total_steps = 20, .min_lr = 0.1});
    ASSERT_OK(s);
    EXPECT_DOUBLE_EQ(s->LrAt(0), 1.0);
    for (int64_t step = 0; step < 40; ++step) {
      EXPECT_GE(s->LrAt(step), 0.1 - 1e-12);
      EXPECT_LE(s->LrAt(step), 1.0 + 1e-12);
    }
  }
}

}  // namespace
}  // namespace mantissa
