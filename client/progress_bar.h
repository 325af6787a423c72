#ifndef MANTISSA_CLIENT_PROGRESS_BAR_H_
#define MANTISSA_CLIENT_PROGRESS_BAR_H_

#include <optional>
#include <string>

#include "mantissa/v1/training.pb.h"

namespace mantissa::cli {

// One plain line per progress event, for logs and pipes:
// "step 100/938 epoch 1/1 loss 0.5123 12345 items/s", followed by
// "grad norm 0.532" once the job reports one and "scale 65536 skipped 3"
// while the grad scaler is enabled.
std::string FormatProgressLine(const v1::Job& job);

// Seconds left at the recent pace, or nullopt while that pace is unknown.
std::optional<double> EstimateRemainingSeconds(const v1::Job& job);

// The live line drawn on a terminal, at most `width - 1` columns so that it
// never wraps (a wrapped line cannot be redrawn with '\r'):
// "[######------]  45.2% 420/938 epoch 1/1 loss 0.5123 12345 items/s ETA 1m05s",
// with "grad norm 0.532" and the grad scaler's "scale 65536 skipped 3" before
// the ETA where they fit.
std::string RenderProgressBar(const v1::Job& job, int width);

}  // namespace mantissa::cli

#endif  // MANTISSA_CLIENT_PROGRESS_BAR_H_
