#include "client/progress_bar.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/client/test_jobs.h"

namespace mantissa::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

TEST(ProgressBarTest, PlainLine) {
  EXPECT_EQ(FormatProgressLine(RunningJob()), "step 100/938 epoch 1/1 loss 0.5123 12345 items/s");
}

TEST(ProgressBarTest, PlainLineWithoutTotals) {
  v1::Job job;
  job.mutable_progress()->set_step(3);
  job.mutable_progress()->set_epoch(2);
  job.mutable_progress()->set_loss(1.5);
  EXPECT_EQ(FormatProgressLine(job), "step 3 epoch 2 loss 1.5000");
}

TEST(ProgressBarTest, EtaFromStepTime) {
  // 838 steps left at 5 ms each.
  EXPECT_DOUBLE_EQ(EstimateRemainingSeconds(RunningJob()).value(), 838 * 0.005);
}

TEST(ProgressBarTest, EtaFromThroughputWhenStepTimeIsMissing) {
  v1::Job job = RunningJob();
  job.mutable_progress()->set_step_seconds(0);
  job.mutable_progress()->set_items_per_second(640);  // 10 steps of 64 per second
  EXPECT_DOUBLE_EQ(EstimateRemainingSeconds(job).value(), 83.8);
}

TEST(ProgressBarTest, EtaUnknownWithoutTotalOrPace) {
  v1::Job job = RunningJob();
  job.mutable_progress()->set_total_steps(0);
  EXPECT_FALSE(EstimateRemainingSeconds(job).has_value());
  job = RunningJob();
  job.mutable_progress()->set_step_seconds(0);
  job.mutable_progress()->set_items_per_second(0);
  EXPECT_FALSE(EstimateRemainingSeconds(job).has_value());
}

TEST(ProgressBarTest, BarOnAWideTerminal) {
  const std::string bar = RenderProgressBar(RunningJob(), 120);
  // 100/938 of 30 cells rounds to 3.
  EXPECT_EQ(bar,
            "[###---------------------------]  10.7% 100/938 epoch 1/1 loss 0.5123 12345 items/s "
            "ETA 4.2s");
}

TEST(ProgressBarTest, BarShrinksToFitAndNeverFillsTheLastColumn) {
  for (int width : {100, 80, 70, 60, 40, 20, 5, 1}) {
    const std::string bar = RenderProgressBar(RunningJob(), width);
    EXPECT_LE(static_cast<int>(bar.size()), std::max(width - 1, 1)) << width;
  }
  const std::string narrow = RenderProgressBar(RunningJob(), 80);
  EXPECT_THAT(narrow, StartsWith("[##-"));
  EXPECT_EQ(narrow.size(), 79u);
}

TEST(ProgressBarTest, TooNarrowForABarKeepsTheNumbers) {
  const std::string bar = RenderProgressBar(RunningJob(), 70);
  EXPECT_THAT(bar, StartsWith(" 10.7% 100/938"));
}

TEST(ProgressBarTest, FullAndOverfullBars) {
  v1::Job job = RunningJob();
  job.mutable_progress()->set_step(938);
  EXPECT_THAT(RenderProgressBar(job, 120), StartsWith("[" + std::string(30, '#') + "] 100.0%"));
  EXPECT_THAT(RenderProgressBar(job, 120), Not(HasSubstr("ETA")));
  job.mutable_progress()->set_step(2000);  // never draws past the end
  EXPECT_THAT(RenderProgressBar(job, 120), StartsWith("[" + std::string(30, '#') + "] 100.0%"));
}

TEST(ProgressBarTest, NoBarWithoutATotal) {
  v1::Job job = RunningJob();
  job.mutable_progress()->set_total_steps(0);
  const std::string bar = RenderProgressBar(job, 120);
  EXPECT_EQ(bar, "step 100 epoch 1/1 loss 0.5123 12345 items/s");
  EXPECT_THAT(bar, Not(HasSubstr("ETA")));
}

