#include "client/compare_format.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/client/test_jobs.h"

namespace mantissa::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

ComparedRun Ran(const std::string& entry, const v1::Job& job) {
  ComparedRun run;
  run.entry = entry;
  run.job = job;
  return run;
}

ComparedRun Refused(const std::string& entry, absl::Status status) {
  ComparedRun run;
  run.entry = entry;
  run.refusal = std::move(status);
  return run;
}

// Four precisions: a clean fp32 run, a 16-mixed run with the scaler on and an
// approximate peak, one the daemon refused and one that failed.
std::vector<ComparedRun> Runs() {
  v1::Job full = SucceededJob();
  full.set_id("c1");
  full.mutable_spec()->set_precision("32-true");
  full.set_effective_precision("32-true");
  full.mutable_progress()->set_step_seconds(0.005123);
  full.mutable_progress()->set_items_per_second(12500.4);
  full.mutable_memory()->set_peak_bytes(2621440);
  full.mutable_memory()->set_baseline_fp32_peak_bytes(2621440);
  full.mutable_memory()->set_savings_ratio(0);
  full.mutable_memory()->set_exact(true);
  full.mutable_precision_stats()->set_parameter_dtype("float32");

  v1::Job mixed = ScaledJob();
  mixed.set_id("c2");
  mixed.mutable_progress()->set_step_seconds(0.00312);
  mixed.mutable_progress()->set_items_per_second(20512.8);
  mixed.mutable_result()->set_final_loss(0.30456);
  mixed.mutable_result()->set_eval_accuracy(0.8812);

  v1::Job failed = RunningJob();
  failed.set_id("c4");
  failed.set_state(v1::FAILED);
  failed.mutable_spec()->set_precision("bf16-true");
  failed.set_effective_precision("bf16-true");
  failed.set_error("loss became NaN at step 12");
  failed.mutable_memory()->set_peak_bytes(1024);
  failed.mutable_memory()->set_exact(true);
  failed.mutable_memory()->set_savings_ratio(-0.987);
  failed.mutable_memory()->set_baseline_fp32_peak_bytes(515);

  return {Ran("32-true", full), Ran("16-mixed", mixed),
          Refused("16-true", absl::FailedPreconditionError("16-true needs a CUDA device")),
          Ran("bf16-true", failed)};
}

TEST(CompareFormatTest, SideBySideTableWithNotesBelow) {
  EXPECT_EQ(FormatComparison(Runs()),
            "PRECISION  RUNS AS    STATE      STEP MS  ITEMS/S   PEAK MEM  FP32 BASELINE  SAVINGS"
            "  SKIPPED  FINAL LOSS  ACCURACY\n"
            "32-true    32-true    SUCCEEDED     5.12    12500   2.50 MiB       2.50 MiB     0.0%"
            "        -      0.3012    88.45%\n"
            "16-mixed   16-mixed   SUCCEEDED     3.12    20513  ~1.50 MiB       2.50 MiB    40.0%"
            "        3      0.3046    88.12%\n"
            "16-true    -          refused          -        -          -              -        -"
            "        -           -         -\n"
            "bf16-true  bf16-true  FAILED        5.00    12345   1.00 KiB          515 B   -98.7%"
            "        -           -         -\n"
            "\n"
            "~ approximate: other jobs ran at the same time\n"
            "16-true refused: 16-true needs a CUDA device\n"
            "bf16-true FAILED: loss became NaN at step 12\n");
}

TEST(CompareFormatTest, NoNotesWhenEverythingSucceededExactly) {
  std::vector<ComparedRun> runs = Runs();
  runs.resize(1);
  const std::string table = FormatComparison(runs);
  EXPECT_THAT(table, Not(HasSubstr("\n\n")));
  EXPECT_THAT(table, Not(HasSubstr("~")));
}

TEST(CompareFormatTest, RefusalWithoutAMessageNamesTheCode) {
  const std::string table =
      FormatComparison({Refused("16-true", absl::FailedPreconditionError(""))});
  EXPECT_THAT(table, HasSubstr("\n16-true refused: FAILED_PRECONDITION\n"));
}

