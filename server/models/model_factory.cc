#include "server/models/model_factory.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/option_reader.h"
#include "server/common/status_macros.h"
#include "server/common/torch_status.h"
#include "server/models/cnn.h"
#include "server/models/gpt.h"
#include "server/models/mlp.h"
#include "server/models/torchscript_model.h"

namespace mantissa {
namespace {

absl::Status UnknownModel(const std::string& name) {
  return absl::NotFoundError(absl::StrCat("model: unknown model '", name, "'; valid models: ",
                                          absl::StrJoin(ModelFactory::Names(), ", ")));
}

// mlp and cnn map an input to one of num_classes.
absl::Status CheckClassification(const std::string& name, const DataSpec& data) {
  if (data.task != Task::kClassification) {
    return absl::InvalidArgumentError(
        absl::StrCat("model ", name,
                     " needs a classification dataset; the dataset gives language-model token "
                     "windows of shape [",
                     absl::StrJoin(data.input_shape, ", "), "] (try model gpt)"));
  }
  if (data.num_classes <= 0 || data.input_shape.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model ", name, ": the dataset gives no input shape or classes"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Model>> BuildModel(const std::string& name, OptionReader& reader,
                                                  const DataSpec& data) {
  if (name == "mlp") {
    ASSIGN_OR_RETURN(Mlp::Options mlp, Mlp::ParseOptions(reader));
    RETURN_IF_ERROR(reader.CheckAllUsed());
    RETURN_IF_ERROR(CheckClassification(name, data));
    return Mlp::Build(mlp, data);
  }
  if (name == "cnn") {
    ASSIGN_OR_RETURN(Cnn::Options cnn, Cnn::ParseOptions(reader));
    RETURN_IF_ERROR(reader.CheckAllUsed());
    if (data.task == Task::kClassification) RETURN_IF_ERROR(CheckClassification(name, data));
    return Cnn::Build(cnn, data);
  }
  if (name == "gpt") {
    ASSIGN_OR_RETURN(Gpt::Options gpt, Gpt::ParseOptions(reader));
    RETURN_IF_ERROR(reader.CheckAllUsed());
    return Gpt::Build(gpt, data);
  }
  if (name == "torchscript") {
    ASSIGN_OR_RETURN(TorchScriptModel::Options ts, TorchScriptModel::ParseOptions(reader));
    RETURN_IF_ERROR(reader.CheckAllUsed());
    return TorchScriptModel::Build(ts, data);
  }
  return UnknownModel(name);
}

}  // namespace

std::vector<std::string> ModelFactory::Names() { return {"mlp", "cnn", "gpt", "torchscript"}; }

absl::Status ModelFactory::Validate(const std::string& name,
                                    const std::map<std::string, std::string>& options) {
  OptionReader reader("model_options", options);
  if (name == "mlp") {
    RETURN_IF_ERROR(Mlp::ParseOptions(reader).status());
  } else if (name == "cnn") {
    RETURN_IF_ERROR(Cnn::ParseOptions(reader).status());
  } else if (name == "gpt") {
    RETURN_IF_ERROR(Gpt::ParseOptions(reader).status());
  } else if (name == "torchscript") {
    RETURN_IF_ERROR(TorchScriptModel::ParseOptions(reader).status());
  } else {
    return UnknownModel(name);
  }
  return reader.CheckAllUsed();
}

absl::StatusOr<std::optional<ModelFactory::SizeEstimate>> ModelFactory::EstimateSize(
    const std::string& name, const std::map<std::string, std::string>& options,
    const DataSpec& data) {
  OptionReader reader("model_options", options);
  // Doubles: a configuration that overflows int64 is simply too large.
  double in = 1;
  for (int64_t d : data.input_shape) in *= static_cast<double>(d);
  const double classes = static_cast<double>(data.num_classes);
  SizeEstimate size;
  if (name == "mlp") {
    ASSIGN_OR_RETURN(Mlp::Options mlp, Mlp::ParseOptions(reader));
    for (int64_t width : mlp.hidden) {
      size.parameters += in * width + width;
      size.activations_per_item += 2.0 * width;  // pre- and post-activation
      in = static_cast<double>(width);
    }
    size.parameters += in * classes + classes;
    return size;
  }
  if (name == "cnn") {
    ASSIGN_OR_RETURN(Cnn::Options cnn, Cnn::ParseOptions(reader));
    if (data.input_shape.size() != 3) return std::nullopt;  // Build says why
    double channels = static_cast<double>(data.input_shape[0]);
    double pixels = static_cast<double>(data.input_shape[1]) * data.input_shape[2];
    for (int64_t out : cnn.channels) {
      size.parameters += channels * out * 25 + 2.0 * out;
      size.activations_per_item += 3.0 * out * pixels;  // conv, norm, relu
      channels = static_cast<double>(out);
      pixels /= 4;
    }
    size.parameters += channels * pixels * cnn.hidden + cnn.hidden + cnn.hidden * classes + classes;
    size.activations_per_item += 2.0 * cnn.hidden;
    return size;
  }
  if (name == "gpt") {
    ASSIGN_OR_RETURN(Gpt::Options gpt, Gpt::ParseOptions(reader));
    const double vocab = static_cast<double>(gpt.vocab > 0 ? gpt.vocab : data.vocab_size);
    const double seq = static_cast<double>(gpt.seq_len > 0 ? gpt.seq_len : data.seq_len);
    const double d = static_cast<double>(gpt.d_model);
    size.parameters = vocab * d + seq * d + gpt.layers * (12 * d * d + 13 * d) + 2 * d + d * vocab;
    // Per token: ~16 d-wide tensors per block, and the logits.
    size.activations_per_item = seq * (gpt.layers * 16 * d + 2 * vocab);
    return size;
  }
  return std::nullopt;
}

absl::StatusOr<std::unique_ptr<Model>> ModelFactory::Build(
    const std::string& name, const std::map<std::string, std::string>& options,
    const DataSpec& data) {
  OptionReader reader("model_options", options);
  std::unique_ptr<Model> model;
  // Construction allocates every parameter: a configuration too large for
  // the host comes back as RESOURCE_EXHAUSTED rather than an exception.
  RETURN_IF_ERROR(GuardTorch(absl::StrCat("building model ", name), [&]() -> absl::Status {
    ASSIGN_OR_RETURN(model, BuildModel(name, reader, data));
    return absl::OkStatus();
  }));
  return model;
}

}  // namespace mantissa
