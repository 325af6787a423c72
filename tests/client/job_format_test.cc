#include "client/job_format.h"

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/client/test_jobs.h"

namespace mantissa::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

TEST(JobFormatTest, StateNames) {
  EXPECT_EQ(JobStateName(v1::RUNNING), "RUNNING");
  EXPECT_EQ(JobStateName(static_cast<v1::JobState>(42)), "STATE_42");
}

TEST(JobFormatTest, ParseJobStateIsCaseInsensitive) {
  EXPECT_EQ(ParseJobState("running").value(), v1::RUNNING);
  EXPECT_EQ(ParseJobState("Cancelled").value(), v1::CANCELLED);
  EXPECT_FALSE(ParseJobState("JOB_STATE_UNSPECIFIED").ok());
  auto bad = ParseJobState("done");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("'done'"));
}

TEST(JobFormatTest, TerminalStates) {
  EXPECT_TRUE(IsTerminalState(v1::SUCCEEDED));
  EXPECT_TRUE(IsTerminalState(v1::FAILED));
  EXPECT_TRUE(IsTerminalState(v1::CANCELLED));
  EXPECT_FALSE(IsTerminalState(v1::RUNNING));
  EXPECT_FALSE(IsTerminalState(v1::QUEUED));
}

TEST(JobFormatTest, Durations) {
  EXPECT_EQ(FormatDuration(4.24), "4.2s");
  EXPECT_EQ(FormatDuration(42), "42s");
  EXPECT_EQ(FormatDuration(185), "3m05s");
  EXPECT_EQ(FormatDuration(3723), "1h02m03s");
  EXPECT_EQ(FormatDuration(-1), "-");
}

TEST(JobFormatTest, Numbers) {
  EXPECT_EQ(FormatLoss(0.51234), "0.5123");
  EXPECT_EQ(FormatLoss(0.00001234), "1.234e-05");
  EXPECT_EQ(FormatLoss(0), "0.0000");
  EXPECT_EQ(FormatAccuracy(0.8845), "88.45%");
  EXPECT_EQ(FormatAccuracy(1), "100.00%");
  EXPECT_EQ(FormatCount(0), "0");
  EXPECT_EQ(FormatCount(999), "999");
  EXPECT_EQ(FormatCount(1000), "1,000");
  EXPECT_EQ(FormatCount(101770), "101,770");
  EXPECT_EQ(FormatCount(-1234567), "-1,234,567");
}

TEST(JobFormatTest, Timestamps) {
  google::protobuf::Timestamp unset;
  EXPECT_EQ(FormatTimestamp(unset, absl::UTCTimeZone()), "-");
  google::protobuf::Timestamp time;
  time.set_seconds(1700000000);
  EXPECT_EQ(FormatTimestamp(time, absl::UTCTimeZone()), "2023-11-14 22:13:20");
}

TEST(JobFormatTest, StepCounts) {
  v1::Progress progress;
  progress.set_step(5);
  EXPECT_EQ(FormatStepCount(progress), "5");
  progress.set_total_steps(10);
  EXPECT_EQ(FormatStepCount(progress), "5/10");
}

TEST(JobFormatTest, OptionsAreSortedByKey) {
  EXPECT_EQ(FormatOptions(RunningJob().spec().model_options()), "depth=2, hidden=128");
}

TEST(JobFormatTest, EffectivePrecisionFallsBackToTheRequestedOne) {
  v1::Job job = RunningJob();
  EXPECT_EQ(EffectivePrecision(job), "bf16-mixed");
  job.clear_effective_precision();
  EXPECT_EQ(EffectivePrecision(job), "16-mixed");
  job.mutable_spec()->clear_precision();
  EXPECT_EQ(EffectivePrecision(job), "-");
}

