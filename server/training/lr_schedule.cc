#include "server/training/lr_schedule.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace mantissa {

std::vector<std::string> LrSchedule::Kinds() { return {"constant", "cosine"}; }

absl::StatusOr<LrSchedule> LrSchedule::Create(Options o) {
  if (o.kind.empty()) o.kind = "constant";
  const std::vector<std::string> kinds = Kinds();
  if (std::find(kinds.begin(), kinds.end(), o.kind) == kinds.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("lr_schedule: unknown schedule '", o.kind,
                     "'; valid schedules: ", absl::StrJoin(kinds, ", ")));
  }
  if (o.warmup_steps < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("warmup_steps: must be >= 0, got ", o.warmup_steps));
  }
  if (!(o.min_lr >= 0) || o.min_lr > o.base_lr) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_lr: must be in [0, lr=", o.base_lr, "], got ", o.min_lr));
  }
  o.total_steps = std::max<int64_t>(o.total_steps, 1);
  return LrSchedule(std::move(o));
}

double LrSchedule::LrAt(int64_t applied_steps) const {
  const Options& o = options_;
  if (o.kind == "constant") return o.base_lr;
  if (applied_steps < o.warmup_steps) {
    return o.base_lr * static_cast<double>(applied_steps + 1) / static_cast<double>(o.warmup_steps);
  }
  const double decay_steps =
      static_cast<double>(std::max<int64_t>(o.total_steps - o.warmup_steps, 1));
  const double progress =
      std::min(1.0, static_cast<double>(applied_steps - o.warmup_steps) / decay_steps);
  return o.min_lr + 0.5 * (o.base_lr - o.min_lr) * (1.0 + std::cos(M_PI * progress));
}

}  // namespace mantissa
