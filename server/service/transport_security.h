#ifndef MANTISSA_SERVER_SERVICE_TRANSPORT_SECURITY_H_
#define MANTISSA_SERVER_SERVICE_TRANSPORT_SECURITY_H_

#include <grpcpp/security/server_credentials.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mantissa {

// Whether `host` (as in HOST:PORT, IPv6 without brackets) is a loopback
// address: localhost, 127.0.0.0/8 or ::1.
bool IsLoopbackHost(absl::string_view host);

// TLS for the daemon's listeners, from PEM files that are re-read when they
// change, so certificates rotate without a restart. Without a certificate
// the listeners are plaintext, which only loopback addresses get unless the
// operator insists (--allow_insecure). Immutable after Create.
class TransportSecurity {
 public:
  struct Options {
    std::string cert_file;       // PEM chain; with key_file turns TLS on
    std::string key_file;        // PEM private key
    std::string client_ca_file;  // PEM CAs; set: client certificates required and verified
    int refresh_seconds = 60;    // how often changed files are picked up (gRPC)
    bool allow_insecure = false;
  };

  // Checks that the files exist, parse and that the key matches the
  // certificate, so that a typo fails start-up rather than every handshake.
  static absl::StatusOr<std::unique_ptr<TransportSecurity>> Create(Options options);

  bool tls() const { return !options_.cert_file.empty(); }
  const Options& options() const { return options_; }

  // TLS credentials that watch the files, or insecure ones without TLS.
  std::shared_ptr<grpc::ServerCredentials> GrpcCredentials() const;

  // OK for TLS or a loopback `address`; with --allow_insecure also OK, with
  // a warning in the log; else FAILED_PRECONDITION naming `flag`.
  absl::Status CheckBind(absl::string_view flag, absl::string_view address) const;

 private:
  explicit TransportSecurity(Options options) : options_(std::move(options)) {}

  const Options options_;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_SERVICE_TRANSPORT_SECURITY_H_