TEST(JobFormatTest, JobViewShowsTheRunningJob) {
  const std::string view = FormatJob(RunningJob(), absl::UTCTimeZone());
  EXPECT_THAT(view, HasSubstr("ID:             j1\n"));
  EXPECT_THAT(view, HasSubstr("Name:           baseline\n"));
  EXPECT_THAT(view, HasSubstr("State:          RUNNING\n"));
  EXPECT_THAT(view, HasSubstr("Model:          mlp (depth=2, hidden=128)\n"));
  EXPECT_THAT(view, HasSubstr("Dataset:        synthetic\n"));
  EXPECT_THAT(view, HasSubstr("Precision:      16-mixed (effective bf16-mixed)\n"));
  EXPECT_THAT(view, HasSubstr("Steps:          938\n"));
  EXPECT_THAT(view, HasSubstr("Batch size:     64\n"));
  EXPECT_THAT(view, HasSubstr("Optimizer:      adamw\n"));
  EXPECT_THAT(view, HasSubstr("Learning rate:  0.001\n"));
  EXPECT_THAT(view, HasSubstr("Weight decay:   0.01\n"));
  EXPECT_THAT(view, HasSubstr("Evaluation:     every 100 steps, at most 10 batches\n"));
  EXPECT_THAT(view, HasSubstr("Progress:       step 100/938 (10.7%), epoch 1/1, loss 0.5123, 12345 "
                              "items/s\n"));
  EXPECT_THAT(view, HasSubstr("Parameters:     101,770\n"));
  EXPECT_THAT(view, HasSubstr("Warnings:       16-mixed runs as bf16-mixed on cpu\n"));
  EXPECT_THAT(view, HasSubstr("Created:        2023-11-14 22:13:20\n"));
  EXPECT_THAT(view, HasSubstr("Started:        2023-11-14 22:13:25\n"));
  // Not there yet, so not shown.
  EXPECT_THAT(view, Not(HasSubstr("Result:")));
  EXPECT_THAT(view, Not(HasSubstr("Ended:")));
  EXPECT_THAT(view, Not(HasSubstr("Momentum:")));
  EXPECT_THAT(view, Not(HasSubstr("Error:")));
  EXPECT_THAT(view, Not(HasSubstr("Epochs:")));
}

TEST(JobFormatTest, JobViewShowsResultErrorAndEveryWarning) {
  v1::Job job = SucceededJob();
  job.add_warnings("second warning");
  std::string view = FormatJob(job, absl::UTCTimeZone());
  EXPECT_THAT(view, HasSubstr("Result:         final loss 0.3012, eval accuracy 88.45%, eval loss "
                              "0.3100, 938 steps in 1m05s\n"));
  EXPECT_THAT(view, HasSubstr("Warnings:       16-mixed runs as bf16-mixed on cpu\n"
                              "                second warning\n"));
  EXPECT_THAT(view, HasSubstr("Ended:          2023-11-14 22:14:30\n"));

  job.set_state(v1::FAILED);
  job.set_error("CUDA out of memory");
  view = FormatJob(job, absl::UTCTimeZone());
  EXPECT_THAT(view, HasSubstr("Error:          CUDA out of memory\n"));
}

TEST(JobFormatTest, JobViewMarksCancelRequestsAndDisabledEval) {
  v1::Job job = RunningJob();
  job.set_cancel_requested(true);
  job.mutable_spec()->mutable_eval()->set_disabled(true);
  const std::string view = FormatJob(job, absl::UTCTimeZone());
  EXPECT_THAT(view, HasSubstr("State:          RUNNING (cancel requested)\n"));
  EXPECT_THAT(view, HasSubstr("Evaluation:     disabled\n"));
}

TEST(JobFormatTest, JobViewValuesShareOneColumn) {
  for (const v1::Job& job : {SucceededJob(), ScaledJob(), ResumedJob()}) {
    const std::string view = FormatJob(job, absl::UTCTimeZone());
    // The precision section below the blank line has its own alignment.
    const absl::string_view main = absl::string_view(view).substr(0, view.find("\n\n"));
    for (absl::string_view line : absl::StrSplit(main, '\n', absl::SkipEmpty())) {
      ASSERT_GT(line.size(), 16u) << line;
      EXPECT_NE(line[16], ' ') << line;
      EXPECT_EQ(line.substr(14, 2), "  ") << line;
    }
  }
}

TEST(JobFormatTest, JobViewShowsRanksAndGlobalBatchOfADataParallelJob) {
  v1::Job job = RunningJob();
  EXPECT_EQ(FormatRanks(job), "");
  EXPECT_THAT(FormatJob(job, absl::UTCTimeZone()), Not(HasSubstr("Ranks:")));
  // One rank: the daemon sets world_size 1, which says nothing new.
  job.set_world_size(1);
  job.set_global_batch_size(64);
  EXPECT_EQ(FormatRanks(job), "");

  job.mutable_spec()->set_devices(2);
  job.set_world_size(2);
  job.set_global_batch_size(128);
  std::string view = FormatJob(job, absl::UTCTimeZone());
  EXPECT_THAT(view, HasSubstr("Batch size:     64\n"
                              "Ranks:          2 (2 devices x 1 node), global batch 128\n"));
  EXPECT_THAT(view, Not(HasSubstr("Nodes:")));

  job.mutable_spec()->set_num_nodes(2);
  job.set_world_size(4);
  job.set_global_batch_size(1024);
  job.add_nodes("w1");
  job.add_nodes("w2");
  view = FormatJob(job, absl::UTCTimeZone());
  EXPECT_THAT(view, HasSubstr("Ranks:          4 (2 devices x 2 nodes), global batch 1,024\n"
                              "Nodes:          w1, w2\n"));
}