v1::Job ScaledRunningJob() {
  v1::Job job = RunningJob();
  job.mutable_precision_stats()->set_grad_scaler_enabled(true);
  job.mutable_precision_stats()->set_scale(65536);
  job.mutable_precision_stats()->set_skipped_steps(3);
  return job;
}

TEST(ProgressBarTest, PlainLineNamesTheScaleWhileTheScalerIsOn) {
  EXPECT_EQ(FormatProgressLine(ScaledRunningJob()),
            "step 100/938 epoch 1/1 loss 0.5123 12345 items/s scale 65536 skipped 3");
  v1::Job off = ScaledRunningJob();
  off.mutable_precision_stats()->set_grad_scaler_enabled(false);
  EXPECT_EQ(FormatProgressLine(off), "step 100/938 epoch 1/1 loss 0.5123 12345 items/s");
}

TEST(ProgressBarTest, BarNamesTheScaleBeforeTheEta) {
  EXPECT_EQ(RenderProgressBar(ScaledRunningJob(), 140),
            "[###---------------------------]  10.7% 100/938 epoch 1/1 loss 0.5123 12345 items/s "
            "scale 65536 skipped 3 ETA 4.2s");
}

TEST(ProgressBarTest, ScaleGivesWayToTheBarAndIsNeverCut) {
  // Too narrow for a bar next to the scale: the scale goes, the bar stays.
  const std::string bar = RenderProgressBar(ScaledRunningJob(), 90);
  EXPECT_THAT(bar, StartsWith("[##"));
  EXPECT_THAT(bar, Not(HasSubstr("scale")));
  EXPECT_THAT(bar, HasSubstr("ETA 4.2s"));
  // Without a total there is no bar to make room for.
  v1::Job job = ScaledRunningJob();
  job.mutable_progress()->set_total_steps(0);
  EXPECT_EQ(RenderProgressBar(job, 80),
            "step 100 epoch 1/1 loss 0.5123 12345 items/s scale 65536 skipped 3");
  EXPECT_EQ(RenderProgressBar(job, 60), "step 100 epoch 1/1 loss 0.5123 12345 items/s");
  for (int width : {140, 100, 80, 60, 40, 20, 5, 1}) {
    const std::string line = RenderProgressBar(ScaledRunningJob(), width);
    EXPECT_LE(static_cast<int>(line.size()), std::max(width - 1, 1)) << width;
    const bool whole = line.find("scale 65536 skipped 3") != std::string::npos;
    const bool none = line.find("scale") == std::string::npos;
    EXPECT_TRUE(whole || none) << width << ": " << line;
  }
}

TEST(ProgressBarTest, GradNormJoinsTheLinesOnceReported) {
  v1::Job job = ScaledRunningJob();
  job.mutable_progress()->set_grad_norm(0.5321);
  job.mutable_progress()->set_max_grad_norm(3.5);
  EXPECT_EQ(FormatProgressLine(job),
            "step 100/938 epoch 1/1 loss 0.5123 12345 items/s grad norm 0.532 scale 65536 "
            "skipped 3");
  EXPECT_EQ(RenderProgressBar(job, 160),
            "[###---------------------------]  10.7% 100/938 epoch 1/1 loss 0.5123 12345 items/s "
            "grad norm 0.532 scale 65536 skipped 3 ETA 4.2s");
  // Like the scale, it gives way to the bar and is never cut.
  for (int width : {160, 120, 100, 80, 60}) {
    const std::string line = RenderProgressBar(job, width);
    const bool whole = line.find("grad norm 0.532") != std::string::npos;
    const bool none = line.find("grad norm") == std::string::npos;
    EXPECT_TRUE(whole || none) << width << ": " << line;
  }
  EXPECT_THAT(RenderProgressBar(job, 100), StartsWith("[##"));
}

}  // namespace
}  // namespace mantissa::cli
