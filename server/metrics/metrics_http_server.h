#ifndef MANTISSA_SERVER_METRICS_METRICS_HTTP_SERVER_H_
#define MANTISSA_SERVER_METRICS_METRICS_HTTP_SERVER_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "absl/status/statusor.h"
#include "prometheus/registry.h"

namespace httplib {
class Server;
}

namespace mantissa {

// Serves a prometheus-cpp registry as text on GET /metrics with cpp-httplib.
// Not prometheus-cpp's pull Exposer: its civetweb threads get a 100 KiB
// stack, too small for the static TLS of a LibTorch 2.x CUDA process.
class MetricsHttpServer {
 public:
  struct Options {
    std::string address = "127.0.0.1:9464";  // port 0 picks a free port
    std::shared_ptr<prometheus::Registry> registry;
    // Runs before each scrape's collection, on the HTTP thread, to refresh
    // what is read on demand (Metrics::RefreshDeviceMemory). Optional.
    std::function<void()> before_scrape;
    // Both set: HTTPS. The files are read at every handshake, so replaced
    // certificates take effect on the next connection.
    std::string tls_cert_file;
    std::string tls_key_file;
    // Decides each request to /metrics from its Authorization header
    // (nullopt when absent): 200 serves it, 401 or 403 refuse it. Optional.
    std::function<int(const std::optional<std::string>& authorization)> authorize;
  };

  // Binds the address and starts serving on a thread of its own.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Create(Options options);
  ~MetricsHttpServer();  // stops serving and joins the thread

  int port() const { return port_; }

 private:
  MetricsHttpServer() = default;

  // Certificate and key paths, read by the TLS handshake callback.
  std::pair<std::string, std::string> tls_files_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_METRICS_METRICS_HTTP_SERVER_H_
