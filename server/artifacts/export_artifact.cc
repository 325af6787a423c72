#include "server/artifacts/export_artifact.h"

#include <algorithm>
#include <filesystem>
#include <functional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/artifacts/named_tensor_archive.h"
#include "server/common/file_sync.h"
#include "server/common/status_macros.h"
#include "server/common/torch_status.h"

namespace mantissa {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kArtifactFormatVersion = 1;
constexpr int64_t kCalibrationFormatVersion = 1;
constexpr char kArtifactKind[] = "mantissa export artifact";
constexpr char kCalibrationKind[] = "mantissa calibration sample";

// Writes what `fill` puts in an archive to `path`.tmp, flushes it and
// renames it over `path`: a crash leaves the old file or the new one.
absl::Status SaveAtomically(const std::string& path, const std::string& what,
                            const std::function<void(torch::serialize::OutputArchive&)>& fill) {
  const fs::path target(path);
  std::error_code ec;
  fs::create_directories(target.parent_path(), ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat(what, ": cannot create ", target.parent_path().string(), ": ", ec.message()));
  }
  const std::string tmp = path + ".tmp";
  RETURN_IF_ERROR(GuardTorch(absl::StrCat("writing ", what, " ", tmp), [&] {
    torch::serialize::OutputArchive archive;
    fill(archive);
    archive.save_to(tmp);
    return absl::OkStatus();
  }));
  RETURN_IF_ERROR(FsyncFile(tmp));
  fs::rename(tmp, target, ec);
  if (ec) return absl::InternalError(absl::StrCat(what, ": rename to ", path, ": ", ec.message()));
  return FsyncDir(target.parent_path().string());
}

// Loads `path` and checks its kind and format version; `read` takes the
// rest. Errors as ExportArtifact::Read describes.
absl::Status LoadChecked(const std::string& path, const std::string& what, const char* kind,
                         int64_t format_version,
                         const std::function<absl::Status(torch::serialize::InputArchive&)>& read) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) {
    return absl::NotFoundError(absl::StrCat(what, " ", path, " not found"));
  }
  const std::string context = absl::StrCat(what, " ", path);
  const absl::Status status = GuardTorch(context, [&]() -> absl::Status {
    torch::serialize::InputArchive archive;
    archive.load_from(path);
    c10::IValue value;
    archive.read("kind", value);
    if (!value.isString() || value.toStringRef() != kind) {
      return absl::InvalidArgumentError(absl::StrCat(context, ": not a ", what));
    }
    RETURN_IF_ERROR(CheckFormatVersion(archive, format_version, context));
    return read(archive);
  });
  // A file torch cannot parse (or that lacks a key) is bad content.
  if (status.code() == absl::StatusCode::kInternal) {
    return absl::InvalidArgumentError(absl::StrCat(status.message(), " (not a ", what, ")"));
  }
  return status;
}

c10::IValue StringList(const std::vector<std::string>& strings) {
  c10::List<std::string> list;
  for (const std::string& s : strings) list.push_back(s);
  return c10::IValue(list);
}

std::vector<std::string> ReadStrings(torch::serialize::InputArchive& archive,
                                     const std::string& key) {
  c10::IValue value;
  archive.read(key, value);
  std::vector<std::string> strings;
  for (const c10::IValue& s : value.toListRef()) strings.push_back(s.toStringRef());
  return strings;
}

// Options as a flat list: key, value, key, value, ...
void WriteOptions(torch::serialize::OutputArchive& archive, const std::string& key,
                  const std::map<std::string, std::string>& options) {
  std::vector<std::string> flat;
  for (const auto& [k, v] : options) {
    flat.push_back(k);
    flat.push_back(v);
  }
  archive.write(key, StringList(flat));
}

absl::StatusOr<std::map<std::string, std::string>> ReadOptions(
    torch::serialize::InputArchive& archive, const std::string& key) {
  const std::vector<std::string> flat = ReadStrings(archive, key);
  if (flat.size() % 2 != 0) return absl::InvalidArgumentError(absl::StrCat(key, ": odd length"));
  std::map<std::string, std::string> options;
  for (size_t i = 0; i < flat.size(); i += 2) options[flat[i]] = flat[i + 1];
  return options;
}

// Signatures as parallel lists: names, datatypes, and each shape.
void WriteSignatures(torch::serialize::OutputArchive& archive, const std::string& key,
                     const std::vector<TensorSignature>& signatures) {
  torch::serialize::OutputArchive nested;
  std::vector<std::string> names;
  std::vector<std::string> datatypes;
  for (size_t i = 0; i < signatures.size(); ++i) {
    names.push_back(signatures[i].name);
    datatypes.push_back(signatures[i].datatype);
    nested.write(absl::StrCat("shape", i), c10::IValue(signatures[i].shape));
  }
  nested.write("names", StringList(names));
  nested.write("datatypes", StringList(datatypes));
  archive.write(key, nested);
}

