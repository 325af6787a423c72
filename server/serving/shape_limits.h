#ifndef MANTISSA_SERVER_SERVING_SHAPE_LIMITS_H_
#define MANTISSA_SERVER_SERVING_SHAPE_LIMITS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/repeated_field.h"
#include "mantissa/v1/serving.pb.h"

namespace mantissa {

// Bounds on the tensor shapes a model declares (RegisterModel, config.json),
// so that no declaration makes the server allocate without limit: the
// calibration batch and every request are sized from them.
struct ShapeLimits {
  int64_t max_dim = int64_t{1} << 20;       // as --max_tensor_dim
  int64_t max_elements = int64_t{1} << 24;  // per item, as --max_tensor_elements
};

// INVALID_ARGUMENT naming the tensor (e.g. "inputs[0] (x)", `field` being
// "inputs") when a dimension is neither -1 (variable) nor in 1..max_dim, or
// when one item's elements (the product of the fixed dimensions,
// overflow-checked) exceed max_elements.
absl::Status CheckDeclaredShapes(absl::string_view field,
                                 const google::protobuf::RepeatedPtrField<v1::TensorSpec>& specs,
                                 const ShapeLimits& limits);

}  // namespace mantissa

#endif  // MANTISSA_SERVER_SERVING_SHAPE_LIMITS_H_
