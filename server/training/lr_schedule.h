#ifndef MANTISSA_SERVER_TRAINING_LR_SCHEDULE_H_
#define MANTISSA_SERVER_TRAINING_LR_SCHEDULE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace mantissa {

// The learning rate as a function of applied optimizer steps: constant, or
// linear warmup then cosine decay to min_lr. The trainer counts only steps
// that were applied, so a step the grad scaler skips does not advance it.
class LrSchedule {
 public:
  struct Options {
    std::string kind = "constant";  // a Kinds() name
    double base_lr = 1e-3;
    int64_t warmup_steps = 0;
    int64_t total_steps = 1;
    double min_lr = 0;
  };

  // One schedule: its JobSpec.lr_schedule name, help, and the rate for the
  // step after `applied_steps` applied ones. The table is in lr_schedule.cc.
  struct Kind {
    const char* name;
    const char* help;
    double (*lr_at)(const Options& options, int64_t applied_steps);
  };
  static const std::vector<Kind>& Table();
  static std::vector<std::string> Kinds();  // constant, cosine

  // INVALID_ARGUMENT naming the field (lr_schedule, warmup_steps, min_lr).
  // total_steps is not checked: Create raises it to at least 1.
  static absl::Status CheckOptions(const Options& options);
  // CheckOptions, then the schedule.
  static absl::StatusOr<LrSchedule> Create(Options options);

  const Options& options() const { return options_; }

  // The rate for the optimizer step that follows `applied_steps` applied ones.
  double LrAt(int64_t applied_steps) const { return kind_->lr_at(options_, applied_steps); }

 private:
  LrSchedule(Options options, const Kind* kind) : options_(std::move(options)), kind_(kind) {}
  Options options_;
  const Kind* kind_;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_TRAINING_LR_SCHEDULE_H_
