#ifndef MANTISSA_SERVER_ARTIFACTS_CHECKPOINT_H_
#define MANTISSA_SERVER_ARTIFACTS_CHECKPOINT_H_

#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "server/models/model.h"
#include "server/precision/precision_plugin.h"

namespace mantissa {

// Where a run stands, besides its tensors.
struct CheckpointPosition {
  int64_t step = 0;                 // optimizer steps completed
  int64_t next_batch = 0;           // data position: global number of the next batch
  int64_t applied_steps = 0;        // steps the optimizer applied (the LR schedule's position)
  double last_loss = std::nan("");  // mean loss of the last progress interval
};

// A job's checkpoint: one file (LibTorch's archive format) holding the model's
// parameters and buffers by name, the optimizer state, the precision plugin's
// state (grad scaler), the position above, the default generators' states
// of the CPU and the job's device, and the job spec as JSON. Written
// atomically: a crash leaves either the previous checkpoint or the new one,
// never a torn file.
class Checkpoint {
 public:
  struct Parts {
    Model* model = nullptr;
    torch::optim::Optimizer* optimizer = nullptr;
    PrecisionPlugin* precision = nullptr;
    torch::Device device = torch::kCPU;
  };

  // Writes to `path`.tmp, flushes it to disk and renames it over `path`.
  // Returns the file's size in bytes.
  static absl::StatusOr<int64_t> Save(const std::string& path, const CheckpointPosition& position,
                                      const std::string& spec_json, const Parts& parts);

  // Restores every part in place (the model and optimizer must be built as
  // for the run that wrote it) and the generators, and returns the position.
  // INVALID_ARGUMENT when the file does not match the model.
  static absl::StatusOr<CheckpointPosition> Load(const std::string& path, const Parts& parts);

  // Only the model's tensors, by name (for exporting trained weights).
  static absl::StatusOr<NamedTensors> ReadModelState(const std::string& path);

  // Called before each Save to keep `keep` checkpoints in all: the newest is
  // always `path` (what resume_from and exports read); with keep > 1 the one
  // at `path` (written at `previous_step`, 0 = none yet) is first kept as
  // checkpoint-<step>.pt beside it (a hard link, so `path` never goes
  // missing), and numbered ones beyond keep - 1 are removed, oldest first.
  static absl::Status KeepPrevious(const std::string& path, int64_t previous_step, int64_t keep);

  // "<state_dir>/jobs/<job_id>/checkpoint.pt".
  static std::string PathFor(const std::string& state_dir, const std::string& job_id);
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_ARTIFACTS_CHECKPOINT_H_