TEST(JobFormatTest, QueuedDataParallelJobShowsTheRanksItAskedFor) {
  v1::Job job = RunningJob();
  job.set_state(v1::QUEUED);
  job.set_world_size(0);
  job.set_global_batch_size(0);
  job.mutable_spec()->set_num_nodes(3);
  EXPECT_EQ(FormatRanks(job), "3 (1 device x 3 nodes)");
}

TEST(JobFormatTest, PerplexityAndCheckpoints) {
  EXPECT_EQ(FormatPerplexity(10.0), "10.00");
  EXPECT_EQ(FormatPerplexity(1234.567), "1234.57");
  v1::Checkpoint checkpoint;
  checkpoint.set_step(200);
  EXPECT_EQ(FormatCheckpoint(checkpoint), "step 200");
  checkpoint.set_path("/state/jobs/j1/checkpoint.pt");
  EXPECT_EQ(FormatCheckpoint(checkpoint), "step 200: /state/jobs/j1/checkpoint.pt");
  checkpoint.set_bytes(1258291);
  EXPECT_EQ(FormatCheckpoint(checkpoint), "step 200: /state/jobs/j1/checkpoint.pt (1.20 MiB)");
}

TEST(JobFormatTest, EvalDetailsShowOnlyWhatIsPresent) {
  v1::JobResult result;
  EXPECT_THAT(EvalDetails(result, "eval "), IsEmpty());
  result.set_eval_loss(2.3026);
  result.set_eval_perplexity(10);
  EXPECT_THAT(EvalDetails(result, "eval "),
              ElementsAre("eval loss 2.3026", "eval perplexity 10.00"));
  result.set_eval_accuracy(0.5);
  EXPECT_THAT(EvalDetails(result, ""),
              ElementsAre("accuracy 50.00%", "loss 2.3026", "perplexity 10.00"));
}

TEST(JobFormatTest, JobViewShowsTheResumedJobAndItsCheckpoint) {
  const std::string view = FormatJob(ResumedJob(), absl::UTCTimeZone());
  EXPECT_THAT(view, HasSubstr("Batch size:     64\n"
                              "Accumulation:   4 batches per optimizer step\n"));
  EXPECT_THAT(view, HasSubstr("Momentum:       0.9, Nesterov\n"));
  EXPECT_THAT(view, HasSubstr("Checkpointing:  every 200 steps\n"));
  EXPECT_THAT(view, HasSubstr("Resumed from:   job j0 at step 400\n"));
  // Perplexity next to the eval loss, and no accuracy for a language model.
  EXPECT_THAT(view, HasSubstr("Result:         final loss 0.3012, eval loss 2.3026, eval "
                              "perplexity 10.00, 938 steps in 1m05s\n"));
  EXPECT_THAT(view, Not(HasSubstr("accuracy")));
  EXPECT_THAT(view, HasSubstr("Checkpoint:     step 600: /state/jobs/j5/checkpoint.pt (1.20 MiB), "
                              "written 2023-11-14 22:14:20\n"));
}

TEST(JobFormatTest, JobViewBeforeTheResumedJobStarts) {
  v1::Job job = ResumedJob();
  job.set_state(v1::QUEUED);
  job.set_start_step(0);
  job.clear_checkpoint();
  job.clear_result();
  job.clear_progress();
  job.mutable_spec()->set_checkpoint_every_n_steps(0);
  const std::string view = FormatJob(job, absl::UTCTimeZone());
  EXPECT_THAT(view, HasSubstr("Resumed from:   job j0\n"));
  EXPECT_THAT(view, HasSubstr("Checkpointing:  at the end\n"));
  EXPECT_THAT(view, Not(HasSubstr("Checkpoint:")));
  EXPECT_THAT(view, Not(HasSubstr("Result:")));
}

