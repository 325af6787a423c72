#include "server/models/model_config.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/status_macros.h"
#include "server/common/torch_status.h"

namespace mantissa {

absl::StatusOr<std::unique_ptr<Model>> ModelConfig::Build(const DataSpec& data) const {
  RETURN_IF_ERROR(CheckData(data));
  std::unique_ptr<Model> model;
  // Construction allocates every parameter: a configuration too large for
  // the host comes back as RESOURCE_EXHAUSTED rather than an exception.
  RETURN_IF_ERROR(GuardTorch(absl::StrCat("building model ", name_), [&]() -> absl::Status {
    ASSIGN_OR_RETURN(model, BuildChecked(data));
    return absl::OkStatus();
  }));
  return model;
}

absl::Status CheckClassificationData(const std::string& model, const DataSpec& data) {
  if (data.task != Task::kClassification) {
    return absl::InvalidArgumentError(
        absl::StrCat("model ", model,
                     " needs a classification dataset; the dataset gives language-model token "
                     "windows of shape [",
                     absl::StrJoin(data.input_shape, ", "), "] (try model gpt)"));
  }
  if (data.num_classes <= 0 || data.input_shape.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model ", model, ": the dataset gives no input shape or classes"));
  }
  return absl::OkStatus();
}

}  // namespace mantissa
