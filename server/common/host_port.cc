#include "server/common/host_port.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace mantissa {

absl::StatusOr<HostPort> ParseHostPort(absl::string_view flag, absl::string_view address) {
  const auto invalid = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": '", address, "' ", why, " (expected HOST:PORT, e.g. 127.0.0.1:0)"));
  };
  const size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos) return invalid("has no port");
  absl::string_view host = address.substr(0, colon);
  const bool open_bracket = !host.empty() && host.front() == '[';
  const bool close_bracket = !host.empty() && host.back() == ']';
  if (open_bracket != close_bracket) return invalid("has unbalanced brackets");
  if (open_bracket) host = host.substr(1, host.size() - 2);
  if (host.empty()) return invalid("has no host");
  int port = 0;
  if (!absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return invalid("has a bad port");
  }
  return HostPort{std::string(host), port};
}

}  // namespace mantissa
