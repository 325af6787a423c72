#include "server/training/job_spec_resolver.h"

#include <gtest/gtest.h>

#include "tests/testing/status_matchers.h"

namespace mantissa {
namespace {

using ::testing::HasSubstr;
using testing::StatusIs;

v1::JobSpec Minimal() {
  v1::JobSpec spec;
  spec.set_model("mlp");
  spec.set_dataset("synthetic");
  return spec;
}

TEST(JobSpecResolverTest, FillsDefaults) {
  auto prepared = ResolveJobSpec(Minimal());
  ASSERT_OK(prepared);
  const v1::JobSpec& spec = prepared->spec;
  EXPECT_EQ(spec.epochs(), 1);
  EXPECT_FALSE(spec.has_steps());
  EXPECT_EQ(spec.batch_size(), kDefaultBatchSize);
  EXPECT_EQ(spec.optimizer(), "adamw");
  EXPECT_DOUBLE_EQ(spec.lr(), kDefaultLr);
  EXPECT_DOUBLE_EQ(spec.weight_decay(), kDefaultAdamWWeightDecay);
  EXPECT_EQ(spec.progress_every_n_steps(), kDefaultProgressEveryNSteps);
  EXPECT_EQ(spec.eval().batch_size(), kDefaultBatchSize);
  EXPECT_EQ(spec.precision(), "32-true");
  EXPECT_EQ(prepared->effective_precision, "32-true");
}

TEST(JobSpecResolverTest, KeepsWhatTheUserSet) {
  v1::JobSpec in = Minimal();
  in.set_steps(5);
  in.set_optimizer("sgd");
  in.set_momentum(0.9);
  in.set_lr(0.5);
  in.set_precision("32");
  auto prepared = ResolveJobSpec(in);
  ASSERT_OK(prepared);
  EXPECT_EQ(prepared->spec.steps(), 5);
  EXPECT_FALSE(prepared->spec.has_epochs());
  EXPECT_DOUBLE_EQ(prepared->spec.weight_decay(), 0.0);
  EXPECT_DOUBLE_EQ(prepared->spec.momentum(), 0.9);
  EXPECT_EQ(prepared->spec.precision(), "32");  // as submitted
  EXPECT_EQ(prepared->effective_precision, "32-true");
}

TEST(JobSpecResolverTest, ErrorsNameTheField) {
  struct Case {
    std::function<void(v1::JobSpec&)> mutate;
    absl::StatusCode code;
    std::string field;
  };
  const std::vector<Case> cases = {
      {[](v1::JobSpec& s) { s.set_steps(-1); }, absl::StatusCode::kInvalidArgument, "steps"},
      {[](v1::JobSpec& s) { s.set_epochs(0); }, absl::StatusCode::kInvalidArgument, "epochs"},
      {[](v1::JobSpec& s) { s.set_batch_size(0); }, absl::StatusCode::kInvalidArgument,
       "batch_size"},
      {[](v1::JobSpec& s) { s.set_batch_size(1 << 21); }, absl::StatusCode::kInvalidArgument,
       "batch_size"},
      {[](v1::JobSpec& s) { s.set_lr(-1); }, absl::StatusCode::kInvalidArgument, "lr"},
      {[](v1::JobSpec& s) { s.set_lr(std::numeric_limits<double>::infinity()); },
       absl::StatusCode::kInvalidArgument, "lr"},
      {[](v1::JobSpec& s) { s.set_weight_decay(-0.1); }, absl::StatusCode::kInvalidArgument,
       "weight_decay"},
      {[](v1::JobSpec& s) {
         s.set_optimizer("sgd");
         s.set_momentum(1.5);
       },
       absl::StatusCode::kInvalidArgument, "momentum"},
      {[](v1::JobSpec& s) { s.mutable_eval()->set_every_n_steps(-2); },
       absl::StatusCode::kInvalidArgument, "eval.every_n_steps"},
      {[](v1::JobSpec& s) { s.clear_dataset(); }, absl::StatusCode::kInvalidArgument, "dataset"},
      {[](v1::JobSpec& s) { s.set_model("nope"); }, absl::StatusCode::kNotFound, "model"},
      {[](v1::JobSpec& s) { s.set_precision("half"); }, absl::StatusCode::kInvalidArgument,
       "precision"},
  };
  for (const Case& c : cases) {
    v1::JobSpec spec = Minimal();
    c.mutate(spec);
    EXPECT_THAT(ResolveJobSpec(spec), StatusIs(c.code, HasSubstr(c.field + ":")))
        << spec.ShortDebugString();
  }
}

}  // namespace
}  // namespace mantissa
