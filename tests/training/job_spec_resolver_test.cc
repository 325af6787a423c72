#include "server/training/job_spec_resolver.h"

#include <gtest/gtest.h>

#include <limits>

#include "absl/strings/str_cat.h"
#include "server/common/torch_compat.h"
#include "server/models/model_registry.h"
#include "server/precision/precision_registry.h"
#include "server/training/memory_estimate.h"
#include "tests/testing/status_matchers.h"

namespace mantissa {
namespace {

using ::testing::HasSubstr;
using testing::StatusIs;

const ResolveContext& Cpu() {
  static const ResolveContext* const context =
      new ResolveContext{DeviceCapabilities::Probe(torch::kCPU), 1};
  return *context;
}

v1::JobSpec Minimal() {
  v1::JobSpec spec;
  spec.set_model("mlp");
  spec.set_dataset("synthetic");
  return spec;
}

TEST(JobSpecResolverTest, FillsDefaults) {
  auto prepared = ResolveJobSpec(Minimal(), Cpu());
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
  auto prepared = ResolveJobSpec(in, Cpu());
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
    EXPECT_THAT(ResolveJobSpec(spec, Cpu()), StatusIs(c.code, HasSubstr(c.field + ":")))
        << spec.ShortDebugString();
  }
}

}  // namespace
}  // namespace mantissa

