// The precision on this device, its FP8 recipe, its grad scaler and how it
// rounds the optimizer's update.
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/status_macros.h"
#include "server/precision/precision_registry.h"
#include "server/training/job_spec_sections.h"
#include "server/training/spec_checks.h"

namespace mantissa {
namespace {

// The modes that run FP8 GEMMs get TransformerEngine's DelayedScaling
// defaults where the job left the recipe unset, written back into the spec;
// any other mode refuses a recipe, which it would silently ignore.
absl::Status ResolveFp8Recipe(const std::string& canonical_precision, ResolvedJob& job) {
  v1::JobSpec& spec = job.spec;
  const PrecisionEntry* entry = PrecisionRegistry::Find(canonical_precision);
  if (entry == nullptr || !entry->traits.fp8) {
    if (!spec.has_fp8()) return absl::OkStatus();
    std::vector<std::string> fp8_modes;
    for (const PrecisionEntry& e : PrecisionRegistry::Entries()) {
      if (e.traits.fp8) fp8_modes.push_back(e.name);
    }
    return Invalid("fp8", absl::StrCat("applies to precision ", absl::StrJoin(fp8_modes, " and "),
                                       " only, not '", canonical_precision, "'"));
  }
  v1::Fp8Recipe& fp8 = *spec.mutable_fp8();
  fp8.set_fp8_format(DelayedScaling::FormatName(job.fp8.fp8_format));
  fp8.set_amax_history_len(job.fp8.amax_history_len);
  fp8.set_amax_compute_algo(DelayedScaling::AlgoName(job.fp8.amax_compute_algo));
  fp8.set_margin(job.fp8.margin);
  return absl::OkStatus();
}

// torch.amp.GradScaler's defaults, on where the mode needs it by default
// (16-mixed).
absl::Status ResolveGradScaler(ResolvedJob& job) {
  v1::GradScalerSettings& gs = *job.spec.mutable_grad_scaler();
  const GradScaler::Options defaults;
  if (!gs.has_enabled()) gs.set_enabled(job.precision.scaler_by_default);
  if (!gs.has_init_scale()) gs.set_init_scale(defaults.init_scale);
  if (!gs.has_growth_factor()) gs.set_growth_factor(defaults.growth_factor);
  if (!gs.has_backoff_factor()) gs.set_backoff_factor(defaults.backoff_factor);
  if (!gs.has_growth_interval()) gs.set_growth_interval(defaults.growth_interval);
  GradScaler::Options& options = job.grad_scaler;
  options.enabled = gs.enabled();
  options.init_scale = gs.init_scale();
  options.growth_factor = gs.growth_factor();
  options.backoff_factor = gs.backoff_factor();
  options.growth_interval = gs.growth_interval();
  return GradScaler::CheckOptions(options);
}

// JobSpec.bf16_update: parsed, checked against the precision (half weights
// only) and written back ("nearest" when unset); stochastic rounding is
// seeded with the job's seed.
absl::Status ResolveUpdateRounding(const std::string& canonical_precision, ResolvedJob& job) {
  v1::JobSpec& spec = job.spec;
  ASSIGN_OR_RETURN(const UpdateRounding rounding, ParseUpdateRounding(spec.bf16_update()));
  RETURN_IF_ERROR(PrecisionRegistry::CheckUpdateRounding(canonical_precision, rounding));
  spec.set_bf16_update(UpdateRoundingName(rounding));
  job.half_update.rounding = rounding;
  job.half_update.seed = spec.seed();
  return absl::OkStatus();
}

// Known trap: Adam's eps added to a float16 tensor rounds to 0 below
// float16's smallest subnormal, and the first update divides by zero. The
// fused CUDA kernels add eps in float32, but the float16 second moment
// underflows for small gradients, so their updates blow up instead.
void WarnOfEpsUnderflow(ResolvedJob& job) {
  constexpr double kFloat16SmallestSubnormal = 5.960464477539063e-08;
  const v1::JobSpec& spec = job.spec;
  const bool float16_weights =
      job.precision.true_half && job.precision.parameter_dtype == torch::kFloat16;
  if (!float16_weights || !spec.has_eps() || spec.eps() >= kFloat16SmallestSubnormal) return;
  job.warnings.push_back(absl::StrCat(
      "eps=", spec.eps(), " underflows to 0 in float16 (smallest subnormal 5.96e-08): with ",
      job.effective_precision, " weights ", spec.optimizer(),
      "'s updates divide by (nearly) zero and the loss diverges or becomes NaN. Set --eps to "
      "1e-4 or use bf16-true or 16-mixed."));
}

}  // namespace

absl::Status ResolvePrecision(const ResolveContext& context, ResolvedJob& job) {
  v1::JobSpec& spec = job.spec;
  // The FP8 recipe's values are checked before the precision, whose FP8
  // modes most devices refuse.
  if (spec.has_fp8()) {
    ASSIGN_OR_RETURN(job.fp8, PrecisionRegistry::ParseFp8Recipe(spec.fp8()));
  }
  ASSIGN_OR_RETURN(ResolvedPrecision precision,
                   PrecisionRegistry::Resolve(spec.precision(), context.caps));
  if (spec.precision().empty()) spec.set_precision(precision.canonical);
  job.effective_precision = precision.effective;
  job.precision = precision.traits;
  job.warnings.insert(job.warnings.end(), precision.warnings.begin(), precision.warnings.end());
  RETURN_IF_ERROR(ResolveFp8Recipe(precision.canonical, job));
  RETURN_IF_ERROR(ResolveGradScaler(job));
  RETURN_IF_ERROR(ResolveUpdateRounding(precision.canonical, job));
  WarnOfEpsUnderflow(job);
  return absl::OkStatus();
}

}  // namespace mantissa
