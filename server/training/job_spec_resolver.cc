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
#include "server/precision/precision_factory.h"
#include "server/training/optimizer_factory.h"

namespace mantissa {
namespace {

constexpr int64_t kMaxBatchSize = 1 << 20;

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

}  // namespace

absl::StatusOr<JobRunner::PreparedSpec> ResolveJobSpec(const v1::JobSpec& submitted) {
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
  if (!spec.has_momentum()) spec.set_momentum(0.0);
  if (!(spec.momentum() >= 0 && spec.momentum() < 1)) {
    return Invalid("momentum", absl::StrCat("must be in [0, 1), got ", spec.momentum()));
  }

  if (!spec.has_progress_every_n_steps()) {
    spec.set_progress_every_n_steps(kDefaultProgressEveryNSteps);
  }
  RETURN_IF_ERROR(RequirePositive("progress_every_n_steps", spec.progress_every_n_steps()));
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

  ASSIGN_OR_RETURN(ResolvedPrecision precision, PrecisionFactory::Resolve(spec.precision()));
  if (spec.precision().empty()) spec.set_precision(precision.canonical);
  prepared.effective_precision = precision.effective;
  prepared.warnings = std::move(precision.warnings);
  return prepared;
}

}  // namespace mantissa
