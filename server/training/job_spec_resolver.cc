#include "server/training/job_spec_resolver.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/option_reader.h"
#include "server/common/status_macros.h"
#include "server/data/dataset_factory.h"
#include "server/models/model_factory.h"
#include "server/precision/grad_scaler.h"
#include "server/precision/precision_factory.h"
#include "server/training/lr_schedule.h"
#include "server/training/optimizer_factory.h"

namespace mantissa {

GradScaler::Options GradScalerOptions(const v1::GradScalerSettings& settings) {
  GradScaler::Options options;
  options.enabled = settings.enabled();
  options.init_scale = settings.init_scale();
  options.growth_factor = settings.growth_factor();
  options.backoff_factor = settings.backoff_factor();
  options.growth_interval = settings.growth_interval();
  return options;
}

LrSchedule::Options LrScheduleOptions(const v1::JobSpec& spec, int64_t total_steps) {
  LrSchedule::Options options;
  options.kind = spec.lr_schedule();
  options.base_lr = spec.lr();
  options.warmup_steps = spec.warmup_steps();
  options.min_lr = spec.min_lr();
  options.total_steps = total_steps;
  return options;
}

namespace {

constexpr int64_t kMaxBatchSize = 1 << 20;
constexpr int64_t kMaxAccumulateGradBatches = 1 << 16;

absl::Status Invalid(absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
}

absl::Status RequirePositive(absl::string_view field, int64_t value) {
  if (value <= 0) return Invalid(field, absl::StrCat("must be > 0, got ", value));
  return absl::OkStatus();
}

absl::Status RequireNonNegative(absl::string_view field, int64_t value) {
  if (value < 0) return Invalid(field, absl::StrCat("must be >= 0, got ", value));
  return absl::OkStatus();
}

// The transformer-engine modes get TransformerEngine's DelayedScaling
// defaults where the job left the recipe unset; any other mode refuses a
// recipe, which it would silently ignore.
absl::Status ResolveFp8Recipe(const std::string& canonical_precision, v1::JobSpec& spec) {
  if (canonical_precision != "transformer-engine" &&
      canonical_precision != "transformer-engine-float16") {
    if (!spec.has_fp8()) return absl::OkStatus();
    return Invalid("fp8", absl::StrCat("applies to precision transformer-engine and "
                                       "transformer-engine-float16 only, not '",
                                       canonical_precision, "'"));
  }
  ASSIGN_OR_RETURN(const DelayedScaling recipe, PrecisionFactory::ParseFp8Recipe(spec.fp8()));
  v1::Fp8Recipe& fp8 = *spec.mutable_fp8();
  fp8.set_fp8_format(DelayedScaling::FormatName(recipe.fp8_format));
  fp8.set_amax_history_len(recipe.amax_history_len);
  fp8.set_amax_compute_algo(DelayedScaling::AlgoName(recipe.amax_compute_algo));
  fp8.set_margin(recipe.margin);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<JobRunner::PreparedSpec> ResolveJobSpec(const v1::JobSpec& submitted,
                                                       const ResolveContext& context) {
  JobRunner::PreparedSpec prepared;
  v1::JobSpec& spec = prepared.spec;
  spec = submitted;

  // Cheapest checks first, so a bad number is reported before files are probed.
  if (spec.has_steps() && spec.has_epochs()) {
    return Invalid("steps", "set either steps or epochs, not both");
  }
  if (spec.has_steps()) RETURN_IF_ERROR(RequirePositive("steps", spec.steps()));
  if (spec.has_epochs()) RETURN_IF_ERROR(RequirePositive("epochs", spec.epochs()));
  if (!spec.has_steps() && !spec.has_epochs()) spec.set_epochs(1);

  if (!spec.has_batch_size()) spec.set_batch_size(kDefaultBatchSize);
  RETURN_IF_ERROR(RequirePositive("batch_size", spec.batch_size()));
  if (spec.batch_size() > kMaxBatchSize) {
    return Invalid("batch_size",
                   absl::StrCat("must be <= ", kMaxBatchSize, ", got ", spec.batch_size()));
  }

  if (spec.optimizer().empty()) spec.set_optimizer("adamw");
  const std::vector<std::string> optimizers = OptimizerFactory::Names();
  if (std::find(optimizers.begin(), optimizers.end(), spec.optimizer()) == optimizers.end()) {
    return Invalid("optimizer",
                   absl::StrCat("unknown optimizer '", spec.optimizer(),
                                "'; valid optimizers: ", absl::StrJoin(optimizers, ", ")));
  }
  if (!spec.has_lr()) spec.set_lr(kDefaultLr);
  if (!(spec.lr() > 0) || !std::isfinite(spec.lr())) {
    return Invalid("lr", absl::StrCat("must be a finite number > 0, got ", spec.lr()));
  }
  if (!spec.has_weight_decay()) {
    spec.set_weight_decay(spec.optimizer() == "adamw" ? kDefaultAdamWWeightDecay : 0.0);
  }
  if (!(spec.weight_decay() >= 0) || !std::isfinite(spec.weight_decay())) {
    return Invalid("weight_decay",
                   absl::StrCat("must be a finite number >= 0, got ", spec.weight_decay()));
  }
  if (spec.has_momentum() && spec.optimizer() != "sgd") {
    return Invalid("momentum",
                   absl::StrCat("applies to optimizer sgd only, not '", spec.optimizer(), "'"));
  }
  // Defaults only where they apply, so that resolving a resolved spec (as
  // resume_from does) gives it back unchanged.
  if (!spec.has_momentum() && spec.optimizer() == "sgd") spec.set_momentum(0.0);
  if (spec.has_nesterov() && spec.optimizer() != "sgd") {
    return Invalid("nesterov",
                   absl::StrCat("applies to optimizer sgd only, not '", spec.optimizer(), "'"));
  }
  if (!spec.has_nesterov() && spec.optimizer() == "sgd") spec.set_nesterov(false);
  if (spec.nesterov() && !(spec.momentum() > 0)) {
    // torch.optim.SGD refuses this too: Nesterov needs a momentum term.
    return Invalid("nesterov", "needs momentum > 0");
  }
  const bool adam = spec.optimizer() == "adam" || spec.optimizer() == "adamw";
  if (spec.has_eps() && !adam) {
    return Invalid("eps", absl::StrCat("applies to optimizers adam and adamw only, not '",
                                       spec.optimizer(), "'"));
  }
  if (adam && !spec.has_eps()) spec.set_eps(kDefaultAdamEps);
  if (spec.has_eps() && (!(spec.eps() > 0) || !std::isfinite(spec.eps()))) {
    return Invalid("eps", absl::StrCat("must be a finite number > 0, got ", spec.eps()));
  }
  if (spec.has_gradient_clip_norm() &&
      (!(spec.gradient_clip_norm() > 0) || !std::isfinite(spec.gradient_clip_norm()))) {
    return Invalid("gradient_clip_norm",
                   absl::StrCat("must be a finite number > 0, got ", spec.gradient_clip_norm()));
  }
  if (spec.lr_schedule().empty()) spec.set_lr_schedule("constant");
  if (!spec.has_warmup_steps()) spec.set_warmup_steps(0);
  if (!spec.has_min_lr()) spec.set_min_lr(0);
  RETURN_IF_ERROR(LrSchedule::Create(LrScheduleOptions(spec, /*total_steps=*/1)).status());
  if (!spec.has_memory_baseline_steps()) {
    spec.set_memory_baseline_steps(kDefaultMemoryBaselineSteps);
  }
  if (spec.memory_baseline_steps() < 0 || spec.memory_baseline_steps() > 100) {
    return Invalid("memory_baseline_steps",
                   absl::StrCat("must be in [0, 100], got ", spec.memory_baseline_steps()));
  }
  if (!(spec.momentum() >= 0 && spec.momentum() < 1)) {
    return Invalid("momentum", absl::StrCat("must be in [0, 1), got ", spec.momentum()));
  }

  if (!spec.has_progress_every_n_steps()) {
    spec.set_progress_every_n_steps(kDefaultProgressEveryNSteps);
  }
  RETURN_IF_ERROR(RequirePositive("progress_every_n_steps", spec.progress_every_n_steps()));
  if (!spec.has_accumulate_grad_batches()) spec.set_accumulate_grad_batches(1);
  RETURN_IF_ERROR(RequirePositive("accumulate_grad_batches", spec.accumulate_grad_batches()));
  if (spec.accumulate_grad_batches() > kMaxAccumulateGradBatches) {
    return Invalid("accumulate_grad_batches",
                   absl::StrCat("must be <= ", kMaxAccumulateGradBatches, ", got ",
                                spec.accumulate_grad_batches()));
  }
  if (!spec.has_checkpoint_every_n_steps()) spec.set_checkpoint_every_n_steps(0);
  // Whether the device and job allow a graph is decided by the trainer, which
  // warns and trains eagerly where they do not.
  if (!spec.has_cuda_graph()) spec.set_cuda_graph(false);
  RETURN_IF_ERROR(RequireNonNegative("checkpoint_every_n_steps", spec.checkpoint_every_n_steps()));
  RETURN_IF_ERROR(RequireNonNegative("eval.every_n_steps", spec.eval().every_n_steps()));
  RETURN_IF_ERROR(RequireNonNegative("eval.max_batches", spec.eval().max_batches()));
  RETURN_IF_ERROR(RequireNonNegative("eval.batch_size", spec.eval().batch_size()));
  if (spec.eval().batch_size() == 0) spec.mutable_eval()->set_batch_size(spec.batch_size());

  if (spec.model().empty()) {
    return Invalid("model", absl::StrCat("is required; valid models: ",
                                         absl::StrJoin(ModelFactory::Names(), ", ")));
  }
  if (spec.dataset().empty()) {
    return Invalid("dataset", absl::StrCat("is required; valid datasets: ",
                                           absl::StrJoin(DatasetFactory::Names(), ", ")));
  }
  RETURN_IF_ERROR(ModelFactory::Validate(spec.model(), ToOptionMap(spec.model_options())));
  RETURN_IF_ERROR(DatasetFactory::Validate(spec.dataset(), ToOptionMap(spec.dataset_options())));

  // The FP8 recipe's values are checked before the precision, whose FP8
  // modes most devices refuse.
  if (spec.has_fp8()) RETURN_IF_ERROR(PrecisionFactory::ParseFp8Recipe(spec.fp8()).status());
  ASSIGN_OR_RETURN(ResolvedPrecision precision,
                   PrecisionFactory::Resolve(spec.precision(), context.caps));
  if (spec.precision().empty()) spec.set_precision(precision.canonical);
  prepared.effective_precision = precision.effective;
  prepared.warnings = std::move(precision.warnings);
  RETURN_IF_ERROR(ResolveFp8Recipe(precision.canonical, spec));

  // The grad scaler: torch.amp.GradScaler's defaults, on for 16-mixed only.
  v1::GradScalerSettings& gs = *spec.mutable_grad_scaler();
  if (!gs.has_enabled()) gs.set_enabled(prepared.effective_precision == "16-mixed");
  if (!gs.has_init_scale()) gs.set_init_scale(GradScaler::Options().init_scale);
  if (!gs.has_growth_factor()) gs.set_growth_factor(GradScaler::Options().growth_factor);
  if (!gs.has_backoff_factor()) gs.set_backoff_factor(GradScaler::Options().backoff_factor);
  if (!gs.has_growth_interval()) gs.set_growth_interval(GradScaler::Options().growth_interval);
  RETURN_IF_ERROR(GradScaler::Create(GradScalerOptions(gs)).status());

  // Known trap: Adam's eps added to a float16 tensor rounds to 0 below
  // float16's smallest subnormal, and the first update divides by zero. The
  // fused CUDA kernels add eps in float32, but the float16 second moment
  // underflows for small gradients, so their updates blow up instead.
  constexpr double kFloat16SmallestSubnormal = 5.960464477539063e-08;
  if (prepared.effective_precision == "16-true" && adam && spec.eps() < kFloat16SmallestSubnormal) {
    prepared.warnings.push_back(
        absl::StrCat("eps=", spec.eps(),
                     " underflows to 0 in float16 (smallest subnormal 5.96e-08): with "
                     "16-true weights ",
                     spec.optimizer(),
                     "'s updates divide by (nearly) zero and the loss diverges or "
                     "becomes NaN. Set --eps to 1e-4 or use bf16-true or 16-mixed."));
  }
  if (context.max_concurrent_jobs > 1 && spec.memory_baseline_steps() > 0) {
    prepared.warnings.push_back(
        absl::StrCat("memory figures are approximate: up to ", context.max_concurrent_jobs,
                     " jobs share the device and its allocator counters (--max_concurrent_jobs)"));
  }
  return prepared;
}

}  // namespace mantissa
