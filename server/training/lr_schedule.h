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
    std::string kind = "constant";  // "constant" | "cosine"
    double base_lr = 1e-3;
    int64_t warmup_steps = 0;
    int64_t total_steps = 1;
    double min_lr = 0;
  };

  static std::vector<std::string> Kinds();  // constant, cosine

  // INVALID_ARGUMENT naming the field (lr_schedule, warmup_steps, min_lr).
  static absl::StatusOr<LrSchedule> Create(Options options);

  // The rate for the optimizer step that follows `applied_steps` applied ones.
  double LrAt(int64_t applied_steps) const;

 private:
  explicit LrSchedule(Options options) : options_(std::move(options)) {}
  Options options_;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_TRAINING_LR_SCHEDULE_H_
