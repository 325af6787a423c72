#ifndef MANTISSA_SERVER_MODELS_MLP_H_
#define MANTISSA_SERVER_MODELS_MLP_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/common/option_reader.h"
#include "server/models/model.h"
#include "server/models/model_config.h"

namespace mantissa {

// Flatten -> [Linear -> activation] x hidden -> Linear(num_classes).
// model_options: hidden=256,128 (sizes), activation=relu|gelu|tanh.
class Mlp {
 public:
  static constexpr char kName[] = "mlp";

  struct Options {
    std::vector<int64_t> hidden = {256, 128};
    std::string activation = "relu";
  };

  static absl::StatusOr<Options> ParseOptions(OptionReader& reader);
  static std::unique_ptr<Model> Build(const Options& options, const DataSpec& data);
  // The registry's parser: options parsed into a ModelConfig.
  static absl::StatusOr<std::shared_ptr<const ModelConfig>> ParseConfig(OptionReader& reader);
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_MODELS_MLP_H_
