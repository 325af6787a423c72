#include "server/serving/model_exporter.h"

#include <fcntl.h>
#include <torch/script.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/artifacts/checkpoint.h"
#include "server/artifacts/export_artifact.h"
#include "server/artifacts/named_tensor_archive.h"
#include "server/common/status_macros.h"
#include "server/common/torch_status.h"
#include "server/models/model_registry.h"
#include "server/precision/precision_registry.h"
#include "server/serving/half_cast_validator.h"
#include "server/serving/tensor_codec.h"

namespace mantissa {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kWeightsFormatVersion = 1;
constexpr char kWeightsFile[] = "weights.pt";
constexpr char kTorchScriptFile[] = "model.ts";  // a registered TorchScript model
constexpr char kTensorNamePattern[] = "[A-Za-z_][A-Za-z0-9_.-]*";

std::string ShapeString(torch::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// The error `status` with `prefix` in front of its message, same code.
absl::Status Prefixed(const absl::Status& status, absl::string_view prefix) {
  return absl::Status(status.code(), absl::StrCat(prefix, status.message()));
}

absl::Status CheckReadableFile(const std::string& path, const std::string& field) {
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    return absl::FailedPreconditionError(absl::StrCat(field, ": ", path, " not found"));
  }
  if (!fs::is_regular_file(path, ec)) {
    return absl::FailedPreconditionError(absl::StrCat(field, ": ", path, " is not a regular file"));
  }
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(field, ": ", path, " cannot be read: ", std::strerror(errno)));
  }
  ::close(fd);
  return absl::OkStatus();
}

absl::Status CopyInto(const std::string& from, const std::string& to, const std::string& field) {
  std::error_code ec;
  fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat(field, ": cannot copy ", from, ": ", ec.message()));
  }
  return absl::OkStatus();
}

// The job's export artifact. Jobs that finished before jobs wrote one keep
// only their checkpoint, which lacks the data the model takes.
absl::StatusOr<ExportArtifact> ReadJobArtifact(const std::string& state_dir,
                                               const std::string& job_id) {
  const std::string path = ExportArtifact::PathFor(state_dir, job_id);
  absl::StatusOr<ExportArtifact> artifact = ExportArtifact::Read(path);
  if (!absl::IsNotFound(artifact.status())) {
    return artifact.ok() ? std::move(artifact)
                         : Prefixed(artifact.status(), absl::StrCat("job ", job_id, ": "));
  }
  const std::string checkpoint = Checkpoint::PathFor(state_dir, job_id);
  std::error_code ec;
  if (!fs::is_regular_file(checkpoint, ec)) {
    return absl::FailedPreconditionError(absl::StrCat("job ", job_id, ": its checkpoint ",
                                                      checkpoint, " does not exist (nor its ",
                                                      "export artifact ", path, ")"));
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "job ", job_id, " has a checkpoint (", checkpoint, ") but no export artifact (", path,
      "): it finished before jobs wrote one. Train it again, or run a job with resume_from ",
      job_id, " and more steps, and export that job"));
}

// The version's config as the artifact describes the model: its inputs and
// outputs, float datatypes in the serving precision's.
v1::ModelConfig DescribeVersion(const ExportArtifact& artifact, const std::string& float_datatype) {
  v1::ModelConfig config;
  config.set_platform("mantissa_libtorch");
  config.set_model(artifact.model);
  config.mutable_model_options()->insert(artifact.model_options.begin(),
                                         artifact.model_options.end());
  if (artifact.data.task == Task::kLanguageModel) {
    config.set_task("language_model");
    config.set_vocab_size(artifact.data.vocab_size);
    config.set_seq_len(artifact.data.seq_len);
  } else {
    config.set_task("classification");
    config.set_num_classes(artifact.data.num_classes);
  }
  auto add = [&](const TensorSignature& signature, v1::TensorSpec* spec) {
    spec->set_name(signature.name);
    spec->set_datatype(signature.datatype == "FP32" ? float_datatype : signature.datatype);
    for (int64_t d : signature.shape) spec->add_shape(d);
  };
  for (const TensorSignature& input : artifact.inputs) add(input, config.add_inputs());
  for (const TensorSignature& output : artifact.outputs) add(output, config.add_outputs());
  config.set_dataset(artifact.dataset);
  config.mutable_dataset_options()->insert(artifact.dataset_options.begin(),
                                           artifact.dataset_options.end());
  config.set_seed(artifact.seed);
  return config;
}

