#ifndef MANTISSA_CLIENT_GLOBAL_FLAGS_H_
#define MANTISSA_CLIENT_GLOBAL_FLAGS_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "client/arg_parser.h"
#include "client/daemon_channel.h"

// The flags every `mantissa` command takes, before or after its name: where
// the daemon is, how to authenticate, and the output format.
namespace mantissa::cli {

struct GlobalOptions {
  std::optional<std::string> server;
  std::optional<std::string> token_file;
  std::optional<std::string> tls_ca_file;
  std::optional<std::string> tls_cert_file;
  std::optional<std::string> tls_key_file;
  bool json = false;
  bool help = false;
};

void AddGlobalFlags(ArgParser& parser, GlobalOptions* global);

// The daemon's address: --server, else $MANTISSA_SERVER, else the default.
std::string ServerAddress(const GlobalOptions& global);

// How to reach `server`: each TLS file from its flag or else its environment
// variable, the token from --token-file or else $MANTISSA_TOKEN.
absl::StatusOr<ChannelOptions> BuildChannelOptions(const GlobalOptions& global,
                                                   const std::string& server);

}  // namespace mantissa::cli

#endif  // MANTISSA_CLIENT_GLOBAL_FLAGS_H_
