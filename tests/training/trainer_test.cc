#include "server/training/trainer.h"

#include <gtest/gtest.h>

#include "server/training/job_spec_resolver.h"
#include "tests/testing/fake_job_context.h"
#include "tests/testing/status_matchers.h"

namespace mantissa {
namespace {

using testing::FakeJobContext;
using ::testing::HasSubstr;
using testing::StatusIs;

Trainer::Options SyntheticOptions(int64_t steps) {
  v1::JobSpec spec;
  spec.set_model("mlp");
  (*spec.mutable_model_options())["hidden"] = "32";
  spec.set_dataset("synthetic");
  (*spec.mutable_dataset_options())["train_size"] = "1024";
  (*spec.mutable_dataset_options())["test_size"] = "256";
  spec.set_steps(steps);
  spec.set_batch_size(32);
  spec.set_seed(11);
  static const ResolveContext* const cpu =
      new ResolveContext{DeviceCapabilities::Probe(torch::kCPU), 1};
  auto prepared = ResolveJobSpec(spec, *cpu);
  EXPECT_OK(prepared);
  Trainer::Options options;
  options.spec = prepared->spec;
  options.effective_precision = prepared->effective_precision;
  return options;
}

TEST(TrainerTest, LossFallsAndAccuracyIsHigh) {
  auto trainer = Trainer::Create(SyntheticOptions(200));
  ASSERT_OK(trainer);
  FakeJobContext context;
  auto result = (*trainer)->Run(context);
  ASSERT_OK(result);
  EXPECT_EQ(result->steps_completed(), 200);
  ASSERT_TRUE(result->has_eval_accuracy());
  EXPECT_GT(result->eval_accuracy(), 0.9);

  std::vector<double> losses;
  for (const v1::JobEvent& e : context.events()) {
    if (e.type() == v1::JobEvent::PROGRESS) losses.push_back(e.job().progress().loss());
  }
  ASSERT_EQ(losses.size(), 20u);  // every 10 steps
  EXPECT_LT(losses.back(), losses.front() * 0.5);
  const v1::Job job = context.job();
  EXPECT_EQ(job.progress().total_steps(), 200);
  EXPECT_EQ(job.progress().total_epochs(), 7);  // 1024 / 32 = 32 steps per epoch
  EXPECT_EQ(job.progress().epoch(), 7);
  EXPECT_GT(job.progress().items_per_second(), 0);
  EXPECT_EQ(job.parameter_count(), (32 * 32 + 32) + (32 * 4 + 4));
}

TEST(TrainerTest, SameSeedSameLoss) {
  double losses[2];
  for (double& loss : losses) {
    auto trainer = Trainer::Create(SyntheticOptions(30));
    ASSERT_OK(trainer);
    FakeJobContext context;
    auto result = (*trainer)->Run(context);
    ASSERT_OK(result);
    loss = result->final_loss();
  }
  EXPECT_DOUBLE_EQ(losses[0], losses[1]);
}

TEST(TrainerTest, CancellationTakesEffectWithinOneStep) {
  Trainer::Options options = SyntheticOptions(1000);
  options.spec.set_progress_every_n_steps(1);
  auto trainer = Trainer::Create(options);
  ASSERT_OK(trainer);
  FakeJobContext context;
  context.set_on_update([](const v1::JobEvent& e, FakeJobContext& ctx) {
    if (e.type() == v1::JobEvent::PROGRESS && e.job().progress().step() == 5) ctx.Cancel();
  });
  auto result = (*trainer)->Run(context);
  EXPECT_THAT(result, StatusIs(absl::StatusCode::kCancelled, HasSubstr("step 5")));
  EXPECT_EQ(context.job().progress().step(), 5);
}

TEST(TrainerTest, PeriodicEvaluationReportsAccuracy) {
  Trainer::Options options = SyntheticOptions(60);
  options.spec.mutable_eval()->set_every_n_steps(20);
  options.spec.mutable_eval()->set_max_batches(2);
  auto trainer = Trainer::Create(options);
  ASSERT_OK(trainer);
  FakeJobContext context;
  ASSERT_OK((*trainer)->Run(context));
  int evaluations = 0;
  for (const v1::JobEvent& e : context.events()) {
    if (e.type() != v1::JobEvent::EVALUATION) continue;
    ++evaluations;
    EXPECT_TRUE(e.job().result().has_eval_accuracy());
    EXPECT_THAT(e.message(), HasSubstr("eval accuracy"));
  }
  EXPECT_EQ(evaluations, 2);  // steps 20 and 40; step 60 is the final evaluation
}

TEST(TrainerTest, EvaluationCanBeDisabled) {
  Trainer::Options options = SyntheticOptions(10);
  options.spec.mutable_eval()->set_disabled(true);
  auto trainer = Trainer::Create(options);
  ASSERT_OK(trainer);
  FakeJobContext context;
  auto result = (*trainer)->Run(context);
  ASSERT_OK(result);
  EXPECT_FALSE(result->has_eval_accuracy());
}

}  // namespace
}  // namespace mantissa