absl::StatusOr<std::vector<TensorSignature>> ReadSignatures(torch::serialize::InputArchive& archive,
                                                            const std::string& key) {
  torch::serialize::InputArchive nested;
  archive.read(key, nested);
  const std::vector<std::string> names = ReadStrings(nested, "names");
  const std::vector<std::string> datatypes = ReadStrings(nested, "datatypes");
  if (names.size() != datatypes.size()) {
    return absl::InvalidArgumentError(absl::StrCat(key, ": names and datatypes differ in length"));
  }
  std::vector<TensorSignature> signatures;
  for (size_t i = 0; i < names.size(); ++i) {
    c10::IValue shape;
    nested.read(absl::StrCat("shape", i), shape);
    signatures.push_back({names[i], datatypes[i], shape.toIntVector()});
  }
  return signatures;
}

void WriteDataSpec(torch::serialize::OutputArchive& archive, const DataSpec& data) {
  torch::serialize::OutputArchive nested;
  nested.write("task",
               c10::IValue(std::string(data.task == Task::kLanguageModel ? "language_model"
                                                                         : "classification")));
  nested.write("input_shape", c10::IValue(data.input_shape));
  nested.write("num_classes", c10::IValue(data.num_classes));
  nested.write("vocab_size", c10::IValue(data.vocab_size));
  nested.write("seq_len", c10::IValue(data.seq_len));
  archive.write("data", nested);
}

absl::StatusOr<DataSpec> ReadDataSpec(torch::serialize::InputArchive& archive) {
  torch::serialize::InputArchive nested;
  archive.read("data", nested);
  DataSpec data;
  const std::string task = ReadArchiveString(nested, "task");
  if (task == "language_model") {
    data.task = Task::kLanguageModel;
  } else if (task != "classification") {
    return absl::InvalidArgumentError(absl::StrCat("data: unknown task '", task, "'"));
  }
  c10::IValue shape;
  nested.read("input_shape", shape);
  data.input_shape = shape.toIntVector();
  data.num_classes = ReadArchiveInt(nested, "num_classes");
  data.vocab_size = ReadArchiveInt(nested, "vocab_size");
  data.seq_len = ReadArchiveInt(nested, "seq_len");
  return data;
}

void WriteCalibration(torch::serialize::OutputArchive& archive, const CalibrationSample& sample) {
  torch::serialize::OutputArchive inputs;
  WriteNamedTensors(inputs, sample.inputs);
  archive.write("calibration_inputs", inputs);
  archive.write("calibration_origin", c10::IValue(sample.origin));
  // An optional key: older readers ignore it, and older files lack it.
  if (sample.labels.defined()) {
    archive.write("calibration_labels", sample.labels.detach().to(torch::kCPU).contiguous());
  }
}

absl::StatusOr<CalibrationSample> ReadCalibration(torch::serialize::InputArchive& archive,
                                                  const std::string& context) {
  CalibrationSample sample;
  torch::serialize::InputArchive inputs;
  archive.read("calibration_inputs", inputs);
  ASSIGN_OR_RETURN(sample.inputs, ReadNamedTensors(inputs, context));
  sample.origin = ReadArchiveString(archive, "calibration_origin");
  for (const auto& [name, t] : sample.inputs) {
    if (t.dim() < 1 || t.size(0) != sample.items()) {
      return absl::InvalidArgumentError(absl::StrCat(context, ": calibration input ", name,
                                                     " does not hold ", sample.items(),
                                                     " items like the first"));
    }
  }
  torch::Tensor labels;
  if (archive.try_read("calibration_labels", labels)) {
    if (labels.dim() != 1 || labels.size(0) != sample.items() || labels.is_floating_point()) {
      return absl::InvalidArgumentError(absl::StrCat(
          context, ": calibration labels are ", c10::toString(labels.scalar_type()), " [",
          absl::StrJoin(labels.sizes(), ", "), "], expected int64 [", sample.items(), "]"));
    }
    sample.labels = labels.to(torch::kInt64);
  }
  return sample;
}

}  // namespace

int64_t ExportArtifact::CalibrationItemsFor(const DataSpec& data, int64_t available) {
  int64_t items = kCalibrationItems;
  if (data.task == Task::kLanguageModel) {
    items = std::max<int64_t>(1, kCalibrationTokens / std::max<int64_t>(data.seq_len, 1));
  }
  return std::max<int64_t>(0, std::min(items, available));
}