namespace mantissa {
namespace {

using ::testing::HasSubstr;
using testing::StatusIs;

ResolveContext CpuContext(int max_concurrent_jobs = 1) {
  return ResolveContext{DeviceCapabilities::Probe(torch::kCPU), max_concurrent_jobs};
}

// A device that computes float16 (as CUDA does), without needing one.
ResolveContext Float16Context() {
  ResolveContext context = CpuContext();
  context.caps.device = torch::Device(torch::kCUDA, 0);
  context.caps.float16 = context.caps.autocast_float16 = true;
  return context;
}

v1::JobSpec Spec(const std::string& precision) {
  v1::JobSpec spec;
  spec.set_model("mlp");
  spec.set_dataset("synthetic");
  spec.set_precision(precision);
  return spec;
}

TEST(JobSpecResolverPrecisionTest, GradScalerDefaultsAreTorchAmpsAndOnFor16MixedOnly) {
  auto bf16 = ResolveJobSpec(Spec("bf16-mixed"), CpuContext());
  ASSERT_OK(bf16);
  const v1::GradScalerSettings& gs = bf16->spec.grad_scaler();
  EXPECT_FALSE(gs.enabled());
  EXPECT_DOUBLE_EQ(gs.init_scale(), 65536.0);
  EXPECT_DOUBLE_EQ(gs.growth_factor(), 2.0);
  EXPECT_DOUBLE_EQ(gs.backoff_factor(), 0.5);
  EXPECT_EQ(gs.growth_interval(), 2000);
  EXPECT_EQ(bf16->spec.memory_baseline_steps(), kDefaultMemoryBaselineSteps);
  EXPECT_DOUBLE_EQ(bf16->spec.eps(), kDefaultAdamEps);

  auto fp16 = ResolveJobSpec(Spec("16-mixed"), Float16Context());
  ASSERT_OK(fp16);
  EXPECT_EQ(fp16->effective_precision, "16-mixed");
  EXPECT_TRUE(fp16->spec.grad_scaler().enabled());
  // On CPU 16-mixed runs as bf16-mixed, which has no scaler by default.
  auto cpu = ResolveJobSpec(Spec("16-mixed"), CpuContext());
  ASSERT_OK(cpu);
  EXPECT_EQ(cpu->effective_precision, "bf16-mixed");
  EXPECT_FALSE(cpu->spec.grad_scaler().enabled());

  v1::JobSpec on = Spec("32-true");
  on.mutable_grad_scaler()->set_enabled(true);
  auto enabled = ResolveJobSpec(on, CpuContext());
  ASSERT_OK(enabled);
  EXPECT_TRUE(enabled->spec.grad_scaler().enabled());
}

TEST(JobSpecResolverPrecisionTest, BadScalerAndOptimizerSettingsNameTheField) {
  const std::vector<std::pair<std::function<void(v1::JobSpec&)>, std::string>> cases = {
      {[](v1::JobSpec& s) { s.mutable_grad_scaler()->set_init_scale(0); },
       "grad_scaler.init_scale"},
      {[](v1::JobSpec& s) { s.mutable_grad_scaler()->set_growth_factor(1.0); },
       "grad_scaler.growth_factor"},
      {[](v1::JobSpec& s) { s.mutable_grad_scaler()->set_backoff_factor(1.5); },
       "grad_scaler.backoff_factor"},
      {[](v1::JobSpec& s) { s.mutable_grad_scaler()->set_growth_interval(0); },
       "grad_scaler.growth_interval"},
      {[](v1::JobSpec& s) { s.set_memory_baseline_steps(-1); }, "memory_baseline_steps"},
      {[](v1::JobSpec& s) { s.set_gradient_clip_norm(0); }, "gradient_clip_norm"},
      {[](v1::JobSpec& s) { s.set_eps(-1e-8); }, "eps"},
      {[](v1::JobSpec& s) {
         s.set_optimizer("sgd");
         s.set_eps(1e-8);
       },
       "eps"},
  };
  for (const auto& [mutate, field] : cases) {
    v1::JobSpec spec = Spec("bf16-mixed");
    mutate(spec);
    EXPECT_THAT(ResolveJobSpec(spec, CpuContext()),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(field + ":")))
        << field;
  }
}

TEST(JobSpecResolverPrecisionTest, Bf16UpdateDefaultsToNearestAndIsSeededWithTheJob) {
  v1::JobSpec in = Spec("bf16-mixed");
  in.set_seed(42);
  auto plain = ResolveJobSpec(in, CpuContext());
  ASSERT_OK(plain);
  EXPECT_EQ(plain->spec.bf16_update(), "nearest");
  EXPECT_EQ(plain->half_update.rounding, UpdateRounding::kNearest);
  for (const auto& [name, rounding] : std::vector<std::pair<std::string, UpdateRounding>>{
           {"kahan", UpdateRounding::kKahan},
           {"Stochastic", UpdateRounding::kStochastic},
           {"", UpdateRounding::kNearest}}) {
    v1::JobSpec half = Spec("bf16-true");
    half.set_seed(42);
    half.set_bf16_update(name);
    auto resolved = ResolveJobSpec(half, CpuContext());
    ASSERT_OK(resolved);
    EXPECT_EQ(resolved->half_update.rounding, rounding);
    EXPECT_EQ(resolved->half_update.seed, 42u);
    // Written back in its canonical spelling; resolving again changes nothing.
    EXPECT_EQ(resolved->spec.bf16_update(), UpdateRoundingName(rounding));
    auto again = ResolveJobSpec(resolved->spec, CpuContext());
    ASSERT_OK(again);
    EXPECT_EQ(again->spec.SerializeAsString(), resolved->spec.SerializeAsString());
  }
  v1::JobSpec mixed = Spec("bf16-mixed");
  mixed.set_bf16_update("kahan");
  EXPECT_THAT(ResolveJobSpec(mixed, CpuContext()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("bf16_update: 'kahan' applies to bf16-true and 16-true only, not "
                                 "'bf16-mixed'")));
}

TEST(JobSpecResolverPrecisionTest, WarnsAboutAdamEpsUnderflowIn16True) {
  v1::JobSpec spec = Spec("16-true");
  auto trap = ResolveJobSpec(spec, Float16Context());
  ASSERT_OK(trap);
  ASSERT_EQ(trap->warnings.size(), 1u);
  EXPECT_THAT(trap->warnings[0], HasSubstr("eps=1e-08 underflows to 0 in float16"));
  spec.set_eps(1e-4);
  auto safe = ResolveJobSpec(spec, Float16Context());
  ASSERT_OK(safe);
  EXPECT_TRUE(safe->warnings.empty());
  spec.set_optimizer("sgd");
  spec.clear_eps();
  auto sgd = ResolveJobSpec(spec, Float16Context());
  ASSERT_OK(sgd);
  EXPECT_TRUE(sgd->warnings.empty());
}

TEST(JobSpecResolverPrecisionTest, ConcurrentJobsMakeMemoryFiguresApproximate) {
  auto prepared = ResolveJobSpec(Spec("bf16-true"), CpuContext(/*max_concurrent_jobs=*/2));
  ASSERT_OK(prepared);
  ASSERT_EQ(prepared->warnings.size(), 1u);
  EXPECT_THAT(prepared->warnings[0], HasSubstr("memory figures are approximate"));
}

}  // namespace
}  // namespace mantissa

