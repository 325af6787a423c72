#include "server/serving/servable.h"

#include <torch/script.h>

#include <algorithm>
#include <map>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "server/common/status_macros.h"
#include "server/common/torch_status.h"
#include "server/models/model_registry.h"
#include "server/precision/precision_registry.h"
#include "server/serving/half_cast_validator.h"
#include "server/serving/model_exporter.h"
#include "server/serving/tensor_codec.h"

namespace mantissa {

// A model as the servable runs it: zoo models take one input and give one
// output; TorchScript modules take the inputs in order and give a tensor or
// a tuple. Forward throws c10::Error; callers run it inside GuardTorch.
class Servable::Forward {
 public:
  virtual ~Forward() = default;
  virtual absl::StatusOr<std::vector<torch::Tensor>> Run(
      const std::vector<torch::Tensor>& inputs) = 0;
  // Casts floating parameters and buffers, moves them and sets eval mode.
  virtual void Prepare(torch::Device device, torch::Dtype dtype) = 0;
  // Each layer's output (Model::ForwardLayers), for models that have layers
  // of their own; the others (TorchScript) give UNIMPLEMENTED and their
  // validation lists only "output".
  virtual bool has_layers() const { return false; }
  virtual absl::StatusOr<HalfCastValidator::Layers> RunLayers(
      const std::vector<torch::Tensor>& /*inputs*/) {
    return absl::UnimplementedError("the model has no layers of its own");
  }
};

namespace {

constexpr char kZooPlatform[] = "mantissa_libtorch";
constexpr char kTorchScriptPlatform[] = "pytorch_libtorch";

// Output elements one validation chunk may hold: a language model's logits
// are [N, T, vocab], which for a large gpt is gigabytes at N = 64.
constexpr int64_t kMaxChunkOutputElements = int64_t{1} << 25;

std::string ShapeString(torch::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

std::string Names(const std::vector<v1::TensorSpec>& specs) {
  return absl::StrJoin(specs, ", ", [](std::string* out, const v1::TensorSpec& spec) {
    absl::StrAppend(out, spec.name());
  });
}

absl::Status Prefixed(const absl::Status& status, absl::string_view prefix) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(prefix, status.message()));
}

class ZooForward final : public Servable::Forward {
 public:
  explicit ZooForward(std::unique_ptr<Model> model) : model_(std::move(model)) {}

  absl::StatusOr<std::vector<torch::Tensor>> Run(
      const std::vector<torch::Tensor>& inputs) override {
    if (inputs.size() != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("zoo models take one input, got ", inputs.size()));
    }
    return std::vector<torch::Tensor>{model_->Forward(inputs[0])};
  }

  bool has_layers() const override { return true; }
  absl::StatusOr<HalfCastValidator::Layers> RunLayers(
      const std::vector<torch::Tensor>& inputs) override {
    if (inputs.size() != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("zoo models take one input, got ", inputs.size()));
    }
    return model_->ForwardLayers(inputs[0]);
  }

  void Prepare(torch::Device device, torch::Dtype dtype) override {
    torch::NoGradGuard no_grad;
    model_->ToDtype(dtype);
    model_->ToDevice(device);
    model_->SetTraining(false);
  }

 private:
  std::unique_ptr<Model> model_;
};

class ScriptForward final : public Servable::Forward {
 public:
  ScriptForward(torch::jit::Module module, std::string path)
      : module_(std::move(module)), path_(std::move(path)) {}

  absl::StatusOr<std::vector<torch::Tensor>> Run(
      const std::vector<torch::Tensor>& inputs) override {
    std::vector<torch::jit::IValue> args(inputs.begin(), inputs.end());
    const torch::jit::IValue out = module_.forward(std::move(args));
    std::vector<torch::Tensor> outputs;
    if (out.isTensor()) {
      outputs.push_back(out.toTensor());
    } else if (out.isTuple()) {
      for (const torch::jit::IValue& element : out.toTupleRef().elements()) {
        if (!element.isTensor()) return NotTensors(out);
        outputs.push_back(element.toTensor());
      }
    } else if (out.isTensorList()) {
      for (const torch::Tensor& t : out.toTensorVector()) outputs.push_back(t);
    } else {
      return NotTensors(out);
    }
    return outputs;
  }

