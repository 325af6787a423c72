#include "server/training/trainer.h"

#include <gtest/gtest.h>

#include "server/common/status_macros.h"
#include "server/training/job_spec_resolver.h"
#include "tests/testing/fake_job_context.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace mantissa {
namespace {

using testing::FakeJobContext;
using ::testing::HasSubstr;
using testing::StatusIs;

v1::JobSpec SyntheticSpec(int64_t steps) {
  v1::JobSpec spec;
  spec.set_model("mlp");
  (*spec.mutable_model_options())["hidden"] = "32";
  spec.set_dataset("synthetic");
  (*spec.mutable_dataset_options())["train_size"] = "1024";
  (*spec.mutable_dataset_options())["test_size"] = "256";
  spec.set_steps(steps);
  spec.set_batch_size(32);
  spec.set_seed(11);
  return spec;
}

// The trainer's options for `spec`, resolved as the daemon does.
Trainer::Options OptionsFor(const v1::JobSpec& spec) {
  static const ResolveContext* const cpu =
      new ResolveContext{DeviceCapabilities::Probe(torch::kCPU), 1};
  auto resolved = ResolveJobSpec(spec, *cpu);
  EXPECT_OK(resolved);
  Trainer::Options options;
  if (resolved.ok()) options.job = *std::move(resolved);
  return options;
}

Trainer::Options SyntheticOptions(int64_t steps) { return OptionsFor(SyntheticSpec(steps)); }

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
  v1::JobSpec spec = SyntheticSpec(1000);
  spec.set_progress_every_n_steps(1);
  auto trainer = Trainer::Create(OptionsFor(spec));
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
  v1::JobSpec spec = SyntheticSpec(60);
  spec.mutable_eval()->set_every_n_steps(20);
  spec.mutable_eval()->set_max_batches(2);
  auto trainer = Trainer::Create(OptionsFor(spec));
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
  v1::JobSpec spec = SyntheticSpec(10);
  spec.mutable_eval()->set_disabled(true);
  auto trainer = Trainer::Create(OptionsFor(spec));
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
  v1::JobSpec plain = SyntheticSpec(30);
  plain.set_precision("bf16-mixed");
  plain.set_gradient_clip_norm(0.05);
  v1::JobSpec scaled = plain;
  scaled.mutable_grad_scaler()->set_enabled(true);
  scaled.mutable_grad_scaler()->set_init_scale(1024);
  v1::JobSpec unclipped = plain;
  unclipped.clear_gradient_clip_norm();

  const double plain_loss = FinalLoss(OptionsFor(plain));
  EXPECT_DOUBLE_EQ(FinalLoss(OptionsFor(scaled)), plain_loss);
  EXPECT_NE(FinalLoss(OptionsFor(unclipped)), plain_loss);  // the clip was active
}

TEST(TrainerPrecisionTest, ReportsPrecisionAndMemoryStats) {
  v1::JobSpec spec = SyntheticSpec(20);
  spec.set_precision("bf16-true");
  auto trainer = Trainer::Create(OptionsFor(spec));
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
  v1::JobSpec spec = SyntheticSpec(100);
  (*spec.mutable_dataset_options())["noise"] = "50";
  spec.set_precision("bf16-mixed");
  spec.mutable_grad_scaler()->set_enabled(true);
  spec.mutable_grad_scaler()->set_init_scale(std::numeric_limits<float>::max());
  spec.set_lr_schedule("cosine");
  spec.set_warmup_steps(5);
  spec.set_min_lr(1e-5);
  const Trainer::Options options = OptionsFor(spec);
  auto trainer = Trainer::Create(options);
  ASSERT_OK(trainer);
  testing::FakeJobContext context;
  ASSERT_OK((*trainer)->Run(context));
  const v1::Job job = context.job();
  const int64_t skipped = job.precision_stats().skipped_steps();
  ASSERT_GT(skipped, 0);
  LrSchedule::Options schedule_options = options.job.lr_schedule;
  schedule_options.total_steps = 100;
  auto schedule = LrSchedule::Create(schedule_options);
  ASSERT_OK(schedule);
  // The last step (100) ran after 99 steps, `skipped` of which were skipped.
  EXPECT_DOUBLE_EQ(job.progress().lr(), schedule->LrAt(99 - skipped));
  EXPECT_NE(job.progress().lr(), schedule->LrAt(99));
}

}  // namespace
}  // namespace mantissa

