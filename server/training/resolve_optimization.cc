// The optimizer, its hyperparameters, gradient clipping and the LR schedule.
#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/status_macros.h"
#include "server/training/job_spec_sections.h"
#include "server/training/optimizer_registry.h"
#include "server/training/spec_checks.h"

namespace mantissa {
namespace {

// "optimizer sgd" or "optimizers adam and adamw": those with the trait.
std::string OptimizersWith(bool OptimizerEntry::*trait) {
  std::vector<std::string> names;
  for (const OptimizerEntry& entry : OptimizerRegistry::Entries()) {
    if (entry.*trait) names.push_back(entry.name);
  }
  return absl::StrCat(names.size() == 1 ? "optimizer " : "optimizers ",
                      absl::StrJoin(names, " and "));
}

absl::Status DoesNotApply(absl::string_view field, bool OptimizerEntry::*trait,
                          const std::string& optimizer) {
  return Invalid(
      field, absl::StrCat("applies to ", OptimizersWith(trait), " only, not '", optimizer, "'"));
}

// momentum and nesterov (SGD's). Defaults only where they apply, so that
// resolving a resolved spec (as resume_from does) gives it back unchanged.
absl::Status ResolveMomentum(const OptimizerEntry& optimizer, v1::JobSpec& spec) {
  constexpr bool OptimizerEntry::*kTrait = &OptimizerEntry::takes_momentum;
  const bool applies = optimizer.*kTrait;
  if (spec.has_momentum() && !applies) return DoesNotApply("momentum", kTrait, spec.optimizer());
  if (!spec.has_momentum() && applies) spec.set_momentum(0.0);
  if (spec.has_nesterov() && !applies) return DoesNotApply("nesterov", kTrait, spec.optimizer());
  if (!spec.has_nesterov() && applies) spec.set_nesterov(false);
  if (spec.nesterov() && !(spec.momentum() > 0)) {
    // torch.optim.SGD refuses this too: Nesterov needs a momentum term.
    return Invalid("nesterov", "needs momentum > 0");
  }
  return absl::OkStatus();
}

// eps (Adam's and AdamW's).
absl::Status ResolveEps(const OptimizerEntry& optimizer, v1::JobSpec& spec) {
  if (spec.has_eps() && !optimizer.takes_eps) {
    return DoesNotApply("eps", &OptimizerEntry::takes_eps, spec.optimizer());
  }
  if (optimizer.takes_eps && !spec.has_eps()) spec.set_eps(kDefaultAdamEps);
  if (spec.has_eps()) RETURN_IF_ERROR(RequireFinitePositive("eps", spec.eps()));
  return absl::OkStatus();
}

absl::Status ResolveLrSchedule(ResolvedJob& job) {
  v1::JobSpec& spec = job.spec;
  if (spec.lr_schedule().empty()) spec.set_lr_schedule("constant");
  if (!spec.has_warmup_steps()) spec.set_warmup_steps(0);
  if (!spec.has_min_lr()) spec.set_min_lr(0);
  LrSchedule::Options& options = job.lr_schedule;
  options.kind = spec.lr_schedule();
  options.base_lr = spec.lr();
  options.warmup_steps = spec.warmup_steps();
  options.min_lr = spec.min_lr();
  return LrSchedule::CheckOptions(options);
}

}  // namespace

absl::Status ResolveOptimization(const ResolveContext& context, ResolvedJob& job) {
  v1::JobSpec& spec = job.spec;
  if (spec.optimizer().empty()) spec.set_optimizer("adamw");
  const OptimizerEntry* optimizer = OptimizerRegistry::Find(spec.optimizer());
  if (optimizer == nullptr) {
    return Invalid("optimizer",
                   absl::StrCat("unknown optimizer '", spec.optimizer(), "'; valid optimizers: ",
                                absl::StrJoin(OptimizerRegistry::Names(), ", ")));
  }
  if (!spec.has_lr()) spec.set_lr(kDefaultLr);
  RETURN_IF_ERROR(RequireFinitePositive("lr", spec.lr()));
  if (!spec.has_weight_decay()) spec.set_weight_decay(optimizer->default_weight_decay);
  if (!(spec.weight_decay() >= 0) || !std::isfinite(spec.weight_decay())) {
    return Invalid("weight_decay",
                   absl::StrCat("must be a finite number >= 0, got ", spec.weight_decay()));
  }
  RETURN_IF_ERROR(ResolveMomentum(*optimizer, spec));
  RETURN_IF_ERROR(ResolveEps(*optimizer, spec));
  if (spec.has_gradient_clip_norm()) {
    RETURN_IF_ERROR(RequireFinitePositive("gradient_clip_norm", spec.gradient_clip_norm()));
  }
  RETURN_IF_ERROR(ResolveLrSchedule(job));
  if (!(spec.momentum() >= 0 && spec.momentum() < 1)) {
    return Invalid("momentum", absl::StrCat("must be in [0, 1), got ", spec.momentum()));
  }
  job.optimizer = OptimizerConfig::FromSpec(spec);
  return absl::OkStatus();
}

}  // namespace mantissa
