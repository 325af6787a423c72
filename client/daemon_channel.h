#ifndef MANTISSA_CLIENT_DAEMON_CHANNEL_H_
#define MANTISSA_CLIENT_DAEMON_CHANNEL_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/channel.h"

namespace mantissa::cli {

// How the CLI reaches the daemon: plaintext or TLS (server verified against
// tls_ca_file, or the system's roots; a client certificate for mTLS), and a
// bearer token sent as `authorization` metadata on every call.
struct ChannelOptions {
  std::string target;         // HOST:PORT or any gRPC target URI
  std::string token;          // "" = none
  std::string tls_ca_file;    // any TLS file set turns TLS on
  std::string tls_cert_file;  // with tls_key_file: client certificate
  std::string tls_key_file;
};

// Reads the files now, so that a missing one is a usage error, not a
// handshake failure later.
absl::StatusOr<std::shared_ptr<grpc::Channel>> CreateDaemonChannel(const ChannelOptions& options);

// The token in `path`: its first line, trimmed; INVALID_ARGUMENT naming
// --token-file if unreadable or empty.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

}  // namespace mantissa::cli

#endif  // MANTISSA_CLIENT_DAEMON_CHANNEL_H_
