#include "server/models/mlp.h"

#include <functional>

#include "server/common/status_macros.h"

namespace mantissa {
namespace {

class MlpConfig final : public ModelConfigOf<Mlp> {
 public:
  using ModelConfigOf::ModelConfigOf;

  absl::Status CheckData(const DataSpec& data) const override {
    return CheckClassificationData(name(), data);
  }

  std::optional<ModelSizeEstimate> EstimateSize(const DataSpec& data) const override {
    // Doubles: a configuration that overflows int64 is simply too large.
    double in = 1;
    for (int64_t d : data.input_shape) in *= static_cast<double>(d);
    const double classes = static_cast<double>(data.num_classes);
    ModelSizeEstimate size;
    for (int64_t width : options().hidden) {
      size.parameters += in * width + width;
      size.activations_per_item += 2.0 * width;  // pre- and post-activation
      in = static_cast<double>(width);
    }
    size.parameters += in * classes + classes;
    return size;
  }
};

}  // namespace

absl::StatusOr<std::shared_ptr<const ModelConfig>> Mlp::ParseConfig(OptionReader& reader) {
  return ParseModelConfig<Mlp, MlpConfig>(reader);
}

absl::StatusOr<Mlp::Options> Mlp::ParseOptions(OptionReader& reader) {
  Options options;
  ASSIGN_OR_RETURN(options.hidden, reader.IntList("hidden", options.hidden));
  ASSIGN_OR_RETURN(options.activation,
                   reader.Choice("activation", options.activation, {"relu", "gelu", "tanh"}));
  return options;
}

std::unique_ptr<Model> Mlp::Build(const Options& options, const DataSpec& data) {
  int64_t in_features = 1;
  for (int64_t d : data.input_shape) in_features *= d;

  torch::nn::Sequential net;
  net->push_back(torch::nn::Flatten());
  for (int64_t width : options.hidden) {
    net->push_back(torch::nn::Linear(in_features, width));
    if (options.activation == "gelu") {
      net->push_back(torch::nn::GELU());
    } else if (options.activation == "tanh") {
      net->push_back(torch::nn::Tanh());
    } else {
      net->push_back(torch::nn::ReLU());
    }
    in_features = width;
  }
  net->push_back(torch::nn::Linear(in_features, data.num_classes));
  return std::make_unique<ModuleModel<torch::nn::Sequential>>(std::move(net));
}

}  // namespace mantissa
