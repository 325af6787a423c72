#ifndef MANTISSA_SERVER_SERVING_MODEL_EXPORTER_H_
#define MANTISSA_SERVER_SERVING_MODEL_EXPORTER_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "mantissa/v1/serving.pb.h"
#include "mantissa/v1/training.pb.h"
#include "server/models/model.h"
#include "server/serving/model_repository.h"

namespace mantissa {

// Turns trained jobs and users' TorchScript files into repository versions.
// Nothing is cast here: a version stores fp32 weights and its serving
// precision, and every load casts and validates (ModelServer).
class ModelExporter {
 public:
  // A SUCCEEDED job's export artifact (<state_dir>/jobs/<id>/export.pt,
  // ExportArtifact, written by the trainer when the job succeeded) becomes
  // the next version of request.name(); nothing else of the job is read (no
  // dataset, no checkpoint):
  //   weights_file "weights.pt" (SaveWeights, fp32), the model and its
  //   options, the task and DataSpec fields, the artifact's inputs/outputs:
  //     classification:  "input"  <float dtype> [input_shape...] -> "logits" [num_classes]
  //     language models: "input_ids" INT64 [-1] (1..seq_len) -> "logits" [-1, vocab_size]
  //   the job id, its effective precision, dataset, dataset options and
  //   seed, and the artifact's calibration sample as
  //   HalfCastValidator::kCalibrationFile.
  // A model that reads a file (ModelEntry::file_option: torchscript's
  // module) gets a copy in the version (file_copy, "module.ts"), its option
  // rewritten to that relative name.
  // `serving_precision` is already resolved (bf16-true, 16-true, 32-true);
  // float tensor specs carry its datatype. FAILED_PRECONDITION when the job
  // is not SUCCEEDED or has no export artifact: jobs that finished before
  // jobs wrote one (only checkpoint.pt) are refused, naming the job and what
  // to do (train again, or resume it for more steps, and export that job).
  // INVALID_ARGUMENT for a bad name, precision or batching, an artifact that
  // does not read, or weights that do not fit the model.
  static absl::StatusOr<v1::ModelConfig> ExportJob(ModelRepository& repository,
                                                   const std::string& state_dir, const v1::Job& job,
                                                   const v1::ExportModelRequest& request,
                                                   const std::string& serving_precision);

  // Copies request.torchscript_path() in as "model.ts" (platform
  // pytorch_libtorch, model "torchscript", task "custom"). INVALID_ARGUMENT
  // for a bad name, no inputs or outputs, a bad tensor name, datatype
  // (FP32, FP16, BF16, INT64) or shape (dims >= 1 or -1) or a file that is
  // not TorchScript; FAILED_PRECONDITION when the file cannot be read.
  // Float datatypes are replaced by the serving precision's.
  static absl::StatusOr<v1::ModelConfig> RegisterTorchScript(
      ModelRepository& repository, const v1::RegisterModelRequest& request,
      const std::string& serving_precision);
};

// The weights file of a version: named tensors in LibTorch's archive format,
// on the CPU. LoadWeights: FAILED_PRECONDITION for a missing file,
// INVALID_ARGUMENT for one that is not a weights file.
absl::Status SaveWeights(const std::string& path, const NamedTensors& tensors);
absl::StatusOr<NamedTensors> LoadWeights(const std::string& path);

// The serving precisions: "BF16" for bf16-true, "FP16" for 16-true, "FP32"
// for 32-true; INVALID_ARGUMENT naming `precision` otherwise. The one place
// that maps them (servable.h's ServingDtype converts this datatype).
absl::StatusOr<std::string> ServingDatatype(const std::string& precision);

// The bounds of batching.max_batch_size (1..) and batching.max_queue_delay_us
// (0..), for a version's config and the server's defaults alike.
inline constexpr int64_t kMaxBatchSizeLimit = 4096;
inline constexpr int64_t kMaxQueueDelayUsLimit = 1000000;

// INVALID_ARGUMENT naming batching.max_batch_size (1..4096) or
// batching.max_queue_delay_us (0..1000000); unset fields are fine.
absl::Status ValidateBatching(const v1::BatchingSettings& batching);

// INVALID_ARGUMENT naming promotion.min_top1_agreement (in [0, 1]) or
// promotion.max_mean_rel_diff (>= 0, finite), or min_top1_agreement for a
// `task` whose validation gives no top-1 agreement (only "classification"
// and "language_model" do); unset fields are fine.
absl::Status ValidatePromotion(const v1::PromotionPolicy& promotion, const std::string& task);

}  // namespace mantissa

#endif  // MANTISSA_SERVER_SERVING_MODEL_EXPORTER_H_
