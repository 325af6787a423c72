#include "server/training/trainer.h"

#include <gtest/gtest.h>

#include <future>
#include <thread>

#include "server/common/status_macros.h"
#include "server/training/data_parallel.h"
#include "server/training/job_spec_resolver.h"
#include "tests/testing/fake_job_context.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/trainer_options.h"

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

Trainer::Options OptionsFor(const v1::JobSpec& spec) { return testing::CpuTrainerOptions(spec); }

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

namespace mantissa {
namespace {

// Makes the gradient of the trainer's parameter `index` infinite in the
// `at`-th backward (1-based): an overflow in one known layer.
void OverflowGradientAt(Trainer& trainer, size_t index, int at) {
  auto backwards = std::make_shared<int>(0);
  trainer.model().Parameters()[index].register_hook(
      [backwards, at](torch::Tensor grad) { return ++*backwards == at ? grad * 1e39 : grad; });
}

std::vector<v1::JobEvent> EventsOf(FakeJobContext& context, v1::JobEvent::Type type) {
  std::vector<v1::JobEvent> events;
  for (const v1::JobEvent& e : context.events()) {
    if (e.type() == type) events.push_back(e);
  }
  return events;
}

TEST(TrainerGradientTest, AScaledOverflowIsTracedToItsLayerAndBatch) {
  v1::JobSpec spec = SyntheticSpec(10);
  spec.set_progress_every_n_steps(5);
  spec.mutable_grad_scaler()->set_enabled(true);  // in 32-true
  auto trainer = Trainer::Create(OptionsFor(spec));
  ASSERT_OK(trainer);
  OverflowGradientAt(**trainer, 0, /*at=*/3);
  FakeJobContext context;
  ASSERT_OK((*trainer)->Run(context));

  const v1::Job job = context.job();
  EXPECT_EQ(job.precision_stats().skipped_steps(), 1);
  ASSERT_TRUE(job.precision_stats().has_last_non_finite());
  const v1::NonFiniteStep& record = job.precision_stats().last_non_finite();
  EXPECT_EQ(record.step(), 3);
  EXPECT_EQ(record.epoch(), 1);
  EXPECT_EQ(record.batch(), 2);
  EXPECT_EQ(record.batches(), 1);
  EXPECT_EQ(record.first_item(), 64);
  EXPECT_EQ(record.items(), 32);
  EXPECT_FALSE(record.loss_non_finite());
  ASSERT_EQ(record.parameters_size(), 1);
  EXPECT_EQ(record.parameters(0), "1.weight");  // Flatten, Linear, ReLU, Linear
  EXPECT_EQ(record.non_finite_parameters(), 1);
  EXPECT_TRUE(record.skipped());
  EXPECT_EQ(record.steps_in_interval(), 1);

  const std::vector<v1::JobEvent> warnings = EventsOf(context, v1::JobEvent::WARNING);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_EQ(warnings[0].message(),
            "step 3 (epoch 1, batch 2 of 32 in the seeded order, items 64-95): loss finite; "
            "non-finite gradients in 1 of 4 parameters: 1.weight; skipped by the grad scaler");
  EXPECT_EQ(warnings[0].job().precision_stats().last_non_finite().step(), 3);
  // Both intervals report a finite norm; the record stays after the next one.
  const std::vector<v1::JobEvent> progress = EventsOf(context, v1::JobEvent::PROGRESS);
  ASSERT_EQ(progress.size(), 2u);
  for (const v1::JobEvent& e : progress) {
    EXPECT_TRUE(e.job().progress().has_grad_norm());
    EXPECT_GE(e.job().progress().max_grad_norm(), e.job().progress().grad_norm());
    EXPECT_EQ(e.job().precision_stats().last_non_finite().step(), 3);
  }
}

TEST(TrainerGradientTest, AnIntervalWithoutAFiniteNormHasNoLargestNorm) {
  v1::JobSpec spec = SyntheticSpec(10);
  spec.set_progress_every_n_steps(5);
  spec.mutable_grad_scaler()->set_enabled(true);  // in 32-true
  auto trainer = Trainer::Create(OptionsFor(spec));
  ASSERT_OK(trainer);
  // Every step of the second interval (steps 6-10) overflows.
  auto backwards = std::make_shared<int>(0);
  (*trainer)->model().Parameters()[0].register_hook(
      [backwards](torch::Tensor grad) { return ++*backwards > 5 ? grad * 1e39 : grad; });
  FakeJobContext context;
  ASSERT_OK((*trainer)->Run(context));

  const std::vector<v1::JobEvent> progress = EventsOf(context, v1::JobEvent::PROGRESS);
  ASSERT_EQ(progress.size(), 2u);
  const v1::Progress& first = progress[0].job().progress();
  const v1::Progress& second = progress[1].job().progress();
  ASSERT_TRUE(first.has_max_grad_norm());
  // The latest finite norm stays; the largest is the interval's own.
  EXPECT_EQ(second.grad_norm(), first.grad_norm());
  EXPECT_FALSE(second.has_max_grad_norm());
  EXPECT_EQ(context.job().precision_stats().last_non_finite().step(), 6);
  EXPECT_EQ(context.job().precision_stats().last_non_finite().steps_in_interval(), 5);
}

TEST(TrainerGradientTest, WithoutAScalerTheFailureNamesTheLayer) {
  v1::JobSpec spec = SyntheticSpec(10);
  auto trainer = Trainer::Create(OptionsFor(spec));
  ASSERT_OK(trainer);
  OverflowGradientAt(**trainer, 2, /*at=*/3);
  FakeJobContext context;
  // The optimizer applied the infinite gradient; the next loss is NaN.
  EXPECT_THAT((*trainer)->Run(context),
              StatusIs(absl::StatusCode::kInternal,
                       ::testing::AllOf(HasSubstr("step 4: the loss is nan"),
                                        HasSubstr("; step 3 (epoch 1, batch 2 of 32"),
                                        HasSubstr("loss finite; non-finite gradients in 1 of 4 "
                                                  "parameters: 3.weight"))));
  const v1::Job job = context.job();
  const v1::NonFiniteStep& record = job.precision_stats().last_non_finite();
  EXPECT_EQ(record.step(), 3);
  ASSERT_EQ(record.parameters_size(), 1);
  EXPECT_EQ(record.parameters(0), "3.weight");
  EXPECT_FALSE(record.skipped());
  EXPECT_FALSE(record.loss_non_finite());
  // The record reaches the job as a warning, not as another progress report.
  ASSERT_GT(job.warnings_size(), 0);
  EXPECT_THAT(job.warnings(job.warnings_size() - 1), HasSubstr("step 3 (epoch 1, batch 2 of 32"));
  const v1::JobEvent& last = context.events().back();
  EXPECT_EQ(last.type(), v1::JobEvent::WARNING);
  EXPECT_EQ(last.job().precision_stats().last_non_finite().step(), 3);
}

// The L2 norm of the model's gradients, as clip_grad_norm_ computes it.
double ModelGradNorm(Trainer& trainer) {
  std::vector<torch::Tensor> norms;
  for (const torch::Tensor& p : trainer.model().Parameters()) norms.push_back(p.grad().norm(2));
  return torch::stack(norms).norm(2).item<double>();
}

TEST(TrainerGradientTest, ProgressReportsTheUnscaledGradientNorm) {
  for (const bool scaled : {false, true}) {
    SCOPED_TRACE(scaled ? "bf16-mixed, scaled" : "32-true");
    v1::JobSpec spec = SyntheticSpec(1);
    if (scaled) {
      spec.set_precision("bf16-mixed");
      spec.mutable_grad_scaler()->set_enabled(true);
    }
    auto trainer = Trainer::Create(OptionsFor(spec));
    ASSERT_OK(trainer);
    FakeJobContext context;
    ASSERT_OK((*trainer)->Run(context));
    // The step's gradients are still there (unscaled by the scaler's step).
    const double expected = ModelGradNorm(**trainer);
    EXPECT_GT(expected, 0);
    const v1::Progress& progress = context.job().progress();
    // Exact in 32-true; scaled gradients' norms accumulate in float64.
    const double tolerance = scaled ? 1e-6 * expected : 0;
    EXPECT_NEAR(progress.grad_norm(), expected, tolerance);
    EXPECT_NEAR(progress.max_grad_norm(), expected, tolerance);
    EXPECT_FALSE(context.job().precision_stats().has_last_non_finite());
    EXPECT_EQ(context.job().precision_stats().bf16_update(), "nearest");
  }
}

TEST(TrainerGradientTest, ClippingMatchesClipGradNorm) {
  // The same first step with and without clipping: the clipped gradients
  // are clip_grad_norm_'s of the unclipped ones, bit for bit, and the norm
  // reported is the norm before clipping.
  v1::JobSpec spec = SyntheticSpec(1);
  spec.mutable_eval()->set_disabled(true);
  v1::JobSpec clipped_spec = spec;
  clipped_spec.set_gradient_clip_norm(0.05);
  auto plain = Trainer::Create(OptionsFor(spec));
  auto clipped = Trainer::Create(OptionsFor(clipped_spec));
  ASSERT_OK(plain);
  ASSERT_OK(clipped);
  FakeJobContext plain_context, clipped_context;
  ASSERT_OK((*plain)->Run(plain_context));
  ASSERT_OK((*clipped)->Run(clipped_context));
  const double unclipped_norm = ModelGradNorm(**plain);
  EXPECT_EQ(clipped_context.job().progress().grad_norm(), unclipped_norm);
  ASSERT_GT(unclipped_norm, 0.05);  // the clip is active

  std::vector<torch::Tensor> reference = (*plain)->model().Parameters();
  torch::nn::utils::clip_grad_norm_(reference, 0.05);
  const std::vector<torch::Tensor> ours = (*clipped)->model().Parameters();
  ASSERT_EQ(ours.size(), reference.size());
  for (size_t i = 0; i < ours.size(); ++i) {
    EXPECT_TRUE(torch::equal(ours[i].grad(), reference[i].grad())) << "parameter " << i;
  }
  EXPECT_NEAR(ModelGradNorm(**clipped), 0.05, 1e-6);
}

}  // namespace
}  // namespace mantissa

