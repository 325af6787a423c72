#include "server/models/model_factory.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/option_reader.h"
#include "server/common/status_macros.h"
#include "server/models/mlp.h"

namespace mantissa {
namespace {

absl::Status UnknownModel(const std::string& name) {
  return absl::NotFoundError(absl::StrCat("model: unknown model '", name, "'; valid models: ",
                                          absl::StrJoin(ModelFactory::Names(), ", ")));
}

}  // namespace

std::vector<std::string> ModelFactory::Names() { return {"mlp"}; }

absl::Status ModelFactory::Validate(const std::string& name,
                                    const std::map<std::string, std::string>& options) {
  OptionReader reader("model_options", options);
  if (name == "mlp") {
    RETURN_IF_ERROR(Mlp::ParseOptions(reader).status());
  } else {
    return UnknownModel(name);
  }
  return reader.CheckAllUsed();
}

absl::StatusOr<std::unique_ptr<Model>> ModelFactory::Build(
    const std::string& name, const std::map<std::string, std::string>& options,
    const DataSpec& data) {
  if (data.num_classes <= 0 || data.input_shape.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model ", name, ": the dataset gives no input shape or classes"));
  }
  OptionReader reader("model_options", options);
  if (name == "mlp") {
    ASSIGN_OR_RETURN(Mlp::Options mlp, Mlp::ParseOptions(reader));
    RETURN_IF_ERROR(reader.CheckAllUsed());
    return Mlp::Build(mlp, data);
  }
  return UnknownModel(name);
}

}  // namespace mantissa