namespace mantissa {
namespace {

absl::StatusOr<v1::JobResult> RunTrainer(Trainer::Options options, FakeJobContext& context) {
  ASSIGN_OR_RETURN(std::unique_ptr<Trainer> trainer, Trainer::Create(std::move(options)));
  return trainer->Run(context);
}

TEST(TrainerCheckpointTest, AResumedRunEndsExactlyWhereAnUninterruptedOneDoes) {
  testing::TempDir dir;
  v1::JobSpec spec = SyntheticSpec(60);
  spec.set_checkpoint_every_n_steps(20);
  spec.set_progress_every_n_steps(5);
  spec.set_precision("bf16-mixed");
  const Trainer::Options options = OptionsFor(spec);

  FakeJobContext whole_context;
  Trainer::Options whole = options;
  whole.checkpoint_path = dir.File("whole/checkpoint.pt");
  auto whole_result = RunTrainer(whole, whole_context);
  ASSERT_OK(whole_result);
  EXPECT_EQ(whole_context.job().checkpoint().step(), 60);
  std::vector<int64_t> checkpoint_steps;
  for (const v1::JobEvent& e : whole_context.events()) {
    if (e.type() == v1::JobEvent::CHECKPOINT)
      checkpoint_steps.push_back(e.job().checkpoint().step());
  }
  EXPECT_EQ(checkpoint_steps, (std::vector<int64_t>{20, 40, 60}));

  // Cancelled after step 25: the job writes a checkpoint as it stops.
  Trainer::Options first = options;
  first.checkpoint_path = dir.File("first/checkpoint.pt");
  FakeJobContext first_context;
  first_context.set_on_update([](const v1::JobEvent& e, FakeJobContext& ctx) {
    if (e.type() == v1::JobEvent::PROGRESS && e.job().progress().step() == 25) ctx.Cancel();
  });
  EXPECT_THAT(RunTrainer(first, first_context),
              StatusIs(absl::StatusCode::kCancelled, ::testing::_));
  EXPECT_EQ(first_context.job().checkpoint().step(), 25);

  Trainer::Options second = options;
  second.checkpoint_path = dir.File("second/checkpoint.pt");
  second.resume_path = first.checkpoint_path;
  FakeJobContext second_context;
  auto resumed = RunTrainer(second, second_context);
  ASSERT_OK(resumed);
  EXPECT_EQ(second_context.job().start_step(), 25);
  EXPECT_EQ(resumed->steps_completed(), 60);
  // Same weights, optimizer state, data position: the same run.
  EXPECT_DOUBLE_EQ(resumed->final_loss(), whole_result->final_loss());
  EXPECT_DOUBLE_EQ(resumed->eval_accuracy(), whole_result->eval_accuracy());
  // The first progress after resuming continues the loss curve.
  double whole_at_30 = 0, resumed_at_30 = 0;
  for (const v1::JobEvent& e : whole_context.events()) {
    if (e.type() == v1::JobEvent::PROGRESS && e.job().progress().step() == 30) {
      whole_at_30 = e.job().progress().loss();
    }
  }
  for (const v1::JobEvent& e : second_context.events()) {
    if (e.type() == v1::JobEvent::PROGRESS && e.job().progress().step() == 30) {
      resumed_at_30 = e.job().progress().loss();
    }
  }
  EXPECT_GT(whole_at_30, 0);
  EXPECT_DOUBLE_EQ(resumed_at_30, whole_at_30);
}

TEST(TrainerCheckpointTest, ACheckpointOfAnotherModelIsRefused) {
  testing::TempDir dir;
  Trainer::Options options = SyntheticOptions(5);
  options.checkpoint_path = dir.File("a.pt");
  FakeJobContext context;
  ASSERT_OK(RunTrainer(options, context));
  v1::JobSpec other_spec = SyntheticSpec(5);
  (*other_spec.mutable_model_options())["hidden"] = "8";
  Trainer::Options other = OptionsFor(other_spec);
  other.resume_path = options.checkpoint_path;
  EXPECT_THAT(Trainer::Create(other),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("does not match the model")));
}

TEST(TrainerTest, AccumulatingTwoHalfBatchesMatchesOneFullBatch) {
  Trainer::Options full = SyntheticOptions(40);
  v1::JobSpec accumulated_spec = SyntheticSpec(40);
  accumulated_spec.set_batch_size(16);
  accumulated_spec.set_accumulate_grad_batches(2);
  Trainer::Options accumulated = OptionsFor(accumulated_spec);
  FakeJobContext a, b;
  auto full_result = RunTrainer(full, a);
  auto accumulated_result = RunTrainer(accumulated, b);
  ASSERT_OK(full_result);
  ASSERT_OK(accumulated_result);
  EXPECT_EQ(accumulated_result->steps_completed(), 40);
  // The same items and the same mean gradient per step, summed in another
  // order: equal up to float rounding.
  EXPECT_NEAR(accumulated_result->final_loss(), full_result->final_loss(),
              1e-4 * full_result->final_loss());
  EXPECT_EQ(b.job().progress().total_epochs(), a.job().progress().total_epochs());
}

TEST(TrainerTest, AccumulationCountsStepsInOptimizerSteps) {
  v1::JobSpec spec = SyntheticSpec(1);
  spec.clear_steps();
  spec.set_epochs(1);
  spec.set_accumulate_grad_batches(3);  // 32 batches per epoch -> 11 steps
  auto trainer = Trainer::Create(OptionsFor(spec));
  ASSERT_OK(trainer);
  EXPECT_EQ((*trainer)->total_steps(), 11);
  FakeJobContext context;
  auto result = (*trainer)->Run(context);
  ASSERT_OK(result);
  EXPECT_EQ(result->steps_completed(), 11);
  EXPECT_EQ(context.job().precision_stats().optimizer_steps(), 11);
}

}  // namespace
}  // namespace mantissa