TEST(CompareFormatTest, JsonHoldsTheJobsAndTheRefusals) {
  std::vector<ComparedRun> runs = Runs();
  runs[2].refusal = absl::FailedPreconditionError("needs \"cuda\"\n\\ here");
  const std::string json = FormatComparisonJson(runs);
  EXPECT_THAT(json, HasSubstr("  \"refused\": [\n"
                              "    {\"precision\": \"16-true\", \"code\": \"FAILED_PRECONDITION\", "
                              "\"error\": \"needs \\\"cuda\\\"\\n\\\\ here\"}\n"
                              "  ]\n}\n"));

  // The whole document parses; read it back through a message of the same shape.
  google::protobuf::Struct parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(json, &parsed).ok()) << json;
  const google::protobuf::ListValue& jobs = parsed.fields().at("jobs").list_value();
  ASSERT_EQ(jobs.values_size(), 3);
  EXPECT_EQ(jobs.values(0).struct_value().fields().at("id").string_value(), "c1");
  EXPECT_EQ(jobs.values(1).struct_value().fields().at("id").string_value(), "c2");
  EXPECT_EQ(jobs.values(2).struct_value().fields().at("state").string_value(), "FAILED");
  const google::protobuf::ListValue& refused = parsed.fields().at("refused").list_value();
  ASSERT_EQ(refused.values_size(), 1);
  EXPECT_EQ(refused.values(0).struct_value().fields().at("error").string_value(),
            "needs \"cuda\"\n\\ here");

  // Each job is protobuf's own mapping of it.
  std::string job_json = FormatComparisonJson({runs[1]});
  job_json = job_json.substr(job_json.find("    {"));
  job_json = job_json.substr(0, job_json.find("\n  ]"));
  v1::Job job;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(job_json, &job).ok()) << job_json;
  EXPECT_EQ(job.memory().peak_bytes(), 1572864);
  EXPECT_EQ(job.precision_stats().skipped_steps(), 3);
}

TEST(CompareFormatTest, JsonWithNothingRefused) {
  std::vector<ComparedRun> runs = Runs();
  runs.resize(1);
  const std::string json = FormatComparisonJson(runs);
  EXPECT_THAT(json, HasSubstr("\n  ],\n  \"refused\": []\n}\n"));
  EXPECT_EQ(FormatComparisonJson({}), "{\n  \"jobs\": [],\n  \"refused\": []\n}\n");
}

// bf16-true three ways: the compensation and gradient-norm columns appear
// because some job reports them, with "-" for those that do not.
TEST(CompareFormatTest, CompensationAndGradNormColumnsWhenSomeJobHasThem) {
  v1::Job nearest = SucceededJob();
  nearest.set_effective_precision("bf16-true");
  nearest.mutable_progress()->set_step_seconds(0.004);
  nearest.mutable_progress()->set_items_per_second(16000);
  nearest.mutable_progress()->set_max_grad_norm(0.8123);
  nearest.mutable_memory()->set_peak_bytes(1048576);
  nearest.mutable_memory()->set_exact(true);
  v1::Job kahan = nearest;
  kahan.mutable_memory()->set_peak_bytes(1572864);
  kahan.mutable_memory()->set_compensation_bytes(524288);
  kahan.mutable_progress()->set_max_grad_norm(12.34);
  v1::Job stochastic = nearest;
  stochastic.mutable_progress()->clear_max_grad_norm();
  EXPECT_EQ(FormatComparison(
                {Ran("bf16-true", nearest), Ran("bf16-true:kahan", kahan),
                 Ran("bf16-true:stochastic", stochastic),
                 Refused("bf16-mixed:kahan", absl::InvalidArgumentError("bf16_update: no"))}),
            "PRECISION             RUNS AS    STATE      STEP MS  ITEMS/S  PEAK MEM  FP32 BASELINE"
            "  SAVINGS  COMPENSATION  SKIPPED  GRAD NORM  FINAL LOSS  ACCURACY\n"
            "bf16-true             bf16-true  SUCCEEDED     4.00    16000  1.00 MiB              -"
            "        -             -        -      0.812      0.3012    88.45%\n"
            "bf16-true:kahan       bf16-true  SUCCEEDED     4.00    16000  1.50 MiB              -"
            "        -    512.00 KiB        -       12.3      0.3012    88.45%\n"
            "bf16-true:stochastic  bf16-true  SUCCEEDED     4.00    16000  1.00 MiB              -"
            "        -             -        -          -      0.3012    88.45%\n"
            "bf16-mixed:kahan      -          refused          -        -         -              -"
            "        -             -        -          -           -         -\n"
            "\n"
            "bf16-mixed:kahan refused: bf16_update: no\n");
}

}  // namespace
}  // namespace mantissa::cli
