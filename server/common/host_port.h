#ifndef MANTISSA_SERVER_COMMON_HOST_PORT_H_
#define MANTISSA_SERVER_COMMON_HOST_PORT_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mantissa {

struct HostPort {
  std::string host;  // without brackets for IPv6
  int port = 0;      // 0 = pick a free port
};

// Parses "HOST:PORT" or "[V6]:PORT"; INVALID_ARGUMENT names `flag` on error.
absl::StatusOr<HostPort> ParseHostPort(absl::string_view flag, absl::string_view address);

}  // namespace mantissa

#endif  // MANTISSA_SERVER_COMMON_HOST_PORT_H_