namespace mantissa {
namespace {

// resume_from resolves a stored, already resolved spec again: that must
// change nothing and refuse nothing.
TEST(JobSpecResolverTest, ResolvingAResolvedSpecGivesItBackUnchanged) {
  for (const std::string optimizer : {"sgd", "adam", "adamw"}) {
    for (const std::string precision : {"32-true", "16-mixed", "bf16-true"}) {
      v1::JobSpec spec = Minimal();
      spec.set_optimizer(optimizer);
      spec.set_precision(precision);
      auto once = ResolveJobSpec(spec, Cpu());
      ASSERT_OK(once);
      auto twice = ResolveJobSpec(once->spec, Cpu());
      ASSERT_OK(twice) << optimizer << " " << precision;
      EXPECT_EQ(twice->spec.SerializeAsString(), once->spec.SerializeAsString())
          << optimizer << " " << precision;
      EXPECT_EQ(twice->effective_precision, once->effective_precision);
    }
  }
}

TEST(JobSpecResolverTest, NesterovAccumulationAndCheckpointSettings) {
  v1::JobSpec spec = Minimal();
  auto defaults = ResolveJobSpec(spec, Cpu());
  ASSERT_OK(defaults);
  EXPECT_EQ(defaults->spec.accumulate_grad_batches(), 1);
  EXPECT_EQ(defaults->spec.checkpoint_every_n_steps(), 0);
  EXPECT_FALSE(defaults->spec.has_nesterov());

  spec.set_nesterov(true);
  EXPECT_THAT(ResolveJobSpec(spec, Cpu()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("nesterov: applies to")));
  spec.set_optimizer("sgd");
  EXPECT_THAT(ResolveJobSpec(spec, Cpu()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("needs momentum > 0")));
  spec.set_momentum(0.9);
  EXPECT_OK(ResolveJobSpec(spec, Cpu()));

  v1::JobSpec accumulate = Minimal();
  accumulate.set_accumulate_grad_batches(0);
  EXPECT_THAT(ResolveJobSpec(accumulate, Cpu()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("accumulate_grad_batches")));
  v1::JobSpec checkpoint = Minimal();
  checkpoint.set_checkpoint_every_n_steps(-1);
  EXPECT_THAT(ResolveJobSpec(checkpoint, Cpu()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("checkpoint_every_n_steps")));
}

TEST(JobSpecResolverTest, CudaGraphDefaultsToOffAndIsKeptEvenOnTheCpu) {
  auto defaults = ResolveJobSpec(Minimal(), Cpu());
  ASSERT_OK(defaults);
  EXPECT_TRUE(defaults->spec.has_cuda_graph());
  EXPECT_FALSE(defaults->spec.cuda_graph());
  // The trainer decides whether the device allows a graph (and warns).
  v1::JobSpec spec = Minimal();
  spec.set_cuda_graph(true);
  spec.set_optimizer("sgd");
  spec.set_accumulate_grad_batches(2);
  auto prepared = ResolveJobSpec(spec, Cpu());
  ASSERT_OK(prepared);
  EXPECT_TRUE(prepared->spec.cuda_graph());
  EXPECT_TRUE(prepared->warnings.empty());
}

}  // namespace
}  // namespace mantissa

namespace mantissa {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using testing::StatusIs;

ResolveContext CpuFp8Context() { return ResolveContext{DeviceCapabilities::Probe(torch::kCPU), 1}; }

// A device FP8 can run on (Hopper), without needing one; LibTorch must
// still be >= 2.4.
ResolveContext HopperContext() {
  ResolveContext context = CpuFp8Context();
  context.caps.device = torch::Device(torch::kCUDA, 0);
  context.caps.device_name = "cuda:0 (test Hopper, sm_90)";
  context.caps.compute_capability = 90;
  context.caps.bfloat16 = context.caps.float16 = true;
  context.caps.autocast_bfloat16 = context.caps.autocast_float16 = true;
  return context;
}

TEST(JobSpecResolverFp8Test, BadRecipeValuesNameTheFieldAndValidValues) {
  const std::vector<std::pair<std::function<void(v1::Fp8Recipe&)>, std::string>> cases = {
      {[](v1::Fp8Recipe& r) { r.set_fp8_format("E5M2"); }, "fp8.fp8_format"},
      {[](v1::Fp8Recipe& r) { r.set_fp8_format("hybrid"); }, "fp8.fp8_format"},
      {[](v1::Fp8Recipe& r) { r.set_amax_compute_algo("mean"); }, "fp8.amax_compute_algo"},
      {[](v1::Fp8Recipe& r) { r.set_amax_history_len(0); }, "fp8.amax_history_len"},
      {[](v1::Fp8Recipe& r) { r.set_amax_history_len(1 << 20); }, "fp8.amax_history_len"},
      {[](v1::Fp8Recipe& r) { r.set_margin(-1); }, "fp8.margin"},
  };
  for (const auto& [mutate, field] : cases) {
    v1::JobSpec spec = Spec("transformer-engine");
    mutate(*spec.mutable_fp8());
    // Reported before the precision, which this CPU cannot run anyway.
    EXPECT_THAT(ResolveJobSpec(spec, CpuFp8Context()),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(field + ":")))
        << field;
  }
  v1::JobSpec format = Spec("transformer-engine");
  format.mutable_fp8()->set_fp8_format("E5M2");
  EXPECT_THAT(ResolveJobSpec(format, CpuFp8Context()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("'E5M2'"), HasSubstr("HYBRID"), HasSubstr("E4M3"))));
  v1::JobSpec algo = Spec("transformer-engine");
  algo.mutable_fp8()->set_amax_compute_algo("mean");
  EXPECT_THAT(ResolveJobSpec(algo, CpuFp8Context()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("max"), HasSubstr("most_recent"))));
}

