#include "server/training/spec_checks.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace mantissa {

absl::Status Invalid(absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
}

absl::Status RequirePositive(absl::string_view field, int64_t value) {
  if (value <= 0) return Invalid(field, absl::StrCat("must be > 0, got ", value));
  return absl::OkStatus();
}

absl::Status RequireNonNegative(absl::string_view field, int64_t value) {
  if (value < 0) return Invalid(field, absl::StrCat("must be >= 0, got ", value));
  return absl::OkStatus();
}

absl::Status RequireFinitePositive(absl::string_view field, double value) {
  if (!(value > 0) || !std::isfinite(value)) {
    return Invalid(field, absl::StrCat("must be a finite number > 0, got ", value));
  }
  return absl::OkStatus();
}

absl::Status CheckLength(absl::string_view field, const std::string& value, int64_t max_bytes) {
  if (static_cast<int64_t>(value.size()) <= max_bytes) return absl::OkStatus();
  return Invalid(field, absl::StrCat("must be at most ", max_bytes, " bytes, got ", value.size()));
}

}  // namespace mantissa
