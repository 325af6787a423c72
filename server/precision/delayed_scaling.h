#ifndef MANTISSA_SERVER_PRECISION_DELAYED_SCALING_H_
#define MANTISSA_SERVER_PRECISION_DELAYED_SCALING_H_

#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/precision/fp8_tensor.h"

namespace mantissa {

// TransformerEngine's DelayedScaling recipe, with its names and defaults: a
// job's `fp8` settings.
struct DelayedScaling {
  enum class Format {
    kHybrid,  // "HYBRID": E4M3 forward (inputs, weights), E5M2 gradients
    kE4M3,    // "E4M3": E4M3 everywhere
  };
  enum class AmaxComputeAlgo {
    kMax,         // "max": the largest amax in the history
    kMostRecent,  // "most_recent": the latest amax
  };

  // Beyond these the recipe makes no sense: a history that large costs
  // memory per tensor for nothing, and a margin that large scales every
  // value below FP8's smallest subnormal.
  static constexpr int64_t kMaxAmaxHistoryLen = 16384;
  static constexpr int64_t kMaxMargin = 32;

  Format fp8_format = Format::kHybrid;
  int64_t amax_history_len = 1024;
  AmaxComputeAlgo amax_compute_algo = AmaxComputeAlgo::kMax;
  int64_t margin = 0;

  Fp8Dtype forward_dtype() const { return Fp8Dtype::kE4M3; }
  Fp8Dtype backward_dtype() const {
    return fp8_format == Format::kHybrid ? Fp8Dtype::kE5M2 : Fp8Dtype::kE4M3;
  }

  static std::string FormatName(Format format);
  static std::string AlgoName(AmaxComputeAlgo algo);

  // From TransformerEngine's spellings; empty strings and absent numbers take
  // the defaults. INVALID_ARGUMENT naming the field as a job spells it
  // ("fp8.fp8_format: unknown value 'X'; valid values: HYBRID, E4M3").
  static absl::StatusOr<DelayedScaling> Parse(absl::string_view fp8_format,
                                              std::optional<int64_t> amax_history_len,
                                              absl::string_view amax_compute_algo,
                                              std::optional<int64_t> margin);

  // The range checks of Parse, for a recipe built in code.
  absl::Status Validate() const;
};

// One FP8 tensor's delayed-scaling state (an entry of TransformerEngine's
// fp8_meta): the history of its amax (max |x|) and the scale it is quantized
// with. A step quantizes with the scale earlier steps left, then Update()
// records the step's amax and prepares the next scale.
// Not thread-safe; the forward and backward of one step use it in turn.
class Fp8TensorScaling {
 public:
  Fp8TensorScaling(Fp8Dtype dtype, const DelayedScaling& recipe, torch::Device device);

  Fp8Dtype dtype() const { return dtype_; }
  // float32 [], 1 at the start: x * scale is what gets cast to FP8.
  const torch::Tensor& scale() const { return scale_; }
  // float32 [amax_history_len]; [0] is the slot of the step being recorded.
  const torch::Tensor& amax_history() const { return amax_history_; }

  // TransformerEngine's amax-and-scale update, after each FP8 forward (or
  // backward): records `amax` (float32 []) in the history, then
  //   amax' = max(history) (or history[0] for most_recent),
  //   scale = (fp8_max / amax') / 2^margin,
  // keeping the previous scale when amax' is 0 or not finite, and FLT_MAX
  // when the quotient overflows; then rolls the history one step, dropping
  // the oldest entry. (Under max, an inf/NaN amax thus holds the scale
  // until it leaves the history.) Device ops only: no host sync.
  void Update(const torch::Tensor& amax);

  // Moves the state; nothing to do where it already is.
  void To(torch::Device device);

  // Overwrites the state with saved tensors (any device). Throws c10::Error
  // when the history length differs.
  void Load(const torch::Tensor& amax_history, const torch::Tensor& scale);

 private:
  Fp8Dtype dtype_;
  DelayedScaling::AmaxComputeAlgo algo_;
  double scaled_max_;  // fp8_max / 2^margin
  torch::Tensor amax_history_;
  torch::Tensor scale_;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_PRECISION_DELAYED_SCALING_H_
