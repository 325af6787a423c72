#ifndef MANTISSA_SERVER_MODELS_MODEL_FACTORY_H_
#define MANTISSA_SERVER_MODELS_MODEL_FACTORY_H_

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/models/model.h"

namespace mantissa {

// Maps JobSpec.model + model_options to a Model: mlp, cnn, gpt, torchscript.
// Adding a model means one file with ParseOptions/Build and one entry in
// model_factory.cc.
class ModelFactory {
 public:
  static std::vector<std::string> Names();

  // NOT_FOUND for an unknown name (listing the valid ones), INVALID_ARGUMENT
  // for bad options. Cheap: builds nothing.
  static absl::Status Validate(const std::string& name,
                               const std::map<std::string, std::string>& options);

  // A model's size by formula, without building it: parameters and
  // activation elements kept per input item for the backward (a rough lower
  // bound). nullopt where unknown (torchscript). Bad options: their error.
  struct SizeEstimate {
    double parameters = 0;
    double activations_per_item = 0;
  };
  static absl::StatusOr<std::optional<SizeEstimate>> EstimateSize(
      const std::string& name, const std::map<std::string, std::string>& options,
      const DataSpec& data);

  // Builds the model with freshly initialised parameters (or, for
  // torchscript, the file's) on the CPU. INVALID_ARGUMENT when the model
  // does not fit the dataset (e.g. cnn on token windows, gpt on images).
  static absl::StatusOr<std::unique_ptr<Model>> Build(
      const std::string& name, const std::map<std::string, std::string>& options,
      const DataSpec& data);
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_MODELS_MODEL_FACTORY_H_