// Builds the architecture on the CPU and checks that the artifact holds
// exactly its tensors with the same shapes, so a version never stores
// weights its loader cannot use.
absl::Status CheckWeightsFit(const std::string& model,
                             const std::map<std::string, std::string>& options,
                             const DataSpec& data, const NamedTensors& weights,
                             const std::string& artifact) {
  ASSIGN_OR_RETURN(const std::shared_ptr<const ModelConfig> parsed,
                   ModelRegistry::Parse(model, options));
  ASSIGN_OR_RETURN(std::unique_ptr<Model> built, parsed->Build(data));
  return GuardTorch(absl::StrCat("checking ", artifact), [&]() -> absl::Status {
    std::map<std::string, torch::Tensor> expected;
    for (const auto& [name, t] : built->State()) expected.emplace(name, t);
    const std::string what =
        absl::StrCat("export artifact ", artifact, " does not fit model ", model);
    std::set<std::string> seen;
    for (const auto& [name, t] : weights) {
      auto it = expected.find(name);
      if (it == expected.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": it holds ", name, ", which the model does not have"));
      }
      if (it->second.sizes() != t.sizes()) {
        return absl::InvalidArgumentError(absl::StrCat(what, ": it holds ", name, " ",
                                                       ShapeString(t.sizes()), ", the model has ",
                                                       ShapeString(it->second.sizes())));
      }
      seen.insert(name);
    }
    for (const auto& [name, t] : expected) {
      if (!seen.count(name)) {
        return absl::InvalidArgumentError(absl::StrCat(what, ": it lacks ", name));
      }
    }
    return absl::OkStatus();
  });
}

bool ValidTensorName(const std::string& name) {
  if (name.empty() || !(absl::ascii_isalpha(name[0]) || name[0] == '_')) return false;
  for (char c : name) {
    if (!(absl::ascii_isalnum(c) || c == '_' || c == '.' || c == '-')) return false;
  }
  return true;
}

