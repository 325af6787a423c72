#include "server/training/lr_schedule.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/named_entries.h"

namespace mantissa {
namespace {

double Constant(const LrSchedule::Options& o, int64_t) { return o.base_lr; }

double Cosine(const LrSchedule::Options& o, int64_t applied_steps) {
  if (applied_steps < o.warmup_steps) {
    return o.base_lr * static_cast<double>(applied_steps + 1) / static_cast<double>(o.warmup_steps);
  }
  const double decay_steps =
      static_cast<double>(std::max<int64_t>(o.total_steps - o.warmup_steps, 1));
  const double progress =
      std::min(1.0, static_cast<double>(applied_steps - o.warmup_steps) / decay_steps);
  return o.min_lr + 0.5 * (o.base_lr - o.min_lr) * (1.0 + std::cos(M_PI * progress));
}

}  // namespace

const std::vector<LrSchedule::Kind>& LrSchedule::Table() {
  static const auto* const table = new std::vector<Kind>{
      {"constant", "lr throughout", &Constant},
      {"cosine", "linear warmup over warmup_steps, then cosine decay to min_lr", &Cosine},
  };
  return *table;
}

std::vector<std::string> LrSchedule::Kinds() { return EntryNames(Table()); }

namespace {

// The row of `kind` ("" is constant), or null.
const LrSchedule::Kind* FindKind(const std::string& kind) {
  return FindEntry(LrSchedule::Table(), kind.empty() ? "constant" : kind);
}

}  // namespace

absl::Status LrSchedule::CheckOptions(const Options& o) {
  if (FindKind(o.kind) == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("lr_schedule: unknown schedule '", o.kind,
                     "'; valid schedules: ", absl::StrJoin(Kinds(), ", ")));
  }
  if (o.warmup_steps < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("warmup_steps: must be >= 0, got ", o.warmup_steps));
  }
  if (!(o.min_lr >= 0) || o.min_lr > o.base_lr) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_lr: must be in [0, lr=", o.base_lr, "], got ", o.min_lr));
  }
  return absl::OkStatus();
}

absl::StatusOr<LrSchedule> LrSchedule::Create(Options o) {
  if (absl::Status status = CheckOptions(o); !status.ok()) return status;
  const Kind* kind = FindKind(o.kind);
  if (o.kind.empty()) o.kind = kind->name;
  o.total_steps = std::max<int64_t>(o.total_steps, 1);
  return LrSchedule(std::move(o), kind);
}

}  // namespace mantissa
