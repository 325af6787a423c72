#ifndef MANTISSA_SERVER_MODELS_MODEL_REGISTRY_H_
#define MANTISSA_SERVER_MODELS_MODEL_REGISTRY_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/common/option_reader.h"
#include "server/models/model_config.h"

namespace mantissa {

// One model: JobSpec.model's value, a line of help, and the parser of its
// model_options. The table is in model_registry.cc.
struct ModelEntry {
  const char* name;
  const char* help;
  absl::StatusOr<std::shared_ptr<const ModelConfig>> (*parse)(OptionReader& reader);
  // A model_options key naming a file the model reads when built (null: none)
  // and the name an exported version keeps its copy under; loading a version
  // resolves a relative path against the version's folder.
  const char* file_option = nullptr;
  const char* file_copy = nullptr;
};

// JobSpec.model + model_options -> a parsed ModelConfig. Adding a model
// means one file whose class has a ParseConfig, and one row in the table.
class ModelRegistry {
 public:
  static const std::vector<ModelEntry>& Entries();
  static std::vector<std::string> Names();
  // The entry of `name`, or null.
  static const ModelEntry* Find(const std::string& name);

  // NOT_FOUND for an unknown name (listing the valid ones), INVALID_ARGUMENT
  // for bad or unknown options ("model_options[key]: ..."),
  // FAILED_PRECONDITION for a missing torchscript file. Builds nothing.
  static absl::StatusOr<std::shared_ptr<const ModelConfig>> Parse(
      const std::string& name, const std::map<std::string, std::string>& options);

  // Parse, then ModelConfig::Build: one call for tests and tools (the daemon
  // keeps the parsed config instead).
  static absl::StatusOr<std::unique_ptr<Model>> Build(
      const std::string& name, const std::map<std::string, std::string>& options,
      const DataSpec& data);
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_MODELS_MODEL_REGISTRY_H_
