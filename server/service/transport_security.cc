#include "server/service/transport_security.h"

#include <arpa/inet.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cstdio>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "server/common/host_port.h"
#include "server/common/logging.h"

namespace mantissa {
namespace {

// Reads a PEM certificate (the first of a chain); nullptr if unreadable.
X509* ReadCertificate(const std::string& path) {
  FILE* file = std::fopen(path.c_str(), "r");
  if (file == nullptr) return nullptr;
  X509* cert = PEM_read_X509(file, nullptr, nullptr, nullptr);
  std::fclose(file);
  return cert;
}

EVP_PKEY* ReadKey(const std::string& path) {
  FILE* file = std::fopen(path.c_str(), "r");
  if (file == nullptr) return nullptr;
  EVP_PKEY* key = PEM_read_PrivateKey(file, nullptr, nullptr, nullptr);
  std::fclose(file);
  return key;
}

absl::Status CheckFiles(const TransportSecurity::Options& o) {
  X509* cert = ReadCertificate(o.cert_file);
  if (cert == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls_cert_file: ", o.cert_file, " is not a readable PEM certificate"));
  }
  EVP_PKEY* key = ReadKey(o.key_file);
  if (key == nullptr) {
    X509_free(cert);
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls_key_file: ", o.key_file, " is not a readable, unencrypted PEM private key"));
  }
  const bool match = X509_check_private_key(cert, key) == 1;
  EVP_PKEY_free(key);
  X509_free(cert);
  if (!match) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls_key_file: ", o.key_file, " is not the key of --tls_cert_file ", o.cert_file));
  }
  if (!o.client_ca_file.empty()) {
    X509* ca = ReadCertificate(o.client_ca_file);
    if (ca == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("--tls_client_ca_file: ", o.client_ca_file,
                                                     " is not a readable PEM certificate"));
    }
    X509_free(ca);
  }
  return absl::OkStatus();
}

}  // namespace

bool IsLoopbackHost(absl::string_view host) {
  if (absl::AsciiStrToLower(host) == "localhost") return true;
  const std::string text(host);
  in_addr v4{};
  if (inet_pton(AF_INET, text.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (inet_pton(AF_INET6, text.c_str(), &v6) == 1) return IN6_IS_ADDR_LOOPBACK(&v6);
  return false;
}

absl::StatusOr<std::unique_ptr<TransportSecurity>> TransportSecurity::Create(Options options) {
  if (options.cert_file.empty() != options.key_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls_cert_file, --tls_key_file: give both (TLS) or neither (plaintext)");
  }
  if (options.cert_file.empty() && !options.client_ca_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls_client_ca_file: needs --tls_cert_file and --tls_key_file");
  }
  if (options.refresh_seconds < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls_refresh_seconds: must be >= 1, got ", options.refresh_seconds));
  }
  if (!options.cert_file.empty()) {
    if (absl::Status s = CheckFiles(options); !s.ok()) return s;
  }
  return std::unique_ptr<TransportSecurity>(new TransportSecurity(std::move(options)));
}

std::shared_ptr<grpc::ServerCredentials> TransportSecurity::GrpcCredentials() const {
  if (!tls()) return grpc::InsecureServerCredentials();
  const bool verify_clients = !options_.client_ca_file.empty();
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      options_.key_file, options_.cert_file, options_.client_ca_file,
      static_cast<unsigned int>(options_.refresh_seconds));
  grpc::experimental::TlsServerCredentialsOptions tls(provider);
  tls.watch_identity_key_cert_pairs();
  if (verify_clients) {
    tls.watch_root_certs();
    tls.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  } else {
    tls.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  }
  return grpc::experimental::TlsServerCredentials(tls);
}

absl::Status TransportSecurity::CheckBind(absl::string_view flag, absl::string_view address) const {
  if (tls()) return absl::OkStatus();
  absl::StatusOr<HostPort> parsed = ParseHostPort(flag, address);
  if (!parsed.ok()) return parsed.status();
  if (IsLoopbackHost(parsed->host)) return absl::OkStatus();
  if (options_.allow_insecure) {
    LogWarning(absl::StrCat(flag, "=", address,
                            ": serving PLAINTEXT on a non-loopback address because of "
                            "--allow_insecure; anyone on the network can read and forge calls"));
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(
      absl::StrCat(flag, "=", address,
                   ": a non-loopback address needs TLS (--tls_cert_file and --tls_key_file); "
                   "pass --allow_insecure to serve plaintext anyway"));
}

}  // namespace mantissa