  // jit::Module::to(dtype) would also cast integer buffers; only floating
  // tensors change, keeping their identity (set_data).
  void Prepare(torch::Device device, torch::Dtype dtype) override {
    torch::NoGradGuard no_grad;
    module_.to(device);
    for (torch::Tensor t : module_.parameters()) {
      if (t.is_floating_point()) t.set_data(t.to(dtype));
    }
    for (torch::Tensor t : module_.buffers()) {
      if (t.is_floating_point()) t.set_data(t.to(dtype));
    }
    module_.eval();
  }

 private:
  absl::Status NotTensors(const torch::jit::IValue& out) const {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": forward returned ", out.tagKind(),
                                                   "; expected a Tensor or a tuple of Tensors"));
  }

  torch::jit::Module module_;
  const std::string path_;
};

absl::Status CheckSpecs(const std::string& field,
                        const google::protobuf::RepeatedPtrField<v1::TensorSpec>& specs,
                        const ShapeLimits& limits, std::vector<torch::Dtype>* dtypes) {
  if (specs.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": the model declares no tensors"));
  }
  for (int i = 0; i < specs.size(); ++i) {
    absl::StatusOr<torch::Dtype> dtype = DtypeFromDatatype(specs[i].datatype());
    if (!dtype.ok()) {
      return Prefixed(dtype.status(), absl::StrCat(field, "[", i, "] (", specs[i].name(), "): "));
    }
    if (dtypes != nullptr) dtypes->push_back(*dtype);
  }
  return CheckDeclaredShapes(field, specs, limits);
}

absl::StatusOr<DataSpec> DataSpecFor(const v1::ModelConfig& config) {
  DataSpec spec;
  if (config.task() == "language_model") {
    spec.task = Task::kLanguageModel;
    if (config.vocab_size() <= 0 || config.seq_len() <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("vocab_size ", config.vocab_size(),
                                                     ", seq_len ", config.seq_len(),
                                                     ": a language model needs both positive"));
    }
    spec.input_shape = {config.seq_len()};
    spec.vocab_size = config.vocab_size();
    spec.seq_len = config.seq_len();
  } else if (config.task() == "classification") {
    spec.task = Task::kClassification;
    if (config.inputs_size() != 1 || config.num_classes() <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("a classifier takes one input and needs num_classes > 0; the config has ",
                       config.inputs_size(), " inputs and num_classes ", config.num_classes()));
    }
    for (int64_t d : config.inputs(0).shape()) {
      if (d < 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("inputs[0].shape ",
                         ShapeString(std::vector<int64_t>(config.inputs(0).shape().begin(),
                                                          config.inputs(0).shape().end())),
                         ": a classifier's input has fixed dimensions"));
      }
      spec.input_shape.push_back(d);
    }
    spec.num_classes = config.num_classes();
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("task '", config.task(), "' cannot run on platform ", kZooPlatform,
                     "; valid tasks: classification, language_model"));
  }
  return spec;
}

// Copies the version's fp32 weights into `model`, by name.
absl::Status LoadWeightsInto(Model& model, const std::string& model_name, const std::string& path) {
  ASSIGN_OR_RETURN(NamedTensors weights, LoadWeights(path));
  return GuardTorch(absl::StrCat("loading ", path), [&]() -> absl::Status {
    torch::NoGradGuard no_grad;
    std::map<std::string, torch::Tensor> by_name(weights.begin(), weights.end());
    std::set<std::string> used;
    for (auto& [name, tensor] : model.State()) {
      auto it = by_name.find(name);
      if (it == by_name.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat("weights ", path, " lack tensor ", name, " of model ", model_name));
      }
      if (it->second.sizes() != tensor.sizes()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "weights ", path, ": tensor ", name, " is ", ShapeString(it->second.sizes()),
            ", model ", model_name, " has ", ShapeString(tensor.sizes())));
      }
      tensor.copy_(it->second);
      used.insert(name);
    }
    for (const auto& [name, tensor] : weights) {
      if (used.count(name) == 0) {
        return absl::InvalidArgumentError(absl::StrCat("weights ", path, " hold tensor ", name,
                                                       ", which model ", model_name,
                                                       " does not have"));
      }
    }
    return absl::OkStatus();
  });
}

