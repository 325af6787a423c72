#include "server/models/torchscript_model.h"

#include <sys/stat.h>
#include <torch/script.h>

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/status_macros.h"

namespace mantissa {
namespace {

// c10 messages may carry a backtrace; the first line says what went wrong.
std::string FirstLine(const std::string& message) { return message.substr(0, message.find('\n')); }

std::string ShapeString(torch::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::Status CheckFile(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return absl::FailedPreconditionError(absl::StrCat("model_options[path]: ", path, " not found"));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("model_options[path]: ", path, " is not a regular file"));
  }
  return absl::OkStatus();
}

class LoadedTorchScript final : public Model {
 public:
  LoadedTorchScript(torch::jit::Module module, std::string path)
      : module_(std::move(module)), path_(std::move(path)) {}

  torch::Tensor Forward(const torch::Tensor& input) override {
    torch::jit::IValue out = module_.forward({input});
    TORCH_CHECK(out.isTensor(), "model torchscript (", path_, "): forward returned ", out.tagKind(),
                ", expected one Tensor");
    return out.toTensor();
  }

  std::vector<torch::Tensor> Parameters() override {
    std::vector<torch::Tensor> params;
    for (const torch::Tensor& p : module_.parameters()) params.push_back(p);
    return params;
  }

  NamedTensors State() override {
    NamedTensors state;
    for (const auto& p : module_.named_parameters()) state.emplace_back(p.name, p.value);
    for (const auto& b : module_.named_buffers()) state.emplace_back(b.name, b.value);
    return state;
  }

  void SetTraining(bool training) override { module_.train(training); }

  void To(torch::Device device, torch::Dtype dtype) override {
    module_.to(device);
    CastFloating(dtype);
  }
  void ToDevice(torch::Device device) override { module_.to(device); }
  void ToDtype(torch::Dtype dtype) override { CastFloating(dtype); }

 private:
  // jit::Module::to(dtype) casts every parameter and buffer, integer ones
  // such as BatchNorm's num_batches_tracked included; torch::nn modules (and
  // Model's contract) cast floating tensors only. set_data keeps each
  // tensor's identity, so optimizers and State() still alias them.
  void CastFloating(torch::Dtype dtype) {
    torch::NoGradGuard no_grad;
    for (torch::Tensor t : module_.parameters()) {
      if (t.is_floating_point()) t.set_data(t.to(dtype));
    }
    for (torch::Tensor t : module_.buffers()) {
      if (t.is_floating_point()) t.set_data(t.to(dtype));
    }
  }

  torch::jit::Module module_;
  std::string path_;
};

// Runs the module once, in eval mode and without gradients, on a zero batch
// of two items shaped as the dataset's, and checks the logits' shape.
absl::Status ProbeForward(torch::jit::Module& module, const std::string& path,
                          const DataSpec& data) {
  const bool lm = data.task == Task::kLanguageModel;
  std::vector<int64_t> shape = {2};
  shape.insert(shape.end(), data.input_shape.begin(), data.input_shape.end());
  torch::Tensor input = torch::zeros(shape, lm ? torch::kInt64 : torch::kFloat32);
  const std::string context =
      absl::StrCat("model_options[path]: ", path, ": forward on a zero batch ", ShapeString(shape));

  const bool was_training = module.is_training();
  module.train(false);
  torch::jit::IValue out;
  try {
    torch::NoGradGuard no_grad;
    out = module.forward({input});
  } catch (const std::exception& e) {
    module.train(was_training);
    return absl::InvalidArgumentError(absl::StrCat(context, " failed: ", FirstLine(e.what())));
  }
  module.train(was_training);
  if (!out.isTensor()) {
    return absl::InvalidArgumentError(
        absl::StrCat(context, " returned ", out.tagKind(), "; expected one Tensor of logits"));
  }
  const torch::Tensor logits = out.toTensor();
  // More outputs than classes (or tokens) train fine: cross entropy only
  // looks at the target's entry.
  const bool ok =
      lm ? logits.dim() == 3 && logits.size(0) == 2 && logits.size(1) == shape[1] &&
               logits.size(2) >= data.vocab_size
         : logits.dim() == 2 && logits.size(0) == 2 && logits.size(1) >= data.num_classes;
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        context, " returned ", ShapeString(logits.sizes()), "; expected ",
        lm ? absl::StrCat("[2, ", shape[1], ", >=", data.vocab_size, "] (vocabulary ",
                          data.vocab_size, ")")
           : absl::StrCat("[2, >=", data.num_classes, "] (", data.num_classes, " classes)")));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::shared_ptr<const ModelConfig>> TorchScriptModel::ParseConfig(
    OptionReader& reader) {
  return ParseModelConfig<TorchScriptModel>(reader);
}

absl::StatusOr<TorchScriptModel::Options> TorchScriptModel::ParseOptions(OptionReader& reader) {
  Options options;
  ASSIGN_OR_RETURN(options.path, reader.String("path", ""));
  if (options.path.empty()) {
    return absl::InvalidArgumentError(
        "model_options[path]: required, the TorchScript module file to train (e.g. "
        "path=/data/model.pt)");
  }
  RETURN_IF_ERROR(CheckFile(options.path));
  return options;
}

absl::StatusOr<std::unique_ptr<Model>> TorchScriptModel::Build(const Options& options,
                                                               const DataSpec& data) {
  RETURN_IF_ERROR(CheckFile(options.path));
  torch::jit::Module module;
  try {
    module = torch::jit::load(options.path, torch::Device(torch::kCPU));
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("model_options[path]: ", options.path,
                     " is not a TorchScript module: ", FirstLine(e.what_without_backtrace())));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("model_options[path]: ", options.path,
                     " is not a TorchScript module: ", FirstLine(e.what())));
  }
  if (!module.find_method("forward")) {
    return absl::InvalidArgumentError(
        absl::StrCat("model_options[path]: ", options.path, " has no forward method"));
  }
  // Saved modules may carry requires_grad=false (e.g. exported for
  // inference); every floating parameter is meant to be trained here.
  int64_t trainable = 0;
  for (torch::Tensor p : module.parameters()) {
    if (!p.is_floating_point()) continue;
    p.requires_grad_(true);
    ++trainable;
  }
  if (trainable == 0) {
    return absl::InvalidArgumentError(absl::StrCat("model_options[path]: ", options.path,
                                                   " has no floating-point parameters to train"));
  }
  RETURN_IF_ERROR(ProbeForward(module, options.path, data));
  return std::make_unique<LoadedTorchScript>(std::move(module), options.path);
}

}  // namespace mantissa