namespace mantissa {
namespace {

TEST(TrainerGradientTest, TheRecordIsKeptByTheNextAttempt) {
  testing::TempDir dir;
  v1::JobSpec spec = SyntheticSpec(10);
  spec.set_progress_every_n_steps(5);
  spec.set_checkpoint_every_n_steps(5);
  spec.mutable_grad_scaler()->set_enabled(true);
  Trainer::Options options = OptionsFor(spec);
  options.checkpoint_path = dir.File("checkpoint.pt");
  auto first = Trainer::Create(options);
  ASSERT_OK(first);
  OverflowGradientAt(**first, 0, /*at=*/2);
  FakeJobContext first_context;
  first_context.set_on_update([](const v1::JobEvent& e, FakeJobContext& ctx) {
    if (e.type() == v1::JobEvent::PROGRESS && e.job().progress().step() == 5) ctx.Cancel();
  });
  ASSERT_THAT((*first)->Run(first_context), StatusIs(absl::StatusCode::kCancelled, ::testing::_));
  ASSERT_EQ(first_context.job().precision_stats().last_non_finite().step(), 2);

  // The next attempt resumes the same job: its stats replace the old ones
  // but keep the record, which no later step replaced.
  options.resume_path = options.checkpoint_path;
  auto second = Trainer::Create(options);
  ASSERT_OK(second);
  FakeJobContext second_context;
  const v1::Job stored = first_context.job();
  second_context.Update(
      v1::JobEvent::STATE_CHANGED, [&](v1::Job& job) { job = stored; }, "");
  ASSERT_OK((*second)->Run(second_context));
  const v1::Job job = second_context.job();
  EXPECT_EQ(job.start_step(), 5);
  EXPECT_EQ(job.progress().step(), 10);
  EXPECT_EQ(job.precision_stats().optimizer_steps(), 10);
  EXPECT_EQ(job.precision_stats().last_non_finite().step(), 2);
  EXPECT_EQ(job.precision_stats().last_non_finite().parameters(0), "1.weight");
}

TEST(TrainerGradientTest, KahanTrainsEagerlyAndCountsItsBuffers) {
  v1::JobSpec spec = SyntheticSpec(3);
  spec.set_precision("bf16-true");
  spec.set_bf16_update("kahan");
  spec.set_cuda_graph(true);
  auto trainer = Trainer::Create(OptionsFor(spec));
  ASSERT_OK(trainer);
  FakeJobContext context;
  ASSERT_OK((*trainer)->Run(context));
  const v1::Job job = context.job();
  ASSERT_EQ(job.warnings_size(), 1);
  EXPECT_EQ(job.warnings(0), "cuda_graph: not with bf16_update=kahan; training eagerly");
  EXPECT_EQ(job.precision_stats().bf16_update(), "kahan");
  // One bf16 buffer per parameter.
  EXPECT_EQ(job.memory().compensation_bytes(), job.parameter_count() * 2);
}

}  // namespace
}  // namespace mantissa

