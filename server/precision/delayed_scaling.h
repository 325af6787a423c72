#ifndef MANTISSA_SERVER_PRECISION_DELAYED_SCALING_H_
#define MANTISSA_SERVER_PRECISION_DELAYED_SCALING_H_

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

}  // namespace mantissa

#endif  // MANTISSA_SERVER_PRECISION_DELAYED_SCALING_H_