TEST(JobSpecResolverFp8Test, ARecipeWithAnotherPrecisionIsRefused) {
  for (const std::string precision : {"bf16-mixed", "32", "bf16-true"}) {
    v1::JobSpec spec = Spec(precision);
    spec.mutable_fp8()->set_margin(1);
    EXPECT_THAT(ResolveJobSpec(spec, CpuFp8Context()),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(HasSubstr("fp8:"), HasSubstr("transformer-engine"))))
        << precision;
  }
  v1::JobSpec alias = Spec("32");
  alias.mutable_fp8();  // present though empty
  EXPECT_THAT(ResolveJobSpec(alias, CpuFp8Context()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'32-true'")));
  // Without a recipe nothing changes for the other modes.
  auto plain = ResolveJobSpec(Spec("bf16-mixed"), CpuFp8Context());
  ASSERT_OK(plain);
  EXPECT_FALSE(plain->spec.has_fp8());
}

TEST(JobSpecResolverFp8Test, DefaultsAreTransformerEngines) {
  auto recipe = PrecisionRegistry::ParseFp8Recipe(v1::Fp8Recipe());
  ASSERT_OK(recipe);
  EXPECT_EQ(recipe->fp8_format, DelayedScaling::Format::kHybrid);
  EXPECT_EQ(recipe->amax_history_len, 1024);
  EXPECT_EQ(recipe->amax_compute_algo, DelayedScaling::AmaxComputeAlgo::kMax);
  EXPECT_EQ(recipe->margin, 0);

  // A valid recipe passes its checks; this CPU then refuses the mode.
  v1::JobSpec spec = Spec("transformer-engine-float16");
  spec.mutable_fp8()->set_fp8_format("E4M3");
  spec.mutable_fp8()->set_margin(1);
  EXPECT_THAT(ResolveJobSpec(spec, CpuFp8Context()),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("precision")));

  auto hopper = ResolveJobSpec(spec, HopperContext());
  if (!compat::kHasFp8) {
    EXPECT_THAT(hopper, StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("2.4")));
    return;
  }
  // LibTorch >= 2.4: the spec is completed with the defaults it left out.
  ASSERT_OK(hopper);
  EXPECT_EQ(hopper->effective_precision, "transformer-engine-float16");
  const v1::Fp8Recipe& fp8 = hopper->spec.fp8();
  EXPECT_EQ(fp8.fp8_format(), "E4M3");
  EXPECT_EQ(fp8.amax_history_len(), 1024);
  EXPECT_EQ(fp8.amax_compute_algo(), "max");
  EXPECT_EQ(fp8.margin(), 1);
  auto defaults = ResolveJobSpec(Spec("transformer-engine"), HopperContext());
  ASSERT_OK(defaults);
  EXPECT_EQ(defaults->spec.fp8().fp8_format(), "HYBRID");
  auto again = ResolveJobSpec(defaults->spec, HopperContext());
  ASSERT_OK(again);
  EXPECT_EQ(again->spec.SerializeAsString(), defaults->spec.SerializeAsString());
}

// Admission limits: overflow, caps and string lengths.