TEST(JobFormatTest, JobViewLeavesOutDefaultsOfTheNewSettings) {
  v1::Job job = SucceededJob();
  job.mutable_spec()->set_accumulate_grad_batches(1);
  job.mutable_spec()->set_nesterov(false);
  const std::string view = FormatJob(job, absl::UTCTimeZone());
  EXPECT_THAT(view, Not(HasSubstr("Accumulation:")));
  EXPECT_THAT(view, Not(HasSubstr("Nesterov")));
  EXPECT_THAT(view, Not(HasSubstr("Momentum:")));
  EXPECT_THAT(view, Not(HasSubstr("Checkpoint")));
  EXPECT_THAT(view, Not(HasSubstr("Resumed from:")));
  EXPECT_THAT(view, Not(HasSubstr("perplexity")));
}

TEST(JobFormatTest, JobViewShowsAnEvalOnlyResult) {
  // An evaluation before the first progress report still shows.
  v1::Job job = RunningJob();
  job.mutable_result()->set_eval_loss(2.5);
  job.mutable_result()->set_eval_perplexity(12.18);
  EXPECT_THAT(FormatJob(job, absl::UTCTimeZone()),
              HasSubstr("eval loss 2.5000, eval perplexity 12.18"));
}

TEST(JobFormatTest, Bytes) {
  EXPECT_EQ(FormatBytes(0), "0 B");
  EXPECT_EQ(FormatBytes(1023), "1023 B");
  EXPECT_EQ(FormatBytes(1024), "1.00 KiB");
  EXPECT_EQ(FormatBytes(1536), "1.50 KiB");
  EXPECT_EQ(FormatBytes(1572864), "1.50 MiB");
  // Rounds up into the next unit rather than printing "1024.00 KiB".
  EXPECT_EQ(FormatBytes((int64_t{1} << 20) - 1), "1.00 MiB");
  EXPECT_EQ(FormatBytes(int64_t{3} << 30), "3.00 GiB");
  EXPECT_EQ(FormatBytes(-2048), "-2.00 KiB");
  EXPECT_EQ(FormatBytes(std::numeric_limits<int64_t>::max()), "8.00 EiB");
  EXPECT_EQ(FormatBytes(std::numeric_limits<int64_t>::min()), "-8.00 EiB");
}

TEST(JobFormatTest, SavingsMayBeNegative) {
  EXPECT_EQ(FormatSavings(0.4), "40.0%");
  EXPECT_EQ(FormatSavings(0.5), "50.0%");
  EXPECT_EQ(FormatSavings(-0.987), "-98.7%");
  EXPECT_EQ(FormatSavings(-2.5), "-250.0%");
  EXPECT_EQ(FormatSavings(-0.0001), "0.0%");
}

TEST(JobFormatTest, Scales) {
  EXPECT_EQ(FormatScale(65536), "65536");
  EXPECT_EQ(FormatScale(1), "1");
  EXPECT_EQ(FormatScale(0.5), "0.5");
  EXPECT_EQ(FormatScale(0), "0");
  EXPECT_EQ(FormatScale(1.5e20), "1.5e+20");
}

TEST(JobFormatTest, GradScalerDetailsOnlyWhileEnabled) {
  EXPECT_THAT(GradScalerDetails(ScaledJob()), ElementsAre("scale 65536", "skipped 3"));
  EXPECT_THAT(GradScalerDetails(SucceededJob()), IsEmpty());
  v1::Job disabled = ScaledJob();
  disabled.mutable_precision_stats()->set_grad_scaler_enabled(false);
  EXPECT_THAT(GradScalerDetails(disabled), IsEmpty());
}

TEST(JobFormatTest, PrecisionSectionWithScalerAndMemory) {
  EXPECT_EQ(FormatPrecisionSection(ScaledJob()),
            "Precision\n"
            "  Parameter dtype:  float32\n"
            "  Compute dtype:    float16\n"
            "  Grad scaler:      enabled, scale 65536, 3 of 200 steps skipped\n"
            "  Memory:           cuda caching allocator (approximate: other jobs ran at the same "
            "time)\n"
            "                    Peak                  1.50 MiB\n"
            "                    FP32 baseline peak    2.50 MiB\n"
            "                    Savings                  40.0%\n"
            "                    Parameters          397.54 KiB\n"
            "                    Gradients           397.54 KiB\n"
            "                    Optimizer state     795.08 KiB\n");
}

TEST(JobFormatTest, JobViewEndsWithThePrecisionSection) {
  const std::string view = FormatJob(ScaledJob(), absl::UTCTimeZone());
  EXPECT_THAT(view, HasSubstr("Precision:      16-mixed\n"));
  EXPECT_THAT(view, HasSubstr("Ended:          2023-11-14 22:14:30\n"
                              "\n"
                              "Precision\n"
                              "  Parameter dtype:  float32\n"));
  EXPECT_THAT(view, EndsWith("Optimizer state     795.08 KiB\n"));
}

