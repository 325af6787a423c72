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

}  // namespace
}  // namespace mantissa
