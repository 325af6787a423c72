#include "server/models/cnn.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/status_macros.h"

namespace mantissa {
namespace {

class CnnConfig final : public ModelConfigOf<Cnn> {
 public:
  using ModelConfigOf::ModelConfigOf;

  absl::Status CheckData(const DataSpec& data) const override {
    // Token windows get Build's message, which names their shape.
    if (data.task != Task::kClassification) return absl::OkStatus();
    return CheckClassificationData(name(), data);
  }

  std::optional<ModelSizeEstimate> EstimateSize(const DataSpec& data) const override {
    if (data.input_shape.size() != 3) return std::nullopt;  // Build says why
    const double classes = static_cast<double>(data.num_classes);
    double channels = static_cast<double>(data.input_shape[0]);
    double pixels = static_cast<double>(data.input_shape[1]) * data.input_shape[2];
    ModelSizeEstimate size;
    for (int64_t out : options().channels) {
      size.parameters += channels * out * 25 + 2.0 * out;
      size.activations_per_item += 3.0 * out * pixels;  // conv, norm, relu
      channels = static_cast<double>(out);
      pixels /= 4;
    }
    const double hidden = static_cast<double>(options().hidden);
    size.parameters += channels * pixels * hidden + hidden + hidden * classes + classes;
    size.activations_per_item += 2.0 * hidden;
    return size;
  }
};

}  // namespace

absl::StatusOr<std::shared_ptr<const ModelConfig>> Cnn::ParseConfig(OptionReader& reader) {
  return ParseModelConfig<Cnn, CnnConfig>(reader);
}

absl::StatusOr<Cnn::Options> Cnn::ParseOptions(OptionReader& reader) {
  Options options;
  ASSIGN_OR_RETURN(options.channels, reader.IntList("channels", options.channels));
  if (options.channels.empty()) {
    return absl::InvalidArgumentError("model_options[channels]: needs at least one stage");
  }
  ASSIGN_OR_RETURN(options.hidden, reader.Int("hidden", options.hidden, /*min_value=*/1));
  ASSIGN_OR_RETURN(std::string batchnorm, reader.Choice("batchnorm", "true", {"true", "false"}));
  options.batchnorm = batchnorm == "true";
  return options;
}

absl::StatusOr<std::unique_ptr<Model>> Cnn::Build(const Options& options, const DataSpec& data) {
  if (data.task != Task::kClassification || data.input_shape.size() != 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("model cnn needs image classification data [C, H, W]; the dataset gives ",
                     data.task == Task::kLanguageModel ? "language-model token windows of shape ["
                                                       : "inputs of shape [",
                     absl::StrJoin(data.input_shape, ", "), "]"));
  }
  int64_t in_channels = data.input_shape[0];
  int64_t height = data.input_shape[1];
  int64_t width = data.input_shape[2];

  torch::nn::Sequential net;
  for (int64_t out_channels : options.channels) {
    // The conv bias is redundant in front of BatchNorm's shift.
    net->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(in_channels, out_channels, 5)
                                         .padding(2)
                                         .bias(!options.batchnorm)));
    if (options.batchnorm) net->push_back(torch::nn::BatchNorm2d(out_channels));
    net->push_back(torch::nn::ReLU());
    net->push_back(torch::nn::MaxPool2d(2));
    in_channels = out_channels;
    height /= 2;
    width /= 2;
    if (height < 1 || width < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model cnn: input [", absl::StrJoin(data.input_shape, ", "), "] is too small for ",
          options.channels.size(),
          " pooling stages (model_options[channels]=", absl::StrJoin(options.channels, ","), ")"));
    }
  }
  net->push_back(torch::nn::Flatten());
  net->push_back(torch::nn::Linear(in_channels * height * width, options.hidden));
  net->push_back(torch::nn::ReLU());
  net->push_back(torch::nn::Linear(options.hidden, data.num_classes));
  return std::make_unique<ModuleModel<torch::nn::Sequential>>(std::move(net));
}

}  // namespace mantissa