TEST(JobFormatTest, PrecisionSectionWithTheScalerDisabledAndNoMemory) {
  v1::Job job = ScaledJob();
  job.mutable_precision_stats()->set_grad_scaler_enabled(false);
  job.mutable_precision_stats()->set_compute_dtype("bfloat16");
  job.clear_memory();
  EXPECT_EQ(FormatPrecisionSection(job),
            "Precision\n"
            "  Parameter dtype:  float32\n"
            "  Compute dtype:    bfloat16\n"
            "  Grad scaler:      disabled\n");
}

TEST(JobFormatTest, NoPrecisionSectionBeforeTheDaemonReportsOne) {
  v1::Job job = RunningJob();
  EXPECT_EQ(FormatPrecisionSection(job), "");
  EXPECT_THAT(FormatJob(job, absl::UTCTimeZone()), Not(HasSubstr("\n\n")));
  // A source without numbers is no memory table.
  job.mutable_memory()->set_source("cpu counting allocator");
  EXPECT_EQ(FormatPrecisionSection(job), "");
}

TEST(JobFormatTest, MemoryTableOmitsWhatWasNotMeasured) {
  v1::Job job = ScaledJob();
  job.clear_precision_stats();
  v1::MemoryStats& memory = *job.mutable_memory();
  // An exact peak well above a missing baseline: no baseline, no savings,
  // and no note.
  memory.set_exact(true);
  memory.set_baseline_fp32_peak_bytes(0);
  memory.clear_savings_ratio();
  memory.set_parameter_bytes(0);
  memory.set_source("cpu counting allocator");
  EXPECT_EQ(FormatPrecisionSection(job),
            "Precision\n"
            "  Memory:  cpu counting allocator\n"
            "           Peak  1.50 MiB\n");
}

TEST(JobFormatTest, MemoryTableShowsNegativeSavingsAndZeroOptimizerState) {
  v1::Job job = ScaledJob();
  job.clear_precision_stats();
  v1::MemoryStats& memory = *job.mutable_memory();
  memory.set_exact(true);
  memory.set_peak_bytes(200 * 1024);
  memory.set_baseline_fp32_peak_bytes(100 * 1024);
  memory.set_savings_ratio(-1.0);
  memory.set_optimizer_state_bytes(0);  // plain SGD
  memory.clear_source();
  EXPECT_EQ(FormatPrecisionSection(job),
            "Precision\n"
            "  Memory:  Peak                200.00 KiB\n"
            "           FP32 baseline peak  100.00 KiB\n"
            "           Savings                -100.0%\n"
            "           Parameters          397.54 KiB\n"
            "           Gradients           397.54 KiB\n"
            "           Optimizer state            0 B\n");
}

TEST(JobFormatTest, ApproximateNoteNeedsAPeak) {
  v1::Job job;
  job.mutable_memory()->set_exact(false);
  job.mutable_memory()->set_baseline_fp32_peak_bytes(2048);
  EXPECT_EQ(FormatPrecisionSection(job),
            "Precision\n"
            "  Memory:  FP32 baseline peak  2.00 KiB\n");
  job.mutable_memory()->set_peak_bytes(1024);
  EXPECT_THAT(FormatPrecisionSection(job),
              HasSubstr("  Memory:  (approximate: other jobs ran at the same time)\n"));
}

TEST(JobFormatTest, GradScalerLineBeforeTheFirstStepAndWithOneStep) {
  v1::Job job = ScaledJob();
  job.mutable_precision_stats()->set_optimizer_steps(0);
  job.mutable_precision_stats()->set_skipped_steps(0);
  EXPECT_THAT(FormatPrecisionSection(job), HasSubstr("  Grad scaler:      enabled, scale 65536\n"));
  job.mutable_precision_stats()->set_optimizer_steps(1);
  job.mutable_precision_stats()->set_scale(32768);
  EXPECT_THAT(FormatPrecisionSection(job),
              HasSubstr("  Grad scaler:      enabled, scale 32768, 0 of 1 step skipped\n"));
}

