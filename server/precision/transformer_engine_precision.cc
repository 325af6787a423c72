#include "server/precision/transformer_engine_precision.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "server/common/torch_compat.h"
#include "server/models/swappable_layers.h"
#include "server/precision/precision_guards.h"

namespace mantissa {
namespace {

std::string DtypeName(torch::Dtype dtype) {
  return dtype == torch::kFloat16    ? "float16"
         : dtype == torch::kBFloat16 ? "bfloat16"
                                     : c10::toString(dtype);
}

// Makes `parent`'s forward call `layer` instead of its child `name` (which
// is `old`). False where the parent cannot be re-pointed.
bool SwapChild(torch::nn::Module& parent, const std::string& name,
               const std::shared_ptr<torch::nn::Module>& old, const Fp8Linear& layer) {
  if (auto* sequential = dynamic_cast<torch::nn::SequentialImpl*>(&parent)) {
    for (torch::nn::AnyModule& entry : *sequential) {
      if (entry.ptr() != old) continue;
      entry = torch::nn::AnyModule(layer);
      parent.replace_module(name, layer.ptr());
      return true;
    }
    return false;
  }
  if (auto* swappable = dynamic_cast<SwappableLayers*>(&parent)) {
    return swappable->SwapLayer(name, torch::nn::AnyModule(layer));
  }
  return false;
}

void WriteScaling(torch::serialize::OutputArchive& archive, const std::string& key,
                  const Fp8TensorScaling& scaling) {
  archive.write(key + "_amax_history", scaling.amax_history().detach().to(torch::kCPU));
  archive.write(key + "_scale", scaling.scale().detach().to(torch::kCPU));
}

void ReadScaling(torch::serialize::InputArchive& archive, const std::string& key,
                 Fp8TensorScaling& scaling) {
  torch::Tensor history, scale;
  archive.read(key + "_amax_history", history);
  archive.read(key + "_scale", scale);
  scaling.Load(history, scale);
}

}  // namespace

absl::StatusOr<std::unique_ptr<TransformerEnginePrecision>> TransformerEnginePrecision::Create(
    Options options) {
  if (options.weights_dtype != torch::kBFloat16 && options.weights_dtype != torch::kFloat16) {
    return absl::InvalidArgumentError(
        absl::StrCat("transformer-engine: weights dtype must be bfloat16 or float16, not ",
                     DtypeName(options.weights_dtype)));
  }
  if (absl::Status status = options.recipe.Validate(); !status.ok()) return status;
  if (options.backend == Fp8Backend::kScaledMm && (!compat::kHasFp8 || !options.device.is_cuda())) {
    return absl::FailedPreconditionError(
        absl::StrCat("transformer-engine: FP8 GEMMs (at::_scaled_mm) need LibTorch >= 2.4 on a "
                     "CUDA device of compute capability >= 8.9; this is LibTorch ",
                     compat::LibTorchVersion(), " on ", options.device.str()));
  }
  return std::unique_ptr<TransformerEnginePrecision>(
      new TransformerEnginePrecision(std::move(options)));
}

void TransformerEnginePrecision::ConvertModule(Model& model) {
  // Cast first: the FP8 layers take over the (cast) parameter tensors.
  model.ToDtype(options_.weights_dtype);
  const std::shared_ptr<torch::nn::Module> root = model.nn_module();
  if (root == nullptr) {
    AddWarning(
        absl::StrCat("transformer-engine: the model is not a torch::nn module "
                     "(TorchScript), so no layer runs in FP8; it trains in ",
                     DtypeName(options_.weights_dtype)));
    return;
  }
  SwapLinears(*root, "");
  if (layers_.empty()) {
    AddWarning(
        absl::StrCat("transformer-engine: the model has no Linear layer FP8 can run, so it "
                     "trains in ",
                     DtypeName(options_.weights_dtype), " only"));
  }
}

void TransformerEnginePrecision::SwapLinears(torch::nn::Module& parent, const std::string& prefix) {
  // named_children() is a copy, so swapping while iterating is safe.
  for (const auto& child : parent.named_children()) {
    const std::string name = prefix.empty() ? child.key() : absl::StrCat(prefix, ".", child.key());
    const auto* linear = child.value()->as<torch::nn::Linear>();
    if (linear == nullptr) {
      // LayerNorm has no Linear inside and stays in the weights dtype.
      SwapLinears(*child.value(), name);
      continue;
    }
    const int64_t in = linear->options.in_features();
    const int64_t out = linear->options.out_features();
    const std::string kept = absl::StrCat("transformer-engine: Linear '", name, "' (", in, " -> ",
                                          out, ") stays in ", DtypeName(options_.weights_dtype));
    if (in % 16 != 0 || out % 16 != 0) {
      // Fabric warns the same way and leaves the layer alone.
      AddWarning(absl::StrCat(kept,
                              ": FP8 GEMMs need in_features and out_features divisible by "
                              "16; pad the layer to use FP8"));
      continue;
    }
    Fp8Linear fp8(*linear, scaling_, options_.backend);
    if (!SwapChild(parent, child.key(), child.value(), fp8)) {
      AddWarning(absl::StrCat(kept, ": its parent module (", parent.name(),
                              ") calls it directly and cannot swap it"));
      continue;
    }
    layers_.emplace_back(name, std::move(fp8));
  }
}

std::unique_ptr<PrecisionGuard> TransformerEnginePrecision::ModuleInitGuard() {
  return std::make_unique<DefaultDtypePrecisionGuard>(options_.weights_dtype);
}

std::unique_ptr<PrecisionGuard> TransformerEnginePrecision::ForwardGuard() {
  // Fabric's fallback autocast (Fabric enters it for CUDA; CPU autocast has
  // no float16 in LibTorch 1.13). Fabric's default-dtype context is left out:
  // the default dtype is process-wide and other jobs' threads would see it.
  const c10::DeviceType device_type = options_.device.type();
  if (device_type != c10::DeviceType::CUDA && options_.weights_dtype != torch::kBFloat16) {
    return nullptr;
  }
  return std::make_unique<AutocastPrecisionGuard>(device_type, options_.weights_dtype);
}

torch::Tensor TransformerEnginePrecision::ConvertInput(const torch::Tensor& input) {
  return ConvertFloatingTensor(input, options_.weights_dtype);
}

torch::Tensor TransformerEnginePrecision::ConvertOutput(const torch::Tensor& output) {
  return ConvertFloatingTensor(output, torch::kFloat32);
}

void TransformerEnginePrecision::Backward(const torch::Tensor& loss) {
  PrecisionPlugin::Backward(loss);
  if (!reduce_amaxes_) scaling_->Update();
}

OptimizerStepResult TransformerEnginePrecision::OptimizerStep(torch::optim::Optimizer& optimizer) {
  if (reduce_amaxes_) scaling_->Update();
  return PrecisionPlugin::OptimizerStep(optimizer);
}

void TransformerEnginePrecision::SetAmaxReducer(std::function<void(const torch::Tensor&)> reducer) {
  reduce_amaxes_ = static_cast<bool>(reducer);
  scaling_->set_amax_reducer(std::move(reducer));
}

void TransformerEnginePrecision::SaveState(torch::serialize::OutputArchive& archive) const {
  PrecisionPlugin::SaveState(archive);
  torch::serialize::OutputArchive fp8;
  std::vector<std::string> names;
  for (size_t i = 0; i < layers_.size(); ++i) {
    // Archive keys cannot hold the dots of layer names: those go in "layers".
    const auto& [name, layer] = layers_[i];
    names.push_back(name);
    torch::serialize::OutputArchive saved;
    WriteScaling(saved, "input", layer->fp8_state().input);
    WriteScaling(saved, "weight", layer->fp8_state().weight);
    WriteScaling(saved, "grad_output", layer->fp8_state().grad_output);
    fp8.write(absl::StrCat("l", i), saved);
  }
  fp8.write("layers", c10::IValue(absl::StrJoin(names, "\n")));
  archive.write("fp8", fp8);
}

void TransformerEnginePrecision::LoadState(torch::serialize::InputArchive& archive) {
  PrecisionPlugin::LoadState(archive);
  torch::serialize::InputArchive fp8;
  // A checkpoint of another precision: the FP8 scaling starts afresh.
  if (!archive.try_read("fp8", fp8)) return;
  c10::IValue value;
  fp8.read("layers", value);
  const std::string saved_names = value.toStringRef();
  std::vector<std::string> names;
  for (const auto& [name, layer] : layers_) names.push_back(name);
  TORCH_CHECK(saved_names == absl::StrJoin(names, "\n"),
              "the checkpoint's FP8 layers are not this model's: saved [",
              absl::StrJoin(absl::StrSplit(saved_names, '\n'), ", "), "], model [",
              absl::StrJoin(names, ", "), "]");
  for (size_t i = 0; i < layers_.size(); ++i) {
    torch::serialize::InputArchive saved;
    fp8.read(absl::StrCat("l", i), saved);
    Fp8LinearState& state = layers_[i].second->fp8_state();
    ReadScaling(saved, "input", state.input);
    ReadScaling(saved, "weight", state.weight);
    ReadScaling(saved, "grad_output", state.grad_output);
  }
}

}  // namespace mantissa
