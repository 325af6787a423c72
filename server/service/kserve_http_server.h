#ifndef MANTISSA_SERVER_SERVICE_KSERVE_HTTP_SERVER_H_
#define MANTISSA_SERVER_SERVICE_KSERVE_HTTP_SERVER_H_

#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "server/service/authorizer.h"
#include "server/serving/model_server.h"

namespace httplib {
class Server;
}

namespace mantissa {

// The Open Inference Protocol over HTTP/REST (KServe v2, with Triton's
// binary tensor, repository and statistics extensions), on cpp-httplib.
// Bodies are converted to the gRPC messages (kserve_json.h) and go to the
// same ModelServer calls as inference.GRPCInferenceService, so limits,
// validation, status codes and metrics are the gRPC ones. Each request runs
// on one of `threads` HTTP workers, which waits for its inference: a
// keep-alive client holds one worker while connected.
class KServeHttpServer {
 public:
  struct Options {
    std::string address = "127.0.0.1:8000";  // port 0 picks a free port
    ModelServer* server = nullptr;           // required; outlives this
    // GET /v2/health/ready, as InferenceService's ServerReady.
    std::function<bool()> ready;
    // Checks every request's Authorization header (nullptr: allow all).
    const Authorizer* authorizer = nullptr;
    // Both set: HTTPS. The files are read at every handshake, so replaced
    // certificates take effect on the next connection.
    std::string tls_cert_file;
    std::string tls_key_file;
    // With TLS: clients must present a certificate signed by one of these
    // CAs (read at every handshake), as gRPC's mTLS; its CN can name the
    // caller (cert: lines of the tokens file).
    std::string tls_client_ca_file;
    int threads = 32;
    // Larger bodies are refused with 413 (as gRPC's receive limit).
    size_t max_body_bytes = 4 << 20;
  };

  // Binds the address and starts serving on threads of its own.
  static absl::StatusOr<std::unique_ptr<KServeHttpServer>> Create(Options options);
  ~KServeHttpServer();  // Stop()

  int port() const { return port_; }
  // Stops accepting, lets the requests being served finish and joins the
  // threads. Idempotent.
  void Stop();

  // Certificate, key and client CA paths, read by the TLS handshake callback.
  struct TlsFiles {
    std::string cert;
    std::string key;
    std::string client_ca;  // "" = no client certificate asked for
  };

 private:
  KServeHttpServer() = default;

  TlsFiles tls_files_;
  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
  std::atomic<bool> stopped_{false};
  int port_ = 0;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_SERVICE_KSERVE_HTTP_SERVER_H_