TEST(JobFormatTest, ScalerSettingsShowOnlyWhatTheSpecCarries) {
  v1::Job job = ScaledJob();
  job.mutable_spec()->mutable_grad_scaler()->set_init_scale(1024);
  job.mutable_spec()->mutable_grad_scaler()->set_growth_interval(100);
  EXPECT_THAT(FormatPrecisionSection(job),
              HasSubstr("  Scaler settings:  init scale 1024, growth interval 100\n"));
  job.mutable_precision_stats()->set_grad_scaler_enabled(false);
  EXPECT_THAT(FormatPrecisionSection(job), Not(HasSubstr("Scaler settings")));
}

TEST(JobFormatTest, Fp8RecipeAndCudaGraphShowWhenTheSpecCarriesThem) {
  v1::Job job = ScaledJob();
  EXPECT_THAT(FormatJob(job, absl::UTCTimeZone()), Not(HasSubstr("FP8 recipe")));
  EXPECT_THAT(FormatJob(job, absl::UTCTimeZone()), Not(HasSubstr("CUDA graph")));
  v1::Fp8Recipe& recipe = *job.mutable_spec()->mutable_fp8();
  recipe.set_fp8_format("HYBRID");
  recipe.set_amax_history_len(1024);
  recipe.set_amax_compute_algo("max");
  recipe.set_margin(0);
  job.mutable_spec()->set_cuda_graph(true);
  EXPECT_THAT(FormatPrecisionSection(job),
              HasSubstr("FP8 recipe:       HYBRID, amax history 1024, amax max, margin 0\n"));
  EXPECT_THAT(FormatJob(job, absl::UTCTimeZone()), HasSubstr("CUDA graph:"));
}

TEST(JobFormatTest, JobViewShowsClippingAndEpsilonWhenSet) {
  v1::Job job = RunningJob();
  job.mutable_spec()->set_gradient_clip_norm(1.0);
  job.mutable_spec()->set_eps(1e-6);
  const std::string view = FormatJob(job, absl::UTCTimeZone());
  EXPECT_THAT(view, HasSubstr("Epsilon:        1e-06\n"));
  EXPECT_THAT(view, HasSubstr("Gradient clip:  total norm 1\n"));
  EXPECT_THAT(FormatJob(RunningJob(), absl::UTCTimeZone()), Not(HasSubstr("Epsilon:")));
}

TEST(JobFormatTest, JobTable) {
  google::protobuf::RepeatedPtrField<v1::Job> jobs;
  *jobs.Add() = SucceededJob();
  v1::Job queued;
  queued.set_id("j3");
  queued.set_state(v1::QUEUED);
  queued.mutable_spec()->set_model("cnn");
  queued.mutable_spec()->set_dataset("fashion-mnist");
  queued.mutable_spec()->set_precision("32-true");
  queued.mutable_progress()->set_total_steps(10);
  *jobs.Add() = queued;
  v1::Job scaled = ScaledJob();
  scaled.mutable_memory()->set_savings_ratio(-0.987);
  *jobs.Add() = scaled;
  EXPECT_EQ(FormatJobTable(jobs, absl::UTCTimeZone()),
            "ID  NAME      MODEL  DATASET        PRECISION   STATE         STEP    LOSS  ACCURACY"
            "  SKIPPED  SAVINGS  CREATED\n"
            "j1  baseline  mlp    synthetic      bf16-mixed  SUCCEEDED  938/938  0.3012    88.45%"
            "        -        -  2023-11-14 22:13:20\n"
            "j3  -         cnn    fashion-mnist  32-true     QUEUED        0/10       -         -"
            "        -        -  -\n"
            "j2  baseline  mlp    synthetic      16-mixed    SUCCEEDED  938/938  0.3012    88.45%"
            "        3   -98.7%  2023-11-14 22:13:20\n");
}

TEST(JobFormatTest, SubmittedJob) {
  v1::Job job = RunningJob();
  job.set_state(v1::QUEUED);
  EXPECT_EQ(FormatSubmittedJob(job),
            "job j1 submitted: QUEUED, precision bf16-mixed (requested 16-mixed)\n"
            "warning: 16-mixed runs as bf16-mixed on cpu\n");
  job.mutable_spec()->set_precision("bf16-mixed");
  job.clear_warnings();
  EXPECT_EQ(FormatSubmittedJob(job), "job j1 submitted: QUEUED, precision bf16-mixed\n");
}

TEST(JobFormatTest, SubmittedResumedJobNamesTheJobItContinues) {
  v1::Job job = RunningJob();
  job.set_state(v1::QUEUED);
  job.clear_warnings();
  job.mutable_spec()->set_precision("bf16-mixed");
  job.mutable_spec()->set_resume_from("j0");
  EXPECT_EQ(FormatSubmittedJob(job),
            "job j1 submitted: QUEUED, precision bf16-mixed, resuming job j0\n");
  job.set_start_step(400);
  EXPECT_EQ(FormatSubmittedJob(job),
            "job j1 submitted: QUEUED, precision bf16-mixed, resuming job j0 at step 400\n");
}