namespace mantissa {
namespace {

// Trains `spec` on two ranks (threads, Gloo over 127.0.0.1); `prepare` gets
// each rank's trainer before it runs.
std::vector<v1::Job> TrainOnTwoRanks(const v1::JobSpec& spec,
                                     const std::function<void(int, Trainer&)>& prepare) {
  std::vector<v1::Job> jobs(2);
  std::promise<int> port;
  std::shared_future<int> ready = port.get_future().share();
  std::vector<std::thread> threads;
  for (int rank = 0; rank < 2; ++rank) {
    threads.emplace_back([&, rank] {
      at::set_num_threads(1);
      DataParallel::Options dp_options{.rank = rank,
                                       .world_size = 2,
                                       .master_port = rank == 0 ? 0 : ready.get(),
                                       .store_prefix = "gradients/1"};
      if (rank == 0) dp_options.on_store_ready = [&](int p) { port.set_value(p); };
      auto dp = DataParallel::Create(dp_options);
      ASSERT_OK(dp);
      Trainer::Options options = OptionsFor(spec);
      options.data_parallel = dp->get();
      auto trainer = Trainer::Create(std::move(options));
      ASSERT_OK(trainer);
      prepare(rank, **trainer);
      FakeJobContext context;
      ASSERT_OK((*trainer)->Run(context));
      jobs[rank] = context.job();
    });
  }
  for (std::thread& t : threads) t.join();
  return jobs;
}

TEST(TrainerGradientTest, RanksReportTheGlobalNormAndTheSameRecord) {
  v1::JobSpec spec = SyntheticSpec(4);
  spec.set_batch_size(16);  // per rank: global batches of 32
  spec.set_progress_every_n_steps(4);
  spec.set_memory_baseline_steps(0);
  spec.mutable_eval()->set_disabled(true);
  spec.mutable_grad_scaler()->set_enabled(true);
  // Rank 1's gradient of 3.bias overflows in step 2; the sum carries it to
  // rank 0, and both skip the step.
  const std::vector<v1::Job> jobs = TrainOnTwoRanks(spec, [](int rank, Trainer& trainer) {
    if (rank == 1) OverflowGradientAt(trainer, 3, /*at=*/2);
  });
  for (int rank = 0; rank < 2; ++rank) {
    SCOPED_TRACE(rank);
    const v1::NonFiniteStep& record = jobs[rank].precision_stats().last_non_finite();
    EXPECT_EQ(record.step(), 2);
    EXPECT_EQ(record.batch(), 1);
    EXPECT_EQ(record.first_item(), 32);  // in the global order
    EXPECT_EQ(record.items(), 32);
    ASSERT_EQ(record.parameters_size(), 1);
    EXPECT_EQ(record.parameters(0), "3.bias");
    EXPECT_TRUE(record.skipped());
    EXPECT_EQ(jobs[rank].precision_stats().skipped_steps(), 1);
    // The norm of the summed gradients: the same on every rank.
    EXPECT_GT(jobs[rank].progress().grad_norm(), 0);
    EXPECT_EQ(jobs[rank].progress().grad_norm(), jobs[0].progress().grad_norm());
    EXPECT_EQ(jobs[rank].progress().max_grad_norm(), jobs[0].progress().max_grad_norm());
  }
}

}  // namespace
}  // namespace mantissa
