#include "server/serving/shape_limits.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/status_macros.h"

namespace mantissa {
namespace {

absl::Status CheckDeclaredShape(absl::string_view field,
                                const google::protobuf::RepeatedField<int64_t>& shape,
                                const ShapeLimits& limits) {
  const std::string where = absl::StrCat(field, ": shape [", absl::StrJoin(shape, ", "), "]");
  int64_t elements = 1;
  for (int64_t d : shape) {
    if (d == -1) continue;
    if (d < 1 || d > limits.max_dim) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": dimension ", d,
                                                     "; expected -1 (variable) or 1..",
                                                     limits.max_dim, " (--max_tensor_dim)"));
    }
    if (__builtin_mul_overflow(elements, d, &elements) || elements > limits.max_elements) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": more than ", limits.max_elements,
                                                     " elements per item (--max_tensor_elements)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckDeclaredShapes(absl::string_view field,
                                 const google::protobuf::RepeatedPtrField<v1::TensorSpec>& specs,
                                 const ShapeLimits& limits) {
  for (int i = 0; i < specs.size(); ++i) {
    RETURN_IF_ERROR(CheckDeclaredShape(absl::StrCat(field, "[", i, "] (", specs[i].name(), ")"),
                                       specs[i].shape(), limits));
  }
  return absl::OkStatus();
}

}  // namespace mantissa