TEST(JobSpecLimitsTest, RefusesStepsTimesAccumulationBeyondTheCap) {
  v1::JobSpec in = Minimal();
  in.set_steps(int64_t{1} << 62);
  in.set_accumulate_grad_batches(4);
  EXPECT_THAT(ResolveJobSpec(in, Cpu()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("steps"), HasSubstr("--max_job_steps"))));
  // With the cap lifted, the product itself is refused.
  ResolveContext uncapped = Cpu();
  uncapped.limits.max_job_steps = std::numeric_limits<int64_t>::max();
  in.set_accumulate_grad_batches(4);
  EXPECT_THAT(ResolveJobSpec(in, uncapped),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("accumulate_grad_batches"), HasSubstr("overflows"))));
}

TEST(JobSpecLimitsTest, RefusesHugeEpochs) {
  v1::JobSpec in = Minimal();
  in.set_epochs(std::numeric_limits<int64_t>::max());
  EXPECT_THAT(ResolveJobSpec(in, Cpu()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("epochs"), HasSubstr("100000000"))));
}

TEST(JobSpecLimitsTest, AcceptsStepsAtTheCap) {
  ResolveContext context = Cpu();
  context.limits.max_job_steps = 1000;
  v1::JobSpec in = Minimal();
  in.set_steps(1000);
  EXPECT_OK(ResolveJobSpec(in, context));
  in.set_steps(1001);
  EXPECT_THAT(ResolveJobSpec(in, context),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("must be <= 1000")));
}

TEST(JobSpecLimitsTest, BoundsStringFields) {
  v1::JobSpec in = Minimal();
  in.set_name(std::string(3 << 20, 'x'));
  EXPECT_THAT(ResolveJobSpec(in, Cpu()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("name: must be at most 256 bytes"), HasSubstr("3145728"))));
  in.set_name(std::string(256, 'x'));
  EXPECT_OK(ResolveJobSpec(in, Cpu()));

  v1::JobSpec optimizer = Minimal();
  optimizer.set_optimizer(std::string(100000, 'o'));
  auto refused = ResolveJobSpec(optimizer, Cpu());
  EXPECT_THAT(refused, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("optimizer")));
  EXPECT_LT(refused.status().message().size(), 200u);  // not echoed back

  v1::JobSpec resume = Minimal();
  resume.set_resume_from(std::string(1000, 'a'));
  EXPECT_THAT(ResolveJobSpec(resume, Cpu()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("resume_from")));
}

TEST(JobSpecLimitsTest, BoundsOptions) {
  v1::JobSpec value = Minimal();
  (*value.mutable_dataset_options())["train_size"] = std::string(5000, '1');
  EXPECT_THAT(ResolveJobSpec(value, Cpu()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("dataset_options.train_size: must be at most 4096 bytes")));
  v1::JobSpec key = Minimal();
  (*key.mutable_model_options())[std::string(5000, 'k')] = "1";
  EXPECT_THAT(ResolveJobSpec(key, Cpu()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("model_options: option keys must be at most 4096 bytes")));
  v1::JobSpec many = Minimal();
  for (int i = 0; i < 65; ++i) (*many.mutable_model_options())[absl::StrCat("k", i)] = "1";
  EXPECT_THAT(ResolveJobSpec(many, Cpu()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("model_options: at most 64 options, got 65")));
}

TEST(JobSpecLimitsTest, BoundsEvalSizes) {
  v1::JobSpec in = Minimal();
  in.mutable_eval()->set_batch_size(int64_t{1} << 40);
  EXPECT_THAT(ResolveJobSpec(in, Cpu()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("eval.batch_size")));
  in.mutable_eval()->set_batch_size(1 << 20);
  in.mutable_eval()->set_max_batches(std::numeric_limits<int64_t>::max() / 2);
  EXPECT_THAT(ResolveJobSpec(in, Cpu()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("eval.max_batches"), HasSubstr("overflows"))));
}