// A fresh fp32 copy of the version's model on the CPU.
absl::StatusOr<std::unique_ptr<Servable::Forward>> BuildForward(const Servable::Options& options) {
  const v1::ModelConfig& config = options.config;
  const std::string weights = absl::StrCat(options.version_dir, "/", config.weights_file());
  if (config.platform() == kTorchScriptPlatform) {
    std::unique_ptr<Servable::Forward> forward;
    RETURN_IF_ERROR(GuardTorch(absl::StrCat("loading ", weights), [&]() -> absl::Status {
      torch::jit::Module module = torch::jit::load(weights, torch::Device(torch::kCPU));
      if (!module.find_method("forward")) {
        return absl::InvalidArgumentError(absl::StrCat(weights, " has no forward method"));
      }
      forward = std::make_unique<ScriptForward>(std::move(module), weights);
      return absl::OkStatus();
    }));
    return forward;
  }
  ASSIGN_OR_RETURN(const DataSpec spec, DataSpecFor(config));
  std::map<std::string, std::string> model_options(config.model_options().begin(),
                                                   config.model_options().end());
  // The version's copy of the file the model reads (ModelExporter).
  const ModelEntry* entry = ModelRegistry::Find(config.model());
  if (entry != nullptr && entry->file_option != nullptr) {
    auto file = model_options.find(entry->file_option);
    if (file != model_options.end() && !absl::StartsWith(file->second, "/")) {
      file->second = absl::StrCat(options.version_dir, "/", file->second);
    }
  }
  ASSIGN_OR_RETURN(const std::shared_ptr<const ModelConfig> parsed,
                   ModelRegistry::Parse(config.model(), model_options));
  ASSIGN_OR_RETURN(std::unique_ptr<Model> model, parsed->Build(spec));
  // A training job building in another precision may have changed the
  // process-wide default dtype meanwhile; the weights are fp32.
  RETURN_IF_ERROR(GuardTorch("building the fp32 model", [&] {
    torch::NoGradGuard no_grad;
    model->ToDtype(torch::kFloat32);
    return absl::OkStatus();
  }));
  RETURN_IF_ERROR(LoadWeightsInto(*model, config.model(), weights));
  return std::unique_ptr<Servable::Forward>(std::make_unique<ZooForward>(std::move(model)));
}

std::vector<torch::Tensor> ConvertInputs(torch::Device device, torch::Dtype dtype,
                                         const std::vector<torch::Tensor>& inputs) {
  std::vector<torch::Tensor> converted;
  converted.reserve(inputs.size());
  for (const torch::Tensor& t : inputs) {
    converted.push_back(t.is_floating_point() ? t.to(device, dtype) : t.to(device));
  }
  return converted;
}

// Runs `forward` with the inputs moved to `device` and floats in `dtype`.
absl::StatusOr<std::vector<torch::Tensor>> RunOn(Servable::Forward& forward, torch::Device device,
                                                 torch::Dtype dtype,
                                                 const std::vector<torch::Tensor>& inputs) {
  return forward.Run(ConvertInputs(device, dtype, inputs));
}

}  // namespace

absl::StatusOr<torch::Dtype> ServingDtype(const std::string& precision) {
  ASSIGN_OR_RETURN(const std::string datatype, ServingDatatype(precision));
  return DtypeFromDatatype(datatype);
}