TEST(JobFormatTest, Outcomes) {
  EXPECT_EQ(FormatJobOutcome(SucceededJob()),
            "job j1 SUCCEEDED in 1m05s: final loss 0.3012, eval accuracy 88.45%, eval loss 0.3100");

  v1::Job failed = RunningJob();
  failed.set_state(v1::FAILED);
  failed.set_error("loss became NaN at step 12");
  EXPECT_EQ(FormatJobOutcome(failed), "job j1 FAILED: loss became NaN at step 12");

  v1::Job cancelled = RunningJob();
  cancelled.set_state(v1::CANCELLED);
  EXPECT_EQ(FormatJobOutcome(cancelled), "job j1 CANCELLED at step 100/938");

  EXPECT_EQ(FormatJobOutcome(RunningJob()), "job j1 is RUNNING");
}

TEST(JobFormatTest, OutcomeWithPerplexityHasNoAccuracy) {
  EXPECT_EQ(
      FormatJobOutcome(ResumedJob()),
      "job j5 SUCCEEDED in 1m05s: final loss 0.3012, eval loss 2.3026, eval perplexity 10.00");
}

TEST(JobFormatTest, UnfinishedOutcomesSayHowToResume) {
  v1::Job cancelled = ResumedJob();
  cancelled.set_state(v1::CANCELLED);
  cancelled.mutable_progress()->set_step(650);
  EXPECT_EQ(FormatJobOutcome(cancelled),
            "job j5 CANCELLED at step 650/938 (checkpoint at step 600: resume with 'mantissa "
            "resume j5')");

  v1::Job failed = cancelled;
  failed.set_state(v1::FAILED);
  failed.set_error("loss became NaN");
  EXPECT_EQ(FormatJobOutcome(failed),
            "job j5 FAILED: loss became NaN (checkpoint at step 600: resume with 'mantissa resume "
            "j5')");
  failed.clear_error();
  EXPECT_EQ(FormatJobOutcome(failed),
            "job j5 FAILED (checkpoint at step 600: resume with 'mantissa resume j5')");
}

TEST(JobFormatTest, GradientNormLineShowsTheLatestAndTheIntervalsLargest) {
  v1::Job job = RunningJob();
  EXPECT_EQ(FormatGradNormLine(job.progress()), "");
  EXPECT_THAT(FormatJob(job, absl::UTCTimeZone()), Not(HasSubstr("Gradient norm")));
  job.mutable_progress()->set_grad_norm(0.53217);
  EXPECT_EQ(FormatGradNormLine(job.progress()), "0.532");
  job.mutable_progress()->set_max_grad_norm(1.2149);
  EXPECT_THAT(FormatJob(job, absl::UTCTimeZone()),
              HasSubstr("items/s\n"
                        "Gradient norm:  0.532 (largest in the last interval 1.21)\n"));
  EXPECT_EQ(FormatGradNorm(12345.6), "1.23e+04");
  EXPECT_EQ(FormatGradNorm(0), "0");
}

TEST(JobFormatTest, GradNormDetailsOnlyOnceReported) {
  v1::Progress progress = RunningJob().progress();
  EXPECT_THAT(GradNormDetails(progress), IsEmpty());
  progress.set_grad_norm(2.5);
  EXPECT_THAT(GradNormDetails(progress), ElementsAre("grad norm 2.5"));
}

// bf16-true with Kahan-compensated updates: the rounding and its buffers.
v1::Job KahanJob() {
  v1::Job job = SucceededJob();
  job.mutable_spec()->set_precision("bf16-true");
  job.mutable_spec()->set_bf16_update("kahan");
  job.set_effective_precision("bf16-true");
  job.mutable_precision_stats()->set_parameter_dtype("bfloat16");
  job.mutable_precision_stats()->set_compute_dtype("bfloat16");
  job.mutable_precision_stats()->set_bf16_update("kahan");
  job.mutable_memory()->set_compensation_bytes(6501171);
  return job;
}

