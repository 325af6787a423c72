#ifndef MANTISSA_SERVER_ARTIFACTS_EXPORT_ARTIFACT_H_
#define MANTISSA_SERVER_ARTIFACTS_EXPORT_ARTIFACT_H_

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/models/model.h"

namespace mantissa {

// A tensor a model takes or gives, per item: what a version's config
// declares.
struct TensorSignature {
  std::string name;
  std::string datatype;        // "FP32" or "INT64"; exports give floats the serving precision's
  std::vector<int64_t> shape;  // one item; -1 for a variable dimension
};

// Inputs a serving cast is validated on: one tensor per declared input, by
// the input's name, [N, ...] on the CPU, floats in fp32.
struct CalibrationSample {
  NamedTensors inputs;
  std::string origin;  // where the items come from, e.g. "mnist test split"
  // Classifiers: the targets of the same items, int64 [items], so that a
  // cast's accuracy can be put beside fp32's. Undefined for language models
  // and in samples written before samples kept them.
  torch::Tensor labels;

  int64_t items() const { return inputs.empty() ? 0 : inputs[0].second.size(0); }
};

// What serving needs of a finished job, as TensorFlow Serving's SavedModel
// is: the final weights, the model as ModelRegistry builds it, the data it
// takes and gives, and a few items of the job's data to calibrate casts on.
// The trainer writes it next to the job's checkpoint when the job succeeds;
// exports read nothing else of the job (no dataset, no checkpoint).
struct ExportArtifact {
  std::string job_id;
  std::string model;  // a ModelRegistry name
  std::map<std::string, std::string> model_options;
  // The data the model takes, with its own options applied (a gpt built
  // wider than its dataset takes its own vocab and seq_len).
  DataSpec data;
  // Set by SetSignature from `data`.
  std::vector<TensorSignature> inputs;
  std::vector<TensorSignature> outputs;
  // Where it was trained, for the record: the dataset is never read again.
  std::string dataset;
  std::map<std::string, std::string> dataset_options;
  uint64_t seed = 0;
  std::string trained_precision;
  NamedTensors weights;  // fp32 (floats), on the CPU, contiguous
  CalibrationSample calibration;

  // Items of the test split (train when it is empty) a job keeps for
  // calibration: classifiers' first kCalibrationItems items, language
  // models' first windows up to kCalibrationTokens tokens (at least one).
  static constexpr int64_t kCalibrationItems = 256;
  static constexpr int64_t kCalibrationTokens = 4096;
  static int64_t CalibrationItemsFor(const DataSpec& data, int64_t available);

  // The signature of Mantissa's models on `data`:
  //   classification:  "input" FP32 [input_shape...] -> "logits" FP32 [num_classes]
  //   language models: "input_ids" INT64 [-1] -> "logits" FP32 [vocab_size]
  //     (the last position's logits; all positions on request)
  void SetSignature();

  // "<state_dir>/jobs/<job_id>/export.pt".
  static std::string PathFor(const std::string& state_dir, const std::string& job_id);

  // One LibTorch archive, written to `path`.tmp, flushed and renamed over
  // `path`. INVALID_ARGUMENT for an artifact without a signature or
  // weights; INTERNAL for I/O errors.
  static absl::Status Write(const std::string& path, const ExportArtifact& artifact);
  // NOT_FOUND when `path` does not exist; INVALID_ARGUMENT for a file that
  // is not an export artifact (or of another format version).
  static absl::StatusOr<ExportArtifact> Read(const std::string& path);
};

// A model version's calibration file: a CalibrationSample in its own
// LibTorch archive, written atomically. ReadCalibrationSample: NOT_FOUND
// when `path` does not exist, INVALID_ARGUMENT for another kind of file.
absl::Status WriteCalibrationSample(const std::string& path, const CalibrationSample& sample);
absl::StatusOr<CalibrationSample> ReadCalibrationSample(const std::string& path);

}  // namespace mantissa

#endif  // MANTISSA_SERVER_ARTIFACTS_EXPORT_ARTIFACT_H_
