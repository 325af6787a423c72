// JobSpec.bf16_update through the trainer: kahan and stochastic runs of
// bf16-true are reproducible, a resumed run is bitwise the uninterrupted one
// (weights and compensation buffers), and the memory report counts the
// buffers.

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "server/precision/half_precision.h"
#include "server/training/job_spec_resolver.h"
#include "server/training/trainer.h"
#include "tests/testing/fake_job_context.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/trainer_options.h"

namespace mantissa {
namespace {

using testing::FakeJobContext;
using testing::StatusIs;

constexpr int64_t kHalf = 10;  // steps before the checkpoint; the run takes twice that

v1::JobSpec Spec(const std::string& rounding) {
  v1::JobSpec spec;
  spec.set_model("mlp");
  (*spec.mutable_model_options())["hidden"] = "32";
  spec.set_dataset("synthetic");
  (*spec.mutable_dataset_options())["train_size"] = "512";
  (*spec.mutable_dataset_options())["test_size"] = "64";
  spec.set_steps(2 * kHalf);
  spec.set_batch_size(32);
  spec.set_seed(5);
  spec.set_precision("bf16-true");
  spec.set_bf16_update(rounding);
  // AdamW's default decay (decoupled) and a rate at which most updates
  // are below half a bfloat16 unit of the weights.
  spec.set_optimizer("adamw");
  spec.set_lr(1e-4);
  spec.set_progress_every_n_steps(kHalf);
  spec.set_checkpoint_every_n_steps(kHalf);
  spec.mutable_eval()->set_disabled(true);
  return spec;
}

Trainer::Options OptionsFor(const v1::JobSpec& spec) { return testing::CpuTrainerOptions(spec); }

// What a run leaves behind: its weights, its compensation buffers and the job.
struct Outcome {
  std::vector<torch::Tensor> weights;
  std::vector<torch::Tensor> compensation;
  v1::Job job;
  absl::Status status;
};

Outcome Train(const Trainer::Options& options, FakeJobContext& context) {
  Outcome outcome;
  auto trainer = Trainer::Create(options);
  if (!trainer.ok()) {
    outcome.status = trainer.status();
    return outcome;
  }
  outcome.status = (*trainer)->Run(context).status();
  for (const torch::Tensor& p : (*trainer)->model().Parameters()) {
    outcome.weights.push_back(p.detach().clone());
  }
  const auto& plugin = dynamic_cast<const HalfPrecision&>((*trainer)->precision());
  for (const torch::Tensor& c : plugin.update().compensation()) {
    outcome.compensation.push_back(c.clone());
  }
  outcome.job = context.job();
  return outcome;
}

bool Identical(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!torch::equal(a[i], b[i])) return false;
  }
  return true;
}

class Bf16UpdateTrainerTest : public ::testing::TestWithParam<std::string> {};

TEST_P(Bf16UpdateTrainerTest, AResumedRunIsBitwiseTheUninterruptedOne) {
  testing::TempDir dir;
  const Trainer::Options options = OptionsFor(Spec(GetParam()));
  EXPECT_EQ(options.job.spec.bf16_update(), GetParam());

  Trainer::Options whole = options;
  whole.checkpoint_path = dir.File("whole/checkpoint.pt");
  FakeJobContext whole_context;
  const Outcome uninterrupted = Train(whole, whole_context);
  ASSERT_OK(uninterrupted.status);

  // Cancelled once step kHalf's checkpoint is written, then resumed.
  Trainer::Options first = options;
  first.checkpoint_path = dir.File("first/checkpoint.pt");
  FakeJobContext first_context;
  first_context.set_on_update([](const v1::JobEvent& e, FakeJobContext& ctx) {
    if (e.type() == v1::JobEvent::PROGRESS && e.job().progress().step() == kHalf) ctx.Cancel();
  });
  const Outcome cancelled = Train(first, first_context);
  EXPECT_THAT(cancelled.status, StatusIs(absl::StatusCode::kCancelled, ::testing::_));
  ASSERT_EQ(first_context.job().checkpoint().step(), kHalf);
  // Half-way the weights still differ from the end's.
  EXPECT_FALSE(Identical(cancelled.weights, uninterrupted.weights));

  Trainer::Options second = options;
  second.checkpoint_path = dir.File("second/checkpoint.pt");
  second.resume_path = first.checkpoint_path;
  FakeJobContext second_context;
  const Outcome resumed = Train(second, second_context);
  ASSERT_OK(resumed.status);
  EXPECT_EQ(second_context.job().start_step(), kHalf);
  EXPECT_TRUE(Identical(resumed.weights, uninterrupted.weights));
  EXPECT_TRUE(Identical(resumed.compensation, uninterrupted.compensation));
  if (GetParam() == "kahan") {
    ASSERT_EQ(uninterrupted.compensation.size(), uninterrupted.weights.size());
    // The buffers hold what rounding dropped: not all zero.
    bool nonzero = false;
    for (const torch::Tensor& c : uninterrupted.compensation) nonzero |= c.any().item<bool>();
    EXPECT_TRUE(nonzero);
  }
}

TEST_P(Bf16UpdateTrainerTest, TwoRunsWithTheSameSeedAreIdentical) {
  Outcome runs[2];
  for (Outcome& run : runs) {
    FakeJobContext context;
    run = Train(OptionsFor(Spec(GetParam())), context);
    ASSERT_OK(run.status);
  }
  EXPECT_TRUE(Identical(runs[0].weights, runs[1].weights));
  EXPECT_TRUE(Identical(runs[0].compensation, runs[1].compensation));
  const v1::Job& job = runs[0].job;
  EXPECT_EQ(job.precision_stats().bf16_update(), GetParam());
  // kahan: one buffer of the weights' dtype per parameter.
  const int64_t compensation = GetParam() == "kahan" ? job.memory().parameter_bytes() : 0;
  EXPECT_GT(job.memory().parameter_bytes(), 0);
  EXPECT_EQ(job.memory().compensation_bytes(), compensation);
}

INSTANTIATE_TEST_SUITE_P(KahanAndStochastic, Bf16UpdateTrainerTest,
                         ::testing::Values("kahan", "stochastic"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace
}  // namespace mantissa