// Checks a user's tensor specs and normalises float datatypes to the
// serving precision's.
absl::Status ValidateSpecs(const std::string& field,
                           google::protobuf::RepeatedPtrField<v1::TensorSpec>& specs,
                           const std::string& float_datatype) {
  if (specs.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": at least one tensor is needed (name, datatype, shape)"));
  }
  std::set<std::string> names;
  for (int i = 0; i < specs.size(); ++i) {
    v1::TensorSpec& spec = specs[i];
    const std::string at = absl::StrCat(field, "[", i, "]");
    if (!ValidTensorName(spec.name())) {
      return absl::InvalidArgumentError(absl::StrCat(
          at, ".name: '", spec.name(), "' is not a valid tensor name (", kTensorNamePattern, ")"));
    }
    if (!names.insert(spec.name()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(at, ".name: '", spec.name(), "' appears twice in ", field));
    }
    const std::string datatype = absl::AsciiStrToUpper(spec.datatype());
    if (datatype == "FP32" || datatype == "FP16" || datatype == "BF16") {
      spec.set_datatype(float_datatype);
    } else if (datatype == "INT64") {
      spec.set_datatype(datatype);
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat(at, ".datatype: '", spec.datatype(), "' (tensor ", spec.name(),
                       "); valid datatypes: FP32, FP16, BF16, INT64"));
    }
    for (int j = 0; j < spec.shape_size(); ++j) {
      const int64_t d = spec.shape(j);
      if (d < 1 && d != -1) {
        return absl::InvalidArgumentError(
            absl::StrCat(at, ".shape[", j, "]: ", d, " (tensor ", spec.name(),
                         "); dimensions are >= 1, or -1 for a variable one"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> ServingDatatype(const std::string& precision) {
  const PrecisionEntry* mode = PrecisionRegistry::Find(precision);
  if (mode != nullptr && mode->traits.servable) {
    return DatatypeFromDtype(mode->traits.parameter_dtype);
  }
  std::string hint;
  if (mode != nullptr && mode->traits.autocast && !mode->traits.fp8) {
    hint = " (mixed precisions train under autocast; serving casts the weights themselves)";
  }
  std::vector<std::string> valid;
  for (const PrecisionEntry* servable : PrecisionRegistry::ServableModes()) {
    valid.push_back(servable->name);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "precision: '", precision,
      "' is not a serving precision; valid values: ", absl::StrJoin(valid, ", "), hint));
}

absl::Status ValidateBatching(const v1::BatchingSettings& batching) {
  if (batching.has_max_batch_size() &&
      (batching.max_batch_size() < 1 || batching.max_batch_size() > kMaxBatchSizeLimit)) {
    return absl::InvalidArgumentError(
        absl::StrCat("batching.max_batch_size: ", batching.max_batch_size(), ", expected 1..",
                     kMaxBatchSizeLimit));
  }
  if (batching.has_max_queue_delay_us() &&
      (batching.max_queue_delay_us() < 0 ||
       batching.max_queue_delay_us() > kMaxQueueDelayUsLimit)) {
    return absl::InvalidArgumentError(
        absl::StrCat("batching.max_queue_delay_us: ", batching.max_queue_delay_us(),
                     ", expected 0..", kMaxQueueDelayUsLimit));
  }
  return absl::OkStatus();
}

absl::Status ValidatePromotion(const v1::PromotionPolicy& promotion, const std::string& task) {
  if (promotion.has_min_top1_agreement()) {
    const double value = promotion.min_top1_agreement();
    if (!(value >= 0.0 && value <= 1.0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("promotion.min_top1_agreement: ", value, ", expected a fraction in [0, 1]"));
    }
    if (task != "classification" && task != "language_model") {
      return absl::InvalidArgumentError(absl::StrCat(
          "promotion.min_top1_agreement: a model of task '", task,
          "' gives no top-1 agreement (classification and language_model models do); use "
          "promotion.max_mean_rel_diff"));
    }
  }
  if (promotion.has_max_mean_rel_diff()) {
    const double value = promotion.max_mean_rel_diff();
    if (!(value >= 0.0 && std::isfinite(value))) {
      return absl::InvalidArgumentError(
          absl::StrCat("promotion.max_mean_rel_diff: ", value, ", expected a finite number >= 0"));
    }
  }
  return absl::OkStatus();
}

absl::Status SaveWeights(const std::string& path, const NamedTensors& tensors) {
  return GuardTorch(absl::StrCat("writing weights ", path), [&] {
    // Weights files hold contiguous tensors: a view would carry its whole
    // storage into the file.
    NamedTensors contiguous;
    contiguous.reserve(tensors.size());
    for (const auto& [name, t] : tensors) contiguous.emplace_back(name, t.detach().contiguous());
    torch::serialize::OutputArchive archive;
    archive.write("format_version", c10::IValue(kWeightsFormatVersion));
    WriteNamedTensors(archive, contiguous);
    archive.save_to(path);
    return absl::OkStatus();
  });
}

absl::StatusOr<NamedTensors> LoadWeights(const std::string& path) {
  RETURN_IF_ERROR(CheckReadableFile(path, "weights"));
  NamedTensors tensors;
  const std::string context = absl::StrCat("weights ", path);
  const absl::Status status = GuardTorch(context, [&]() -> absl::Status {
    torch::serialize::InputArchive archive;
    archive.load_from(path);
    RETURN_IF_ERROR(CheckFormatVersion(archive, kWeightsFormatVersion, context));
    ASSIGN_OR_RETURN(tensors, ReadNamedTensors(archive, context));
    return absl::OkStatus();
  });
  // A file torch cannot parse is bad content, not a server fault.
  if (status.code() == absl::StatusCode::kInternal) {
    return absl::InvalidArgumentError(
        absl::StrCat(status.message(), " (not a weights file of a model version)"));
  }
  RETURN_IF_ERROR(status);
  return tensors;
}

absl::StatusOr<v1::ModelConfig> ModelExporter::ExportJob(ModelRepository& repository,
                                                         const std::string& state_dir,
                                                         const v1::Job& job,
                                                         const v1::ExportModelRequest& request,
                                                         const std::string& serving_precision) {
  RETURN_IF_ERROR(ModelRepository::ValidateName(request.name(), "name"));
  ASSIGN_OR_RETURN(const std::string float_datatype, ServingDatatype(serving_precision));
  if (request.has_batching()) RETURN_IF_ERROR(ValidateBatching(request.batching()));
  // The ranges now; the task, which decides top-1, once the artifact is read.
  RETURN_IF_ERROR(ValidatePromotion(request.promotion(), "classification"));
  if (job.state() != v1::SUCCEEDED) {
    return absl::FailedPreconditionError(absl::StrCat("job ", job.id(), " is ",
                                                      v1::JobState_Name(job.state()),
                                                      "; only SUCCEEDED jobs can be exported"));
  }
  ASSIGN_OR_RETURN(const ExportArtifact artifact, ReadJobArtifact(state_dir, job.id()));
  v1::ModelConfig config = DescribeVersion(artifact, float_datatype);
  config.set_precision(serving_precision);
  if (request.has_batching()) *config.mutable_batching() = request.batching();
  RETURN_IF_ERROR(ValidatePromotion(request.promotion(), config.task()));
  if (request.has_promotion()) *config.mutable_promotion() = request.promotion();
  config.set_weights_file(kWeightsFile);
  config.set_source_job_id(job.id());
  config.set_trained_precision(job.effective_precision());
  const std::string artifact_path = ExportArtifact::PathFor(state_dir, job.id());

  return repository.AddVersion(
      request.name(), std::move(config),
      [&](const std::string& dir, v1::ModelConfig& config) -> absl::Status {
        std::map<std::string, std::string> build_options = artifact.model_options;
        const ModelEntry* entry = ModelRegistry::Find(artifact.model);
        if (entry != nullptr && entry->file_option != nullptr) {
          // The version carries its own copy of the file the model reads;
          // the loader resolves the relative name against the version's
          // folder.
          const std::string key = entry->file_option;
          const std::string field = absl::StrCat("model_options[", key, "]");
          auto file = build_options.find(key);
          if (file == build_options.end()) {
            return absl::InvalidArgumentError(
                absl::StrCat("job ", job.id(), ": model ", artifact.model, " has no ", field));
          }
          RETURN_IF_ERROR(CheckReadableFile(file->second, field));
          const std::string copy = (fs::path(dir) / entry->file_copy).string();
          RETURN_IF_ERROR(CopyInto(file->second, copy, field));
          file->second = copy;
          (*config.mutable_model_options())[key] = entry->file_copy;
        }
        RETURN_IF_ERROR(CheckWeightsFit(artifact.model, build_options, artifact.data,
                                        artifact.weights, artifact_path));
        RETURN_IF_ERROR(SaveWeights((fs::path(dir) / kWeightsFile).string(), artifact.weights));
        if (artifact.calibration.items() == 0) return absl::OkStatus();
        return WriteCalibrationSample(
            (fs::path(dir) / HalfCastValidator::kCalibrationFile).string(), artifact.calibration);
      });
}

absl::StatusOr<v1::ModelConfig> ModelExporter::RegisterTorchScript(
    ModelRepository& repository, const v1::RegisterModelRequest& request,
    const std::string& serving_precision) {
  RETURN_IF_ERROR(ModelRepository::ValidateName(request.name(), "name"));
  ASSIGN_OR_RETURN(const std::string float_datatype, ServingDatatype(serving_precision));
  v1::ModelConfig config;
  *config.mutable_inputs() = request.inputs();
  *config.mutable_outputs() = request.outputs();
  RETURN_IF_ERROR(ValidateSpecs("inputs", *config.mutable_inputs(), float_datatype));
  RETURN_IF_ERROR(ValidateSpecs("outputs", *config.mutable_outputs(), float_datatype));
  if (request.has_batching()) {
    RETURN_IF_ERROR(ValidateBatching(request.batching()));
    *config.mutable_batching() = request.batching();
  }
  RETURN_IF_ERROR(ValidatePromotion(request.promotion(), "custom"));
  if (request.has_promotion()) *config.mutable_promotion() = request.promotion();
  const std::string& source = request.torchscript_path();
  if (source.empty()) return absl::InvalidArgumentError("torchscript_path: empty");
  RETURN_IF_ERROR(CheckReadableFile(source, "torchscript_path"));

  config.set_platform("pytorch_libtorch");
  config.set_model("torchscript");
  config.set_task("custom");
  config.set_precision(serving_precision);
  config.set_weights_file(kTorchScriptFile);
  const int num_inputs = config.inputs_size();
  return repository.AddVersion(
      request.name(), std::move(config),
      [&](const std::string& dir, v1::ModelConfig&) -> absl::Status {
        const std::string copy = (fs::path(dir) / kTorchScriptFile).string();
        RETURN_IF_ERROR(CopyInto(source, copy, "torchscript_path"));
        // Loading the copy checks exactly what the version will serve.
        return GuardTorch(absl::StrCat("torchscript_path: ", source), [&]() -> absl::Status {
          torch::jit::Module module;
          try {
            module = torch::jit::load(copy, torch::kCPU);
          } catch (const std::exception& e) {
            std::string message = e.what();
            message = message.substr(0, message.find('\n'));
            return absl::InvalidArgumentError(absl::StrCat(
                "torchscript_path: ", source, " is not a TorchScript module: ", message));
          }
          auto forward = module.find_method("forward");
          if (!forward) {
            return absl::InvalidArgumentError(
                absl::StrCat("torchscript_path: ", source, " has no forward method"));
          }
          // forward(self, inputs...): the declared inputs must be what it takes.
          const auto& arguments = forward->function().getSchema().arguments();
          int required = 0;
          for (size_t i = 1; i < arguments.size(); ++i) {
            if (!arguments[i].default_value()) ++required;
          }
          const int accepted = static_cast<int>(arguments.size()) - 1;
          if (num_inputs < required || num_inputs > accepted) {
            return absl::InvalidArgumentError(absl::StrCat(
                "inputs: ", num_inputs, " declared, but forward of ", source, " takes ",
                required == accepted ? absl::StrCat(accepted)
                                     : absl::StrCat(required, " to ", accepted),
                " inputs"));
          }
          return absl::OkStatus();
        });
      });
}

}  // namespace mantissa
