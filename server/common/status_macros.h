#ifndef MANTISSA_SERVER_COMMON_STATUS_MACROS_H_
#define MANTISSA_SERVER_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Abseil 20220623 ships no status macros; these follow the usual shape.

#define MANTISSA_CONCAT_INNER_(a, b) a##b
#define MANTISSA_CONCAT_(a, b) MANTISSA_CONCAT_INNER_(a, b)

#define RETURN_IF_ERROR(expr)                            \
  do {                                                   \
    ::absl::Status _mantissa_status = (expr);            \
    if (!_mantissa_status.ok()) return _mantissa_status; \
  } while (0)

#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(MANTISSA_CONCAT_(_mantissa_statusor_, __LINE__), lhs, expr)

#define ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                           \
  if (!statusor.ok()) return statusor.status();     \
  lhs = std::move(statusor).value()

#endif  // MANTISSA_SERVER_COMMON_STATUS_MACROS_H_
