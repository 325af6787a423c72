#include "server/metrics/metrics_http_server.h"

#include <httplib.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "prometheus/text_serializer.h"
#include "server/common/host_port.h"
#include "server/common/status_macros.h"

namespace mantissa {
namespace {

// OpenSSL's certificate callback: loads the chain and key from disk for each
// handshake, which is what lets certificates rotate without a restart.
int LoadCertificateForHandshake(SSL* ssl, void* arg) {
  const auto* files = static_cast<const std::pair<std::string, std::string>*>(arg);
  if (SSL_use_certificate_chain_file(ssl, files->first.c_str()) != 1) return 0;
  if (SSL_use_PrivateKey_file(ssl, files->second.c_str(), SSL_FILETYPE_PEM) != 1) return 0;
  return SSL_check_private_key(ssl) == 1 ? 1 : 0;
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Create(Options options) {
  if (options.registry == nullptr) {
    return absl::InvalidArgumentError("MetricsHttpServer: registry is required");
  }
  ASSIGN_OR_RETURN(HostPort address, ParseHostPort("--metrics_address", options.address));

  std::unique_ptr<MetricsHttpServer> self(new MetricsHttpServer());
  if (!options.tls_cert_file.empty()) {
    self->tls_files_ = {options.tls_cert_file, options.tls_key_file};
    auto* files = &self->tls_files_;
    auto server = std::make_unique<httplib::SSLServer>([files](SSL_CTX& ctx) {
      SSL_CTX_set_min_proto_version(&ctx, TLS1_2_VERSION);
      SSL_CTX_set_cert_cb(&ctx, LoadCertificateForHandshake, files);
      return true;
    });
    if (!server->is_valid()) {
      return absl::InternalError("--metrics_address: cannot set up TLS for /metrics");
    }
    self->server_ = std::move(server);
  } else {
    self->server_ = std::make_unique<httplib::Server>();
  }
  std::shared_ptr<prometheus::Registry> registry = options.registry;
  std::function<void()> before_scrape = std::move(options.before_scrape);
  auto authorize = std::move(options.authorize);
  self->server_->Get("/metrics", [registry, before_scrape, authorize](const httplib::Request& req,
                                                                      httplib::Response& res) {
    if (authorize) {
      std::optional<std::string> header;
      if (req.has_header("Authorization")) {
        header = req.get_header_value("Authorization");
      }
      if (const int code = authorize(header); code != 200) {
        res.status = code;
        if (code == 401) res.set_header("WWW-Authenticate", "Bearer");
        res.set_content(code == 401 ? "a bearer token is required\n"
                                    : "this token's role may not read /metrics\n",
                        "text/plain");
        return;
      }
    }
    if (before_scrape) before_scrape();
    prometheus::TextSerializer serializer;
    res.set_content(serializer.Serialize(registry->Collect()),
                    "text/plain; version=0.0.4; charset=utf-8");
  });
  self->server_->Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("mantissad: metrics at /metrics\n", "text/plain");
  });

  // cpp-httplib sets SO_REUSEPORT by default, which would let a second
  // daemon bind a port a live one serves and split its scrapes. Only
  // SO_REUSEADDR: fast restarts, no sharing.
  self->server_->set_socket_options([](int sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  if (address.port == 0) {
    self->port_ = self->server_->bind_to_any_port(address.host);
  } else if (self->server_->bind_to_port(address.host, address.port)) {
    self->port_ = address.port;
  } else {
    self->port_ = -1;
  }
  if (self->port_ <= 0) {
    return absl::UnavailableError(absl::StrCat("--metrics_address: cannot bind ", options.address));
  }
  httplib::Server* server = self->server_.get();
  self->thread_ = std::thread([server] { server->listen_after_bind(); });
  // stop() is a no-op until the loop runs; wait so the destructor can't hang.
  for (int i = 0; i < 5000 && !server->is_running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return self;
}

MetricsHttpServer::~MetricsHttpServer() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace mantissa
