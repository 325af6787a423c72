#ifndef MANTISSA_SERVER_MODELS_MODEL_CONFIG_H_
#define MANTISSA_SERVER_MODELS_MODEL_CONFIG_H_

#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/common/option_reader.h"
#include "server/models/model.h"

namespace mantissa {

// A model's size by formula, without building it: parameters and activation
// elements kept per input item for the backward (a rough lower bound).
struct ModelSizeEstimate {
  double parameters = 0;
  double activations_per_item = 0;
};

// One model's parsed model_options (ModelRegistry::Parse): everything that
// validation, sizing, building and serving need, so that none of them parses
// the options again. Immutable and shared.
class ModelConfig {
 public:
  virtual ~ModelConfig() = default;

  // The registry name, e.g. "mlp".
  const std::string& name() const { return name_; }

  // INVALID_ARGUMENT when the model cannot take the dataset (e.g. mlp on
  // token windows); cheap, builds nothing. Build() runs it first.
  virtual absl::Status CheckData(const DataSpec& data) const { return absl::OkStatus(); }

  // nullopt where the size is unknown without building (torchscript) or
  // where the dataset does not fit (Build says why).
  virtual std::optional<ModelSizeEstimate> EstimateSize(const DataSpec& data) const {
    return std::nullopt;
  }

  // What the built model takes and produces for `data`: the dataset's spec
  // with the model's own overrides (gpt's vocab and seq_len may be larger).
  virtual DataSpec ModelDataSpec(const DataSpec& data) const { return data; }

  // The model with freshly initialised parameters (torchscript: the file's)
  // on the CPU. INVALID_ARGUMENT when it does not fit the dataset,
  // RESOURCE_EXHAUSTED when its parameters do not fit the host.
  absl::StatusOr<std::unique_ptr<Model>> Build(const DataSpec& data) const;

 protected:
  explicit ModelConfig(std::string name) : name_(std::move(name)) {}

  // Build() after CheckData, with LibTorch errors caught.
  virtual absl::StatusOr<std::unique_ptr<Model>> BuildChecked(const DataSpec& data) const = 0;

 private:
  std::string name_;
};

// A ModelConfig over a model class with `kName`, `Options` and
// `Build(options, data)`; a model's own config derives from it to add what
// it knows without building (data checks, size, served spec).
template <typename ModelT>
class ModelConfigOf : public ModelConfig {
 public:
  using Options = typename ModelT::Options;

  explicit ModelConfigOf(Options options)
      : ModelConfig(ModelT::kName), options_(std::move(options)) {}

  const Options& options() const { return options_; }

 protected:
  absl::StatusOr<std::unique_ptr<Model>> BuildChecked(const DataSpec& data) const override {
    return ModelT::Build(options_, data);
  }

 private:
  Options options_;
};

// The registry's parser for ModelT: its ParseOptions, kept in a `Config`.
template <typename ModelT, typename Config = ModelConfigOf<ModelT>>
absl::StatusOr<std::shared_ptr<const ModelConfig>> ParseModelConfig(OptionReader& reader) {
  absl::StatusOr<typename ModelT::Options> options = ModelT::ParseOptions(reader);
  if (!options.ok()) return options.status();
  return std::make_shared<const Config>(*std::move(options));
}

// The check mlp and cnn share: a classification dataset with an input shape
// and classes.
absl::Status CheckClassificationData(const std::string& model, const DataSpec& data);

}  // namespace mantissa

#endif  // MANTISSA_SERVER_MODELS_MODEL_CONFIG_H_
