#include "server/training/job_spec_resolver.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>

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

std::optional<int64_t> CheckedMul(int64_t a, int64_t b) {
  int64_t product;
  if (__builtin_mul_overflow(a, b, &product)) return std::nullopt;
  return product;
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

absl::Status CheckLength(absl::string_view field, const std::string& value, int64_t max_bytes) {
  if (static_cast<int64_t>(value.size()) <= max_bytes) return absl::OkStatus();
  return Invalid(field, absl::StrCat("must be at most ", max_bytes, " bytes, got ", value.size()));
}

absl::Status CheckOptions(absl::string_view field,
                          const google::protobuf::Map<std::string, std::string>& options,
                          const SpecLimits& limits) {
  if (static_cast<int64_t>(options.size()) > limits.max_options) {
    return Invalid(field,
                   absl::StrCat("at most ", limits.max_options, " options, got ", options.size()));
  }
  for (const auto& [key, value] : options) {
    if (static_cast<int64_t>(key.size()) > limits.max_option_bytes) {
      return Invalid(field, absl::StrCat("option keys must be at most ", limits.max_option_bytes,
                                         " bytes, got one of ", key.size()));
    }
    if (static_cast<int64_t>(value.size()) > limits.max_option_bytes) {
      return Invalid(
          absl::StrCat(field, ".", key),
          absl::StrCat("must be at most ", limits.max_option_bytes, " bytes, got ", value.size()));
    }
  }
  return absl::OkStatus();
}

// String fields are bounded before anything quotes them in a message.
absl::Status CheckLengths(const v1::JobSpec& spec, const SpecLimits& limits) {
  const int64_t max = limits.max_name_bytes;
  RETURN_IF_ERROR(CheckLength("name", spec.name(), max));
  RETURN_IF_ERROR(CheckLength("resume_from", spec.resume_from(), max));
  RETURN_IF_ERROR(CheckLength("model", spec.model(), max));
  RETURN_IF_ERROR(CheckLength("dataset", spec.dataset(), max));
  RETURN_IF_ERROR(CheckLength("precision", spec.precision(), max));
  RETURN_IF_ERROR(CheckLength("optimizer", spec.optimizer(), max));
  RETURN_IF_ERROR(CheckLength("lr_schedule", spec.lr_schedule(), max));
  RETURN_IF_ERROR(CheckLength("fp8.fp8_format", spec.fp8().fp8_format(), max));
  RETURN_IF_ERROR(CheckLength("fp8.amax_compute_algo", spec.fp8().amax_compute_algo(), max));
  RETURN_IF_ERROR(CheckOptions("model_options", spec.model_options(), limits));
  RETURN_IF_ERROR(CheckOptions("dataset_options", spec.dataset_options(), limits));
  return absl::OkStatus();
}

// Steps and epochs against --max_job_steps, and steps x accumulation against
// int64. An epoch is at least one batch; the trainer checks the exact count
// of an epochs spec once the dataset's size is known.
absl::Status CheckWork(const v1::JobSpec& spec, const SpecLimits& limits) {
  if (spec.has_steps() && spec.steps() > limits.max_job_steps) {
    return Invalid("steps", absl::StrCat("must be <= ", limits.max_job_steps,
                                         " (--max_job_steps), got ", spec.steps()));
  }
  if (spec.has_epochs() && spec.epochs() > limits.max_job_steps) {
    return Invalid("epochs", absl::StrCat("must be <= ", limits.max_job_steps,
                                          " (--max_job_steps; every epoch is at least one "
                                          "step), got ",
                                          spec.epochs()));
  }
  if (spec.has_steps() && !CheckedMul(spec.steps(), spec.accumulate_grad_batches())) {
    return Invalid("steps", absl::StrCat("steps (", spec.steps(), ") x accumulate_grad_batches (",
                                         spec.accumulate_grad_batches(), ") overflows int64"));
  }
  const v1::EvalSettings& eval = spec.eval();
  if (eval.batch_size() > kMaxBatchSize) {
    return Invalid("eval.batch_size",
                   absl::StrCat("must be <= ", kMaxBatchSize, ", got ", eval.batch_size()));
  }
  if (!CheckedMul(eval.max_batches(), eval.batch_size())) {
    return Invalid("eval.max_batches",
                   absl::StrCat("eval.max_batches (", eval.max_batches(), ") x eval.batch_size (",
                                eval.batch_size(), ") overflows int64"));
  }
  return absl::OkStatus();
}

// Unset: the daemon's --max_job_duration; set: positive and within it.
absl::Status ResolveMaxDuration(v1::JobSpec& spec, const SpecLimits& limits) {
  const bool capped = limits.max_job_duration > absl::ZeroDuration() &&
                      limits.max_job_duration < absl::InfiniteDuration();
  if (!spec.has_max_duration()) {
    if (capped) {
      const int64_t nanos = absl::ToInt64Nanoseconds(limits.max_job_duration);
      spec.mutable_max_duration()->set_seconds(nanos / 1'000'000'000);
      spec.mutable_max_duration()->set_nanos(static_cast<int32_t>(nanos % 1'000'000'000));
    }
    return absl::OkStatus();
  }
  const google::protobuf::Duration& d = spec.max_duration();
  if (d.seconds() < 0 || d.nanos() < 0 || d.nanos() >= 1'000'000'000 ||
      (d.seconds() == 0 && d.nanos() == 0) || d.seconds() > 315'576'000'000) {
    return Invalid("max_duration", absl::StrCat("must be a positive duration, got ", d.seconds(),
                                                "s ", d.nanos(), "ns"));
  }
  const absl::Duration asked = absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
  if (capped && asked > limits.max_job_duration) {
    return Invalid("max_duration",
                   absl::StrCat("must be <= ", absl::FormatDuration(limits.max_job_duration),
                                " (--max_job_duration), got ", absl::FormatDuration(asked)));
  }
  return absl::OkStatus();
}

absl::Status ResolveKeepCheckpoints(v1::JobSpec& spec, const SpecLimits& limits) {
  if (!spec.has_keep_checkpoints()) {
    spec.set_keep_checkpoints(1);
    return absl::OkStatus();
  }
  if (spec.keep_checkpoints() < 1 || spec.keep_checkpoints() > limits.max_keep_checkpoints) {
    return Invalid("keep_checkpoints",
                   absl::StrCat("must be in [1, ", limits.max_keep_checkpoints,
                                "] (--keep_checkpoints), got ", spec.keep_checkpoints()));
  }
  return absl::OkStatus();
}

// A TorchScript module is code that runs with the daemon's rights: off until
// an operator names the folder trusted modules come from.
absl::Status ConfineTorchScript(const FileRoots& roots, v1::JobSpec& spec) {
  if (roots.empty()) {
    return absl::FailedPreconditionError(
        "model: torchscript is turned off on this server (a TorchScript module runs arbitrary "
        "code with the server's rights); an operator enables it with mantissad "
        "--torchscript_root=DIR, for modules under DIR");
  }
  auto path = spec.mutable_model_options()->find("path");
  if (path == spec.mutable_model_options()->end() || path->second.empty()) {
    return absl::OkStatus();  // ModelFactory::Validate names the missing option
  }
  ASSIGN_OR_RETURN(path->second, roots.Resolve("model_options[path]", path->second));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<JobRunner::PreparedSpec> ResolveJobSpec(const v1::JobSpec& submitted,
                                                       const ResolveContext& context) {
  JobRunner::PreparedSpec prepared;
  v1::JobSpec& spec = prepared.spec;
  spec = submitted;

  // Cheapest checks first, so a bad number is reported before files are probed.
  RETURN_IF_ERROR(CheckLengths(spec, context.limits));
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
  RETURN_IF_ERROR(CheckWork(spec, context.limits));
  RETURN_IF_ERROR(ResolveMaxDuration(spec, context.limits));
  RETURN_IF_ERROR(ResolveKeepCheckpoints(spec, context.limits));

  if (spec.model().empty()) {
    return Invalid("model", absl::StrCat("is required; valid models: ",
                                         absl::StrJoin(ModelFactory::Names(), ", ")));
  }
  if (spec.dataset().empty()) {
    return Invalid("dataset", absl::StrCat("is required; valid datasets: ",
                                           absl::StrJoin(DatasetFactory::Names(), ", ")));
  }
  // Paths are confined before anything probes them: a missing file and a
  // forbidden one must read alike.
  if (spec.model() == "torchscript") {
    RETURN_IF_ERROR(ConfineTorchScript(context.torchscript_roots, spec));
  }
  {
    ASSIGN_OR_RETURN(auto confined,
                     DatasetFactory::ConfinePaths(
                         spec.dataset(), ToOptionMap(spec.dataset_options()), context.data_roots));
    for (auto& [key, value] : confined) (*spec.mutable_dataset_options())[key] = value;
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
