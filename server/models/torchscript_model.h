#ifndef MANTISSA_SERVER_MODELS_TORCHSCRIPT_MODEL_H_
#define MANTISSA_SERVER_MODELS_TORCHSCRIPT_MODEL_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/common/option_reader.h"
#include "server/models/model.h"
#include "server/models/model_config.h"

namespace mantissa {

// A user's TorchScript module (torch.jit.script(...).save(path) in Python),
// trained as it is: forward(input) must return one Tensor, logits
// [N, classes] or [N, T, vocab]. The module's floating parameters are made
// trainable on load; its training flag, dtype and device follow the Model
// calls.
// model_options: path=/abs/model.pt (read by the daemon, not the client).
class TorchScriptModel {
 public:
  static constexpr char kName[] = "torchscript";

  struct Options {
    std::string path;
  };

  // INVALID_ARGUMENT without a path, FAILED_PRECONDITION when the file does
  // not exist. Does not read the file.
  static absl::StatusOr<Options> ParseOptions(OptionReader& reader);
  // Loads the module on the CPU and runs it once on a zero batch shaped as
  // `data` says, so a module that does not fit the dataset fails here with
  // INVALID_ARGUMENT instead of in the first training step.
  static absl::StatusOr<std::unique_ptr<Model>> Build(const Options& options, const DataSpec& data);
  // The registry's parser: options parsed into a ModelConfig (no size
  // estimate: that needs the file).
  static absl::StatusOr<std::shared_ptr<const ModelConfig>> ParseConfig(OptionReader& reader);
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_MODELS_TORCHSCRIPT_MODEL_H_