TEST(JobFormatTest, UpdateRoundingShowsForTrueHalfJobsWithTheCompensation) {
  v1::Job job = KahanJob();
  EXPECT_EQ(FormatUpdateRounding(job), "kahan (compensation 6.20 MiB)");
  EXPECT_EQ(FormatPrecisionSection(job),
            "Precision\n"
            "  Parameter dtype:  bfloat16\n"
            "  Compute dtype:    bfloat16\n"
            "  Update rounding:  kahan (compensation 6.20 MiB)\n"
            "  Grad scaler:      disabled\n");
  job.mutable_precision_stats()->set_bf16_update("stochastic");
  job.mutable_memory()->set_compensation_bytes(0);
  EXPECT_EQ(FormatUpdateRounding(job), "stochastic");
  // The default is worth saying where there is a choice.
  job.mutable_precision_stats()->set_bf16_update("nearest");
  EXPECT_EQ(FormatUpdateRounding(job), "nearest");
  // Before the daemon reports stats, the spec says it.
  job.clear_precision_stats();
  EXPECT_EQ(FormatUpdateRounding(job), "kahan");
  job.mutable_spec()->clear_bf16_update();
  EXPECT_EQ(FormatUpdateRounding(job), "");
}

TEST(JobFormatTest, NoUpdateRoundingForPrecisionsWithoutHalfWeights) {
  v1::Job job = ScaledJob();
  job.mutable_precision_stats()->set_bf16_update("nearest");
  EXPECT_EQ(FormatUpdateRounding(job), "");
  EXPECT_THAT(FormatPrecisionSection(job), Not(HasSubstr("Update rounding")));
}

v1::NonFiniteStep SkippedStep() {
  v1::NonFiniteStep step;
  step.set_step(14);
  step.set_epoch(1);
  step.set_batch(13);
  step.set_batches(1);
  step.set_first_item(832);
  step.set_items(64);
  step.add_parameters("2.weight");
  step.add_parameters("2.bias");
  step.set_non_finite_parameters(2);
  step.set_skipped(true);
  step.set_steps_in_interval(3);
  return step;
}

TEST(JobFormatTest, NonFiniteStepSaysWhereWhatAndWhetherItWasSkipped) {
  EXPECT_EQ(FormatNonFiniteStep(SkippedStep()),
            "step 14: epoch 1, batch 13, items 832-895\n"
            "loss finite\n"
            "non-finite gradients: 2.weight, 2.bias\n"
            "skipped by the grad scaler\n"
            "first of 3 non-finite steps in its progress interval");

  v1::NonFiniteStep failed = SkippedStep();
  failed.set_batch(12);
  failed.set_batches(4);
  failed.set_first_item(768);
  failed.set_items(256);
  failed.set_loss_non_finite(true);
  failed.set_non_finite_parameters(11);
  failed.set_skipped(false);
  failed.set_steps_in_interval(1);
  EXPECT_EQ(FormatNonFiniteStep(failed),
            "step 14: epoch 1, batches 12-15, items 768-1023\n"
            "loss not finite\n"
            "non-finite gradients: 2.weight, 2.bias, +9 more\n"
            "not skipped (no grad scaler)\n"
            "the only non-finite step in its progress interval");

  v1::NonFiniteStep loss_only = failed;
  loss_only.clear_parameters();
  loss_only.set_non_finite_parameters(0);
  loss_only.set_steps_in_interval(0);
  loss_only.set_items(1);
  EXPECT_EQ(FormatNonFiniteStep(loss_only),
            "step 14: epoch 1, batches 12-15, item 768\n"
            "loss not finite\n"
            "gradients finite\n"
            "not skipped (no grad scaler)");
  loss_only.set_non_finite_parameters(1);
  EXPECT_THAT(FormatNonFiniteStep(loss_only), HasSubstr("\nnon-finite gradients in 1 parameter\n"));
}

TEST(JobFormatTest, PrecisionSectionShowsTheLastNonFiniteStepAsABlock) {
  v1::Job job = ScaledJob();
  *job.mutable_precision_stats()->mutable_last_non_finite() = SkippedStep();
  job.clear_memory();
  EXPECT_EQ(FormatPrecisionSection(job),
            "Precision\n"
            "  Parameter dtype:       float32\n"
            "  Compute dtype:         float16\n"
            "  Grad scaler:           enabled, scale 65536, 3 of 200 steps skipped\n"
            "  Last non-finite step:  step 14: epoch 1, batch 13, items 832-895\n"
            "                         loss finite\n"
            "                         non-finite gradients: 2.weight, 2.bias\n"
            "                         skipped by the grad scaler\n"
            "                         first of 3 non-finite steps in its progress interval\n");
}

}  // namespace
}  // namespace mantissa::cli