namespace mantissa {
namespace {

TEST(TrainerCudaGraphTest, OnTheCpuTheJobWarnsAndTrainsEagerly) {
  Trainer::Options eager = SyntheticOptions(20);
  v1::JobSpec graph_spec = SyntheticSpec(20);
  graph_spec.set_cuda_graph(true);
  Trainer::Options graph = OptionsFor(graph_spec);
  FakeJobContext eager_context, graph_context;
  auto eager_result = RunTrainer(eager, eager_context);
  auto graph_result = RunTrainer(graph, graph_context);
  ASSERT_OK(eager_result);
  ASSERT_OK(graph_result);
  EXPECT_EQ(eager_context.job().warnings_size(), 0);
  ASSERT_EQ(graph_context.job().warnings_size(), 1);
  EXPECT_EQ(graph_context.job().warnings(0),
            "cuda_graph: the job runs on cpu, CUDA graphs need a CUDA device; training eagerly");
  EXPECT_DOUBLE_EQ(graph_result->final_loss(), eager_result->final_loss());
  EXPECT_EQ(graph_context.job().precision_stats().optimizer_steps(), 20);
}

TEST(TrainerTest, EpochsAreCountedAgainstMaxJobStepsOnceTheDataIsKnown) {
  v1::JobSpec spec = SyntheticSpec(1);
  spec.clear_steps();
  spec.set_epochs(50);  // 1024 / 32 = 32 batches an epoch: 1600 steps
  Trainer::Options options = OptionsFor(spec);
  options.limits.max_job_steps = 1000;
  EXPECT_THAT(Trainer::Create(options),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::AllOf(HasSubstr("epochs: the job comes to 1600 steps"),
                                        HasSubstr("--max_job_steps"))));
  spec.set_epochs(31);
  options.job = OptionsFor(spec).job;
  EXPECT_OK(Trainer::Create(options));
}

TEST(TrainerTest, AModelBeyondTheLimitsIsRefusedBeforeItIsBuilt) {
  v1::JobSpec spec = SyntheticSpec(1);
  (*spec.mutable_model_options())["hidden"] = "1000000,1000000";  // 1e12 parameters
  Trainer::Options options = OptionsFor(spec);
  auto refused = Trainer::Create(options);
  EXPECT_THAT(refused,
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("--max_model_parameters")));
  options.limits.max_model_parameters = int64_t{1} << 62;
  EXPECT_THAT(
      Trainer::Create(options),
      StatusIs(absl::StatusCode::kResourceExhausted,
               ::testing::AllOf(HasSubstr("training needs an estimated"), HasSubstr("is free"))));
}

}  // namespace
}  // namespace mantissa