namespace mantissa {
namespace {

double FinalLoss(Trainer::Options options) {
  auto trainer = Trainer::Create(std::move(options));
  EXPECT_OK(trainer);
  if (!trainer.ok()) return 0;
  testing::FakeJobContext context;
  auto result = (*trainer)->Run(context);
  EXPECT_OK(result);
  return result.ok() ? result->final_loss() : 0;
}

TEST(TrainerPrecisionTest, ClippingActsOnUnscaledGradients) {
  // Scaling by a power of two and unscaling is exact, so a scaled run that
  // clips the unscaled gradients matches an unscaled run bit for bit; one
  // that clipped the scaled gradients (norm x 1024) would not.
  Trainer::Options plain = SyntheticOptions(30);
  plain.effective_precision = "bf16-mixed";
  plain.spec.set_precision("bf16-mixed");
  plain.spec.set_gradient_clip_norm(0.05);
  Trainer::Options scaled = plain;
  scaled.spec.mutable_grad_scaler()->set_enabled(true);
  scaled.spec.mutable_grad_scaler()->set_init_scale(1024);
  Trainer::Options unclipped = plain;
  unclipped.spec.clear_gradient_clip_norm();

  const double plain_loss = FinalLoss(plain);
  EXPECT_DOUBLE_EQ(FinalLoss(scaled), plain_loss);
  EXPECT_NE(FinalLoss(unclipped), plain_loss);  // the clip was active
}

TEST(TrainerPrecisionTest, ReportsPrecisionAndMemoryStats) {
  Trainer::Options options = SyntheticOptions(20);
  options.effective_precision = "bf16-true";
  options.spec.set_precision("bf16-true");
  auto trainer = Trainer::Create(options);
  ASSERT_OK(trainer);
  testing::FakeJobContext context;
  ASSERT_OK((*trainer)->Run(context));
  const v1::Job job = context.job();
  EXPECT_EQ(job.precision_stats().parameter_dtype(), "bfloat16");
  EXPECT_EQ(job.precision_stats().optimizer_steps(), 20);
  EXPECT_GT(job.memory().baseline_fp32_peak_bytes(), 0);
  EXPECT_GT(job.memory().peak_bytes(), 0);
  EXPECT_EQ(job.memory().parameter_bytes(), job.parameter_count() * 2);
  EXPECT_TRUE(job.memory().has_savings_ratio());
}

}  // namespace
}  // namespace mantissa

namespace mantissa {
namespace {

TEST(TrainerPrecisionTest, SkippedStepsDoNotAdvanceTheLrSchedule) {
  // The scaler at float32's maximum skips the first steps (large inputs give
  // gradients above 1); the cosine schedule must count applied steps only.
  Trainer::Options options = SyntheticOptions(100);
  (*options.spec.mutable_dataset_options())["noise"] = "50";
  options.effective_precision = "bf16-mixed";
  options.spec.set_precision("bf16-mixed");
  options.spec.mutable_grad_scaler()->set_enabled(true);
  options.spec.mutable_grad_scaler()->set_init_scale(std::numeric_limits<float>::max());
  options.spec.set_lr_schedule("cosine");
  options.spec.set_warmup_steps(5);
  options.spec.set_min_lr(1e-5);
  auto trainer = Trainer::Create(options);
  ASSERT_OK(trainer);
  testing::FakeJobContext context;
  ASSERT_OK((*trainer)->Run(context));
  const v1::Job job = context.job();
  const int64_t skipped = job.precision_stats().skipped_steps();
  ASSERT_GT(skipped, 0);
  auto schedule = LrSchedule::Create(LrScheduleOptions(options.spec, 100));
  ASSERT_OK(schedule);
  // The last step (100) ran after 99 steps, `skipped` of which were skipped.
  EXPECT_DOUBLE_EQ(job.progress().lr(), schedule->LrAt(99 - skipped));
  EXPECT_NE(job.progress().lr(), schedule->LrAt(99));
}

}  // namespace
}  // namespace mantissa
