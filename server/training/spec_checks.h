#ifndef MANTISSA_SERVER_TRAINING_SPEC_CHECKS_H_
#define MANTISSA_SERVER_TRAINING_SPEC_CHECKS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace mantissa {

// The field checks the sections of ResolveJobSpec share. Each error is
// INVALID_ARGUMENT, "<field>: <why>".
absl::Status Invalid(absl::string_view field, absl::string_view why);
absl::Status RequirePositive(absl::string_view field, int64_t value);
absl::Status RequireNonNegative(absl::string_view field, int64_t value);
// NaN and infinities fail too.
absl::Status RequireFinitePositive(absl::string_view field, double value);
absl::Status CheckLength(absl::string_view field, const std::string& value, int64_t max_bytes);

}  // namespace mantissa

#endif  // MANTISSA_SERVER_TRAINING_SPEC_CHECKS_H_