void ExportArtifact::SetSignature() {
  inputs.clear();
  outputs.clear();
  if (data.task == Task::kLanguageModel) {
    inputs.push_back({"input_ids", "INT64", {-1}});
    outputs.push_back({"logits", "FP32", {data.vocab_size}});
  } else {
    inputs.push_back({"input", "FP32", data.input_shape});
    outputs.push_back({"logits", "FP32", {data.num_classes}});
  }
}

std::string ExportArtifact::PathFor(const std::string& state_dir, const std::string& job_id) {
  return (fs::path(state_dir) / "jobs" / job_id / "export.pt").string();
}

absl::Status ExportArtifact::Write(const std::string& path, const ExportArtifact& artifact) {
  if (artifact.inputs.empty() || artifact.outputs.empty() || artifact.weights.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("export artifact ", path, ": needs inputs, outputs and weights"));
  }
  return SaveAtomically(path, "export artifact", [&](torch::serialize::OutputArchive& archive) {
    archive.write("kind", c10::IValue(std::string(kArtifactKind)));
    archive.write("format_version", c10::IValue(kArtifactFormatVersion));
    archive.write("job_id", c10::IValue(artifact.job_id));
    archive.write("model", c10::IValue(artifact.model));
    WriteOptions(archive, "model_options", artifact.model_options);
    WriteDataSpec(archive, artifact.data);
    WriteSignatures(archive, "inputs", artifact.inputs);
    WriteSignatures(archive, "outputs", artifact.outputs);
    archive.write("dataset", c10::IValue(artifact.dataset));
    WriteOptions(archive, "dataset_options", artifact.dataset_options);
    // IValue ints are signed; the seed round-trips through its bits.
    archive.write("seed", c10::IValue(static_cast<int64_t>(artifact.seed)));
    archive.write("trained_precision", c10::IValue(artifact.trained_precision));
    torch::serialize::OutputArchive weights;
    WriteNamedTensors(weights, artifact.weights);
    archive.write("weights", weights);
    WriteCalibration(archive, artifact.calibration);
  });
}

absl::StatusOr<ExportArtifact> ExportArtifact::Read(const std::string& path) {
  ExportArtifact artifact;
  const std::string context = absl::StrCat("export artifact ", path);
  RETURN_IF_ERROR(LoadChecked(
      path, "export artifact", kArtifactKind, kArtifactFormatVersion,
      [&](torch::serialize::InputArchive& archive) -> absl::Status {
        artifact.job_id = ReadArchiveString(archive, "job_id");
        artifact.model = ReadArchiveString(archive, "model");
        ASSIGN_OR_RETURN(artifact.model_options, ReadOptions(archive, "model_options"));
        ASSIGN_OR_RETURN(artifact.data, ReadDataSpec(archive));
        ASSIGN_OR_RETURN(artifact.inputs, ReadSignatures(archive, "inputs"));
        ASSIGN_OR_RETURN(artifact.outputs, ReadSignatures(archive, "outputs"));
        artifact.dataset = ReadArchiveString(archive, "dataset");
        ASSIGN_OR_RETURN(artifact.dataset_options, ReadOptions(archive, "dataset_options"));
        artifact.seed = static_cast<uint64_t>(ReadArchiveInt(archive, "seed"));
        artifact.trained_precision = ReadArchiveString(archive, "trained_precision");
        torch::serialize::InputArchive weights;
        archive.read("weights", weights);
        ASSIGN_OR_RETURN(artifact.weights, ReadNamedTensors(weights, context));
        ASSIGN_OR_RETURN(artifact.calibration, ReadCalibration(archive, context));
        return absl::OkStatus();
      }));
  return artifact;
}

absl::Status WriteCalibrationSample(const std::string& path, const CalibrationSample& sample) {
  return SaveAtomically(path, "calibration sample", [&](torch::serialize::OutputArchive& archive) {
    archive.write("kind", c10::IValue(std::string(kCalibrationKind)));
    archive.write("format_version", c10::IValue(kCalibrationFormatVersion));
    WriteCalibration(archive, sample);
  });
}

absl::StatusOr<CalibrationSample> ReadCalibrationSample(const std::string& path) {
  CalibrationSample sample;
  RETURN_IF_ERROR(LoadChecked(path, "calibration sample", kCalibrationKind,
                              kCalibrationFormatVersion,
                              [&](torch::serialize::InputArchive& archive) -> absl::Status {
                                ASSIGN_OR_RETURN(sample, ReadCalibration(archive, path));
                                return absl::OkStatus();
                              }));
  return sample;
}

}  // namespace mantissa