absl::StatusOr<std::string> ResolveServingPrecision(const std::string& requested,
                                                    const DeviceCapabilities& device) {
  std::vector<const PrecisionEntry*> here;
  for (const PrecisionEntry* mode : PrecisionRegistry::ServableModes()) {
    if (mode->support(device).supported) here.push_back(mode);
  }
  std::vector<std::string> valid_here;
  for (const PrecisionEntry* mode : here) valid_here.push_back(mode->name);
  if (requested.empty()) {
    // A half cast where the device computes one; float16 keeps more
    // mantissa than bfloat16.
    auto rank = [](const PrecisionEntry* mode) {
      if (!mode->traits.true_half) return 0;
      return mode->traits.parameter_dtype == torch::kFloat16 ? 2 : 1;
    };
    const PrecisionEntry* best = here.front();
    for (const PrecisionEntry* mode : here) {
      if (rank(mode) > rank(best)) best = mode;
    }
    return std::string(best->name);
  }
  RETURN_IF_ERROR(ServingDtype(requested).status());
  const PrecisionSupport support = PrecisionRegistry::Find(requested)->support(device);
  if (!support.supported) {
    return absl::FailedPreconditionError(absl::StrCat(
        "precision: ", requested, " cannot be served on device ", device.device_name, ": ",
        support.note, "; valid precisions on this device: ", absl::StrJoin(valid_here, ", ")));
  }
  return requested;
}

absl::StatusOr<std::shared_ptr<Servable>> Servable::Load(Options options,
                                                         v1::HalfCastValidation* validation) {
  std::shared_ptr<Servable> servable(new Servable());
  Servable& s = *servable;
  RETURN_IF_ERROR(s.Configure(options));

  // The served model, and (when casting) a second fp32 copy that exists only
  // while the cast is validated.
  ASSIGN_OR_RETURN(s.model_, BuildForward(options));
  std::unique_ptr<Forward> fp32_copy;
  if (s.dtype_ != torch::kFloat32) {
    ASSIGN_OR_RETURN(fp32_copy, BuildForward(options));
  }
  Forward* reference = fp32_copy != nullptr ? fp32_copy.get() : s.model_.get();
  RETURN_IF_ERROR(
      GuardTorch(absl::StrCat(s.where_, ": moving the model to ", s.device_.str()), [&] {
        if (fp32_copy != nullptr) fp32_copy->Prepare(s.device_, torch::kFloat32);
        s.model_->Prepare(s.device_, s.dtype_);
        return absl::OkStatus();
      }));
  RETURN_IF_ERROR(s.ValidateCast(options, *reference, validation));
  fp32_copy.reset();
  RETURN_IF_ERROR(s.StartBatcher(options));
  return servable;
}

absl::Status Servable::Configure(const Options& options) {
  const v1::ModelConfig& config = options.config;
  where_ = absl::StrCat("model ", config.name(), " version ", config.version());
  const std::string config_file = absl::StrCat(where_, ": ", options.version_dir, "/config.json: ");
  config_ = config;
  device_ = options.device;
  if (config.platform() != kZooPlatform && config.platform() != kTorchScriptPlatform) {
    return absl::InvalidArgumentError(absl::StrCat(config_file, "platform '", config.platform(),
                                                   "'; valid platforms: ", kZooPlatform, ", ",
                                                   kTorchScriptPlatform));
  }
  {
    absl::StatusOr<torch::Dtype> dtype = ServingDtype(config.precision());
    if (!dtype.ok()) return Prefixed(dtype.status(), config_file);
    dtype_ = *dtype;
  }
  RETURN_IF_ERROR(
      Prefixed(CheckSpecs("inputs", config.inputs(), options.shape_limits, nullptr), config_file));
  RETURN_IF_ERROR(Prefixed(
      CheckSpecs("outputs", config.outputs(), options.shape_limits, &output_dtypes_), config_file));
  RETURN_IF_ERROR(Prefixed(ValidateBatching(config.batching()), config_file));
  if (config.weights_file().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(config_file, "weights_file is empty"));
  }
  inputs_.assign(config.inputs().begin(), config.inputs().end());
  outputs_.assign(config.outputs().begin(), config.outputs().end());
  max_batch_size_ = config.batching().has_max_batch_size() ? config.batching().max_batch_size()
                                                           : options.default_max_batch_size;
  return absl::OkStatus();
}

