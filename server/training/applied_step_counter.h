#ifndef MANTISSA_SERVER_TRAINING_APPLIED_STEP_COUNTER_H_
#define MANTISSA_SERVER_TRAINING_APPLIED_STEP_COUNTER_H_

#include <cstdint>

#include "server/precision/grad_scaler.h"

namespace mantissa {

// The optimizer steps actually applied: the LR schedule's position, which a
// step the grad scaler skips does not advance. A skip decided on the host is
// known at once. A fused optimizer's skip is decided on the device and read
// back only at progress time (a read per step would stall the device), so
// until then such a step counts as applied, and Correct() takes back the
// skips found since the last read. Between reads the schedule can thus run
// ahead by the skips of the current interval (fewer than
// progress_every_n_steps); each read makes it exact again.
class AppliedStepCounter {
 public:
  // `applied`: where the run starts (the checkpoint's count, 0 when fresh);
  // `skipped`: the grad scaler's skipped_steps() at that point.
  AppliedStepCounter(int64_t applied, int64_t skipped)
      : applied_(applied), skipped_at_read_(skipped) {}

  void Add(const OptimizerStepResult& step) {
    if (step.skip_known && step.skipped) {
      ++known_skips_;
    } else {
      ++applied_;
    }
  }

  // `skipped`: the grad scaler's skipped_steps() now (read from the device).
  void Correct(int64_t skipped) {
    applied_ -= (skipped - skipped_at_read_) - known_skips_;
    skipped_at_read_ = skipped;
    known_skips_ = 0;
  }

  int64_t applied() const { return applied_; }

 private:
  int64_t applied_;
  int64_t skipped_at_read_;  // the scaler's count at the last Correct()
  int64_t known_skips_ = 0;  // skips seen by Add() since then
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_TRAINING_APPLIED_STEP_COUNTER_H_
