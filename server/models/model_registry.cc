#include "server/models/model_registry.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/named_entries.h"
#include "server/common/status_macros.h"
#include "server/models/cnn.h"
#include "server/models/gpt.h"
#include "server/models/mlp.h"
#include "server/models/torchscript_model.h"

namespace mantissa {

const std::vector<ModelEntry>& ModelRegistry::Entries() {
  static const auto* const entries = new std::vector<ModelEntry>{
      {Mlp::kName, "multi-layer perceptron for classification", &Mlp::ParseConfig},
      {Cnn::kName, "LeNet-like convolutional image classifier", &Cnn::ParseConfig},
      {Gpt::kName, "decoder-only transformer language model", &Gpt::ParseConfig},
      {TorchScriptModel::kName, "a user's TorchScript module, trained as it is",
       &TorchScriptModel::ParseConfig, "path", "module.ts"},
  };
  return *entries;
}

std::vector<std::string> ModelRegistry::Names() { return EntryNames(Entries()); }

const ModelEntry* ModelRegistry::Find(const std::string& name) {
  return FindEntry(Entries(), name);
}

absl::StatusOr<std::shared_ptr<const ModelConfig>> ModelRegistry::Parse(
    const std::string& name, const std::map<std::string, std::string>& options) {
  return ParseEntryOptions(Entries(), "model", name, "model_options", options);
}

absl::StatusOr<std::unique_ptr<Model>> ModelRegistry::Build(
    const std::string& name, const std::map<std::string, std::string>& options,
    const DataSpec& data) {
  ASSIGN_OR_RETURN(std::shared_ptr<const ModelConfig> config, Parse(name, options));
  return config->Build(data);
}

}  // namespace mantissa