namespace {

// The per-layer figures: both models traced when they have layers, else
// the output alone.
absl::Status CompareLayers(const HalfCastValidator::Options& check,
                           const CalibrationBatch& calibration, Servable::Forward& reference,
                           Servable::Forward& cast, torch::Device device, torch::Dtype cast_dtype,
                           HalfCastValidator::Result& result) {
  if (!reference.has_layers() || !cast.has_layers()) {
    HalfCastValidator::OutputAsLayer(check, &result);
    return absl::OkStatus();
  }
  auto trace = [device](Servable::Forward& forward, torch::Dtype dtype) {
    return [&forward, device, dtype](const std::vector<torch::Tensor>& inputs) {
      return forward.RunLayers(ConvertInputs(device, dtype, inputs));
    };
  };
  return HalfCastValidator::CompareLayers(check, calibration, trace(reference, torch::kFloat32),
                                          trace(cast, cast_dtype), &result);
}

}  // namespace

absl::Status Servable::ValidateCast(const Options& options, Forward& reference,
                                    v1::HalfCastValidation* validation) {
  const v1::ModelConfig& config = config_;
  const bool lm = config.task() == "language_model";
  HalfCastValidator::Options check;
  check.model = where_;
  check.precision = config.precision();
  check.top1_agreement = lm || config.task() == "classification";
  check.chunk_items = max_batch_size_;
  check.layer_tolerance = HalfCastValidator::LayerTolerance(config.promotion());
  if (lm) {
    int64_t per_item = 1;
    if (__builtin_mul_overflow(config.seq_len(), config.vocab_size(), &per_item)) {
      per_item = kMaxChunkOutputElements;  // one item per chunk
    }
    per_item = std::max<int64_t>(1, per_item);
    check.chunk_items =
        std::min(check.chunk_items, std::max<int64_t>(1, kMaxChunkOutputElements / per_item));
  }
  CalibrationBatch calibration;
  RETURN_IF_ERROR(GuardTorch(absl::StrCat(where_, ": making the calibration batch"), [&] {
    calibration =
        HalfCastValidator::ForVersion(config, options.version_dir, options.calibration_items);
    return absl::OkStatus();
  }));
  auto run_reference =
      [&](const std::vector<torch::Tensor>& inputs) -> absl::StatusOr<std::vector<torch::Tensor>> {
    ASSIGN_OR_RETURN(std::vector<torch::Tensor> outputs,
                     RunOn(reference, device_, torch::kFloat32, inputs));
    if (outputs.size() != outputs_.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("forward returned ", outputs.size(), " tensors; the config declares ",
                       outputs_.size(), " outputs (", Names(outputs_), ")"));
    }
    return outputs;
  };
  auto run_cast = [this](const std::vector<torch::Tensor>& inputs) { return Run(inputs); };
  absl::StatusOr<HalfCastValidator::Result> result =
      HalfCastValidator::Compare(check, calibration, run_reference, run_cast);
  if (!result.ok()) {
    // A forward that does not take the declared inputs is the config's
    // fault, not the server's.
    if (result.status().code() == absl::StatusCode::kInternal) {
      return absl::InvalidArgumentError(absl::StrCat(result.status().message(),
                                                     " (do the declared inputs ", Names(inputs_),
                                                     " fit the model's forward?)"));
    }
    return result.status();
  }
  RETURN_IF_ERROR(CompareLayers(check, calibration, reference, *model_, device_, dtype_, *result));
  if (validation != nullptr) *validation = result->validation;
  RETURN_IF_ERROR(HalfCastValidator::Verdict(check, *result));
  RETURN_IF_ERROR(HalfCastValidator::Promote(check, *result, config.promotion()));
  validation_ = result->validation;
  return absl::OkStatus();
}

