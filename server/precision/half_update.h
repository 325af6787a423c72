#ifndef MANTISSA_SERVER_PRECISION_HALF_UPDATE_H_
#define MANTISSA_SERVER_PRECISION_HALF_UPDATE_H_

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/precision/grad_scaler.h"

namespace mantissa {

// How the optimizer's update is written into half-precision weights
// (JobSpec.bf16_update). With bf16 weights, w + lr * update rounds to
// nearest, and updates below half a unit in the last place are lost, so
// long bf16-true runs train worse than bf16-mixed.
enum class UpdateRounding {
  kNearest,     // round to nearest, as LibTorch's optimizers do
  kStochastic,  // up or down with probability by distance: unbiased
  kKahan,       // a compensation buffer per parameter keeps what rounding dropped
};

// "nearest", "stochastic", "kahan".
const char* UpdateRoundingName(UpdateRounding rounding);
std::vector<std::string> UpdateRoundingNames();
// INVALID_ARGUMENT "bf16_update: unknown value 'x'; valid values: nearest,
// stochastic, kahan". Empty is "nearest".
absl::StatusOr<UpdateRounding> ParseUpdateRounding(absl::string_view name);

// Rounds float32 `x` to `dtype` (kBFloat16 or kFloat16) stochastically:
// to one of the two neighbouring values of `dtype`, the farther with
// probability proportional to x's distance from the nearer, so that the
// result's expectation is x. Random bits come from `generator` (on x's
// device); the same generator state gives the same result.
torch::Tensor StochasticRound(const torch::Tensor& x, torch::Dtype dtype, at::Generator& generator);

// Applies one optimizer step to half-precision weights with the job's
// rounding; used by HalfPrecision::OptimizerStep. Works with every optimizer
// of the registry (sgd, adam, adamw, and the fused Adam/AdamW): the
// optimizer steps a scratch tensor in place of each weight (the
// compensation buffer for kahan, zeros for stochastic), so that its update
// is kept at its own precision, and the update is then added to the weight
// in float32 and rounded as asked. Weight decay, which reads the weight, is
// taken out of the optimizer for the step and applied here exactly as the
// optimizer would (coupled into the gradient for sgd/adam, decoupled for
// adamw). A step the grad scaler skips changes nothing. One instance per
// job, used from the job's thread.
class HalfUpdate {
 public:
  struct Options {
    UpdateRounding rounding = UpdateRounding::kNearest;
    // Stochastic rounding's random bits derive from (seed, step), so a run
    // is reproducible and a resumed run continues it exactly. Data-parallel
    // ranks share the seed and so round alike.
    uint64_t seed = 0;
  };

  explicit HalfUpdate(Options options) : options_(options) {}

  const Options& options() const { return options_; }

  // One optimizer step. `step` runs the optimizer (through the grad scaler
  // when it is on) and says whether it skipped; `scaler` (null when off) is
  // asked to unscale first, so that coupled weight decay is added to
  // unscaled gradients, and gives found-inf for a skip decided on the
  // device. kNearest: just `step`. With coupled weight decay the gradients
  // hold gradient + decay * weight afterwards, as the optimizer computes.
  OptimizerStepResult Step(torch::optim::Optimizer& optimizer, GradScaler* scaler,
                           const std::function<OptimizerStepResult()>& step);

  // Bytes of the compensation buffers (kahan; 0 before the first step and
  // for the other roundings).
  int64_t StateBytes() const;

  // kahan's buffers, one per optimizer parameter in parameter order (empty
  // before the first step), and the steps taken.
  const std::vector<torch::Tensor>& compensation() const { return compensation_; }
  int64_t steps() const { return steps_; }

  // The compensation buffers and the step count, with checkpoints.
  void Save(torch::serialize::OutputArchive& archive) const;
  void Load(torch::serialize::InputArchive& archive);

 private:
  Options options_;
  // kahan: one per optimizer parameter, in parameter order, created at the
  // first step (or adopted from Load, moved to the parameter's device).
  std::vector<torch::Tensor> compensation_;
  int64_t steps_ = 0;  // steps taken, for the stochastic seed
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_PRECISION_HALF_UPDATE_H_