TEST(JobSpecLimitsTest, MaxDurationDefaultsToTheDaemonsAndIsCapped) {
  auto prepared = ResolveJobSpec(Minimal(), Cpu());
  ASSERT_OK(prepared);
  EXPECT_EQ(prepared->spec.max_duration().seconds(), 24 * 3600);
  // Resolving a resolved spec gives it back unchanged.
  auto again = ResolveJobSpec(prepared->spec, Cpu());
  ASSERT_OK(again);
  EXPECT_EQ(again->spec.SerializeAsString(), prepared->spec.SerializeAsString());

  v1::JobSpec in = Minimal();
  in.mutable_max_duration()->set_seconds(90);
  prepared = ResolveJobSpec(in, Cpu());
  ASSERT_OK(prepared);
  EXPECT_EQ(prepared->spec.max_duration().seconds(), 90);

  in.mutable_max_duration()->set_seconds(25 * 3600);
  EXPECT_THAT(ResolveJobSpec(in, Cpu()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("max_duration"), HasSubstr("--max_job_duration"))));
  in.mutable_max_duration()->set_seconds(-1);
  EXPECT_THAT(ResolveJobSpec(in, Cpu()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_duration")));
  in.mutable_max_duration()->set_seconds(0);
  EXPECT_THAT(ResolveJobSpec(in, Cpu()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("positive")));
}

TEST(JobSpecLimitsTest, KeepCheckpointsDefaultsToOneAndIsCapped) {
  auto prepared = ResolveJobSpec(Minimal(), Cpu());
  ASSERT_OK(prepared);
  EXPECT_EQ(prepared->spec.keep_checkpoints(), 1);
  v1::JobSpec in = Minimal();
  in.set_keep_checkpoints(5);
  EXPECT_OK(ResolveJobSpec(in, Cpu()));
  in.set_keep_checkpoints(6);
  EXPECT_THAT(ResolveJobSpec(in, Cpu()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("keep_checkpoints"), HasSubstr("[1, 5]"))));
  in.set_keep_checkpoints(0);
  EXPECT_THAT(ResolveJobSpec(in, Cpu()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("keep_checkpoints")));
}

TEST(MemoryEstimateTest, ParsesMemAvailable) {
  auto available = ParseMeminfoAvailableBytes("MemTotal: 100 kB\nMemAvailable:    2048 kB\n");
  ASSERT_OK(available);
  EXPECT_EQ(*available, 2048 * 1024);
  EXPECT_THAT(ParseMeminfoAvailableBytes("MemTotal: 100 kB\n"),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("/proc/meminfo")));
}

TEST(MemoryEstimateTest, RefusesModelsBeyondTheParameterCapAndFreeMemory) {
  // gpt with d_model 8192, 48 layers: ~39G parameters.
  auto gpt = ModelRegistry::Parse("gpt", {{"d_model", "8192"}, {"layers", "48"}, {"heads", "64"}});
  ASSERT_OK(gpt);
  const std::optional<ModelSizeEstimate> size =
      (*gpt)->EstimateSize(DataSpec{Task::kLanguageModel, {128}, 0, 32768, 128});
  ASSERT_TRUE(size.has_value());
  EXPECT_GT(size->parameters, 3.8e10);
  SpecLimits limits;
  absl::Status status =
      CheckModelSize(*size, 8, "32-true", "adamw", int64_t{1} << 40, "cpu", limits);
  EXPECT_THAT(status,
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("--max_model_parameters")));
  EXPECT_TRUE(IsAdmissionRefusal(status));

  // A small mlp within the caps but not within 1 MiB of free memory.
  auto mlp_config = ModelRegistry::Parse("mlp", {{"hidden", "1024"}});
  ASSERT_OK(mlp_config);
  const std::optional<ModelSizeEstimate> mlp =
      (*mlp_config)->EstimateSize(DataSpec{Task::kClassification, {784}, 10, 0, 0});
  ASSERT_TRUE(mlp.has_value());
  EXPECT_NEAR(mlp->parameters, 784 * 1024 + 1024 + 1024 * 10 + 10, 1);
  status = CheckModelSize(*mlp, 64, "32-true", "adamw", 1 << 20, "cpu", limits);
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kResourceExhausted,
                               AllOf(HasSubstr("training needs an estimated"),
                                     HasSubstr("but only 1.0 MiB is free"))));
  EXPECT_OK(CheckModelSize(*mlp, 64, "32-true", "adamw", int64_t{1} << 34, "cpu", limits));
  // Unknown free memory is not checked; nor is anything with the check off.
  EXPECT_OK(CheckModelSize(*mlp, 64, "32-true", "adamw", -1, "cpu", limits));
  limits.check_free_memory = false;
  EXPECT_OK(CheckModelSize(*mlp, 64, "32-true", "adamw", 1, "cpu", limits));

  // bf16_update=kahan: one more bf16 copy of the weights.
  EXPECT_EQ(EstimateTrainingBytes(*mlp, 64, "bf16-true", "adamw", /*compensation=*/true) -
                EstimateTrainingBytes(*mlp, 64, "bf16-true", "adamw"),
            static_cast<int64_t>(mlp->parameters * 2));
}

}  // namespace
}  // namespace mantissa