absl::Status Servable::StartBatcher(const Options& options) {
  if (options.metrics != nullptr) metrics_ = options.metrics->ModelInference(config_.name());
  DynamicBatcher::Options batching;
  batching.model = config_.name();
  batching.max_batch_size = max_batch_size_;
  batching.max_queue_delay = absl::Microseconds(config_.batching().has_max_queue_delay_us()
                                                    ? config_.batching().max_queue_delay_us()
                                                    : options.default_max_queue_delay_us);
  // The batcher is a member: it stops (and joins) before the servable dies.
  batching.run = [this](const std::vector<torch::Tensor>& inputs) { return Run(inputs); };
  std::shared_ptr<InferenceMetrics> metrics = metrics_;
  std::shared_ptr<ModelStatistics> statistics = options.statistics;
  const int64_t version = config_.version();
  if (metrics != nullptr || statistics != nullptr) {
    batching.on_batch = [metrics, statistics, version](int64_t items, absl::Duration compute) {
      if (metrics != nullptr) metrics->ObserveBatch(items);
      if (statistics != nullptr) statistics->RecordExecution(version, items, compute);
    };
  }
  if (metrics != nullptr) {
    batching.on_queued = [metrics](int64_t delta) { metrics->Queued(delta); };
  }
  ASSIGN_OR_RETURN(batcher_, DynamicBatcher::Create(std::move(batching)));
  return absl::OkStatus();
}

Servable::Servable() : device_(torch::kCPU) {}

Servable::~Servable() { Stop(); }

void Servable::Stop() {
  if (batcher_ != nullptr) batcher_->Stop();
}

absl::StatusOr<std::vector<torch::Tensor>> Servable::Run(const std::vector<torch::Tensor>& inputs) {
  std::vector<torch::Tensor> outputs;
  RETURN_IF_ERROR(GuardTorch(absl::StrCat(where_, ": forward"), [&]() -> absl::Status {
    c10::InferenceMode inference_mode;
    if (inputs.size() != inputs_.size()) {
      return absl::InvalidArgumentError(absl::StrCat(where_, ": ", inputs.size(),
                                                     " inputs, the model declares ", inputs_.size(),
                                                     " (", Names(inputs_), ")"));
    }
    ASSIGN_OR_RETURN(outputs, RunOn(*model_, device_, dtype_, inputs));
    if (outputs.size() != outputs_.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          where_, ": forward returned ", outputs.size(), " tensors; the config declares ",
          outputs_.size(), " outputs (", Names(outputs_), ")"));
    }
    for (size_t i = 0; i < outputs.size(); ++i) {
      outputs[i] = outputs[i].to(torch::kCPU, output_dtypes_[i]);
    }
    return absl::OkStatus();
  }));
  return outputs;
}

absl::Status Servable::Enqueue(DynamicBatcher::Task task) {
  if (config_.task() == "language_model" && !task.inputs.empty()) {
    const torch::Tensor& ids = task.inputs[0];
    const std::string& name = inputs_[0].name();
    RETURN_IF_ERROR(GuardTorch(absl::StrCat(where_, ": input ", name), [&]() -> absl::Status {
      if (ids.dim() != 2 || ids.size(1) < 1 || ids.size(1) > config_.seq_len()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "input '", name, "': shape ", ShapeString(ids.sizes()), "; model ", config_.name(),
            " takes windows of 1..", config_.seq_len(), " tokens (seq_len)"));
      }
      const int64_t low = ids.min().item<int64_t>();
      const int64_t high = ids.max().item<int64_t>();
      if (low < 0 || high >= config_.vocab_size()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "input '", name, "': token id ", low < 0 ? low : high, " is outside model ",
            config_.name(), "'s vocabulary [0, ", config_.vocab_size(), ")"));
      }
      return absl::OkStatus();
    }));
  }
  return batcher_->Enqueue(std::move(task));
}

}  // namespace mantissa
