#include "server/training/applied_step_counter.h"

#include <gtest/gtest.h>

namespace mantissa {
namespace {

constexpr OptimizerStepResult kApplied{.skipped = false, .skip_known = true};
constexpr OptimizerStepResult kSkipped{.skipped = true, .skip_known = true};
constexpr OptimizerStepResult kUnknown{.skipped = false, .skip_known = false};

TEST(AppliedStepCounterTest, KnownSkipsCountAtOnceAndReadsChangeNothing) {
  AppliedStepCounter counter(/*applied=*/10, /*skipped=*/3);
  counter.Add(kApplied);
  counter.Add(kSkipped);
  counter.Add(kApplied);
  EXPECT_EQ(counter.applied(), 12);
  // The scaler counted the same skip: the read confirms the count.
  counter.Correct(/*skipped=*/4);
  EXPECT_EQ(counter.applied(), 12);
  counter.Add(kSkipped);
  counter.Correct(5);
  EXPECT_EQ(counter.applied(), 12);
}

TEST(AppliedStepCounterTest, UnknownStepsCountAsAppliedUntilTheNextRead) {
  AppliedStepCounter counter(/*applied=*/0, /*skipped=*/0);
  for (int i = 0; i < 5; ++i) counter.Add(kUnknown);
  EXPECT_EQ(counter.applied(), 5);  // two of them were skipped on the device
  counter.Correct(/*skipped=*/2);
  EXPECT_EQ(counter.applied(), 3);
  // Only skips since the last read are taken back.
  for (int i = 0; i < 4; ++i) counter.Add(kUnknown);
  EXPECT_EQ(counter.applied(), 7);
  counter.Correct(/*skipped=*/3);
  EXPECT_EQ(counter.applied(), 6);
  counter.Correct(/*skipped=*/3);  // a second read without steps
  EXPECT_EQ(counter.applied(), 6);
}

TEST(AppliedStepCounterTest, AResumedRunStartsFromTheCheckpointsCounts) {
  // 100 steps, 7 skipped before the checkpoint; the scaler restored 7.
  AppliedStepCounter counter(/*applied=*/93, /*skipped=*/7);
  counter.Add(kUnknown);
  counter.Add(kUnknown);
  counter.Correct(/*skipped=*/8);
  EXPECT_EQ(counter.applied(), 94);
}

}  // namespace
}  // namespace mantissa
