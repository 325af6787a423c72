#ifndef MANTISSA_SERVER_SERVING_HALF_CAST_VALIDATOR_H_
#define MANTISSA_SERVER_SERVING_HALF_CAST_VALIDATOR_H_

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "mantissa/v1/serving.pb.h"

namespace mantissa {

// The inputs a cast is checked on: one tensor per declared input, [N, ...],
// on the CPU, floats in fp32 (each model converts them to its own dtype).
struct CalibrationBatch {
  std::vector<torch::Tensor> inputs;
  int64_t items = 0;
  std::string source;  // e.g. "synthetic test split, first 256 items"
  // Classifiers: the items' targets, int64 [items]; undefined when the
  // sample has none (language models, registered models, old samples).
  torch::Tensor labels;
};

// Runs the fp32 model and the cast model on the same calibration batch and
// measures how far the cast moved the outputs. Fabric's true-half mode
// casts blindly; a serving cast that overflows must be refused before it
// answers requests with inf.
class HalfCastValidator {
 public:
  // One forward: the inputs in declaration order (on the CPU; the model
  // moves and converts them), one tensor per declared output.
  using ForwardFn =
      std::function<absl::StatusOr<std::vector<torch::Tensor>>(const std::vector<torch::Tensor>&)>;

  // Each layer's output by module path, in forward order
  // (Model::ForwardLayers).
  using Layers = std::vector<std::pair<std::string, torch::Tensor>>;
  using TraceFn = std::function<absl::StatusOr<Layers>(const std::vector<torch::Tensor>&)>;

  struct Options {
    std::string model;      // names errors, e.g. "model m version 3"
    std::string precision;  // the cast's serving precision
    // Classifiers and language models: argmax agreement over the last dim
    // of the first output. With the batch's labels, also the accuracy of
    // both models.
    bool top1_agreement = false;
    int64_t chunk_items = 64;  // items per forward (the batcher's max_batch_size)
    // A layer whose mean_rel_diff exceeds it diverges (LayerTolerance).
    double layer_tolerance = 0.0;
  };

  struct Result {
    v1::HalfCastValidation validation;
    int64_t elements = 0;    // output elements compared
    int64_t non_finite = 0;  // cast elements non-finite where the fp32 one is finite
  };

  // Runs both models chunk by chunk under InferenceMode. Statistics are
  // accumulated per chunk, so only one chunk's outputs are held at a time.
  // max_abs_diff and mean_rel_diff cover the elements finite in both
  // outputs; `finite` says whether every cast element was. Torch errors
  // (e.g. a forward that does not fit the declared inputs) come back as
  // INTERNAL/INVALID_ARGUMENT with context.
  static absl::StatusOr<Result> Compare(const Options& options, const CalibrationBatch& batch,
                                        const ForwardFn& reference, const ForwardFn& cast);

  // The per-layer figures (HalfCastValidation.layers): both models traced
  // chunk by chunk on `batch` like Compare, each layer's max_abs_diff and
  // mean_rel_diff over the elements finite in both; first_divergent_layer
  // is the first whose mean_rel_diff exceeds options.layer_tolerance or
  // whose cast outputs are non-finite where fp32's are finite.
  static absl::Status CompareLayers(const Options& options, const CalibrationBatch& batch,
                                    const TraceFn& reference, const TraceFn& cast, Result* result);
  // Models without layers of their own (TorchScript): one layer, "output",
  // with Compare's figures.
  static void OutputAsLayer(const Options& options, Result* result);

  // policy.max_mean_rel_diff when set, else kDefaultLayerTolerance.
  static double LayerTolerance(const v1::PromotionPolicy& policy);

  // OK when the validation meets every field `policy` sets, else
  // UNAVAILABLE "<model>: the <precision> cast misses its promotion policy:
  // top1_agreement 0.9800 < min_top1_agreement 0.9950, ... (on <source>);
  // first divergent layer: <path>". FAILED_PRECONDITION when the policy
  // asks for top-1 agreement of a model that gives none (custom task).
  static absl::Status Promote(const Options& options, const Result& result,
                              const v1::PromotionPolicy& policy);

  // OK, or FAILED_PRECONDITION "... casting to <precision> gives non-finite
  // outputs (N of M; fp16 overflow?) on <source>".
  static absl::Status Verdict(const Options& options, const Result& result);

  // The calibration batch of a version: for exported jobs the calibration
  // sample the export copied into `version_dir` (kCalibrationFile: the job's
  // test split, or train when the test split is empty), its first `items`
  // items (token windows for language models, at most
  // kMaxLanguageModelTokens tokens' worth). Versions exported before
  // versions kept a sample (no kCalibrationFile), and samples that do not
  // read or fit, get random inputs, logged, and the source says why.
  // Registered models get random inputs of the declared spec.
  static CalibrationBatch ForVersion(const v1::ModelConfig& config, const std::string& version_dir,
                                     int64_t items);

  // Random inputs of the declared spec, drawn from `seed`: floats uniform
  // in [0, 1), INT64 token ids in [0, vocab_size) for language models and
  // zeros otherwise (a custom model's integers may be indices of any
  // range). -1 dimensions become kVariableDim (seq_len for token windows).
  static CalibrationBatch RandomInputs(const v1::ModelConfig& config, int64_t items, uint64_t seed);

  // A healthy bf16 cast (8 mantissa bits, rounding error 2^-9 ~ 0.2% per
  // operation) stays far below 5% mean relative difference at every layer:
  // at most 0.21% (mlp) and 0.60% (cnn) trained on fashion-mnist, 0.57% for
  // a small gpt. Weights the cast breaks give 10s of percent or more. 5%
  // flags the latter with an 8x margin over the former.
  static constexpr double kDefaultLayerTolerance = 0.05;
  static constexpr int64_t kVariableDim = 8;
  // An exported version's calibration sample (WriteCalibrationSample).
  static constexpr char kCalibrationFile[] = "calibration.pt";
  // Elements a random calibration batch may hold in all (256 MiB of fp32):
  // items are dropped, down to one, to fit.
  static constexpr int64_t kMaxCalibrationElements = int64_t{1} << 26;
  // Calibrating a language model costs a forward per token; a few thousand
  // tokens are enough to see an overflow and keep a large gpt's load short.
  static constexpr int64_t kMaxLanguageModelTokens = 4096;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_SERVING_HALF_CAST_VALIDATOR_H_
