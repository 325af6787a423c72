#include "server/service/kserve_http_server.h"

#include <httplib.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/socket.h>

#include <chrono>
#include <future>
#include <optional>
#include <regex>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/host_port.h"
#include "server/common/status_macros.h"
#include "server/service/kserve_json.h"
#include "server/service/unary_reactors.h"

namespace mantissa {
namespace {

using TlsFiles = KServeHttpServer::TlsFiles;

// OpenSSL's certificate callback: loads the chain, key and client CAs from
// disk for each handshake, which is what lets them rotate without a restart.
int LoadCertificateForHandshake(SSL* ssl, void* arg) {
  const auto* files = static_cast<const TlsFiles*>(arg);
  if (SSL_use_certificate_chain_file(ssl, files->cert.c_str()) != 1) return 0;
  if (SSL_use_PrivateKey_file(ssl, files->key.c_str(), SSL_FILETYPE_PEM) != 1) return 0;
  if (SSL_check_private_key(ssl) != 1) return 0;
  if (files->client_ca.empty()) return 1;
  X509_STORE* store = X509_STORE_new();
  const bool loaded =
      store != nullptr && X509_STORE_load_locations(store, files->client_ca.c_str(), nullptr) == 1;
  // The handshake holds its own reference to a store it took.
  const bool set = loaded && SSL_set1_verify_cert_store(ssl, store) == 1;
  X509_STORE_free(store);
  return set ? 1 : 0;
}

// The subject CNs of the client's verified certificate (none without one).
std::vector<std::string> PeerCommonNames(const httplib::Request& req) {
  std::vector<std::string> names;
  if (req.ssl == nullptr || SSL_get_verify_result(req.ssl) != X509_V_OK) return names;
  X509* cert = SSL_get1_peer_certificate(req.ssl);
  if (cert == nullptr) return names;
  const X509_NAME* subject = X509_get_subject_name(cert);
  for (int i = X509_NAME_get_index_by_NID(subject, NID_commonName, -1); i >= 0;
       i = X509_NAME_get_index_by_NID(subject, NID_commonName, i)) {
    const ASN1_STRING* cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i));
    names.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(cn)),
                       static_cast<size_t>(ASN1_STRING_length(cn)));
  }
  X509_free(cert);
  return names;
}

// What a handler answers: a status and a body, JSON unless said otherwise.
struct Reply {
  int status = 200;
  std::string body;
  std::optional<uint64_t> json_length;  // a binary tail follows the JSON
};

Reply Error(const absl::Status& status) {
  return {HttpStatusFromStatus(status), ErrorJson(status.message())};
}

// The path's captures: [1] model name, [2] version ("" when absent).
using Captures = std::smatch;
using Handler = std::function<Reply(const httplib::Request&, const Captures&)>;

struct Route {
  const char* method;
  std::regex pattern;
  Permission permission;
  const char* call;  // names the endpoint in permission errors
  Handler handle;
};

// Handlers over the ModelServer; each mirrors an InferenceService method.
class Endpoints {
 public:
  explicit Endpoints(const KServeHttpServer::Options& options)
      : server_(options.server),
        ready_(options.ready),
        authorizer_(options.authorizer != nullptr ? options.authorizer : Authorizer::AllowAll()) {}

  std::vector<Route> Routes();
  void Dispatch(const std::vector<Route>& routes, const httplib::Request& req,
                httplib::Response& res) const;

 private:
  Reply Ready() const {
    const bool ready = ready_ ? ready_() : true;
    return {ready ? 200 : 503, BoolJson("ready", ready)};
  }
  Reply ServerMetadata() const;
  Reply ModelMetadata(const Captures& path) const;
  Reply ModelReady(const Captures& path) const;
  Reply Infer(const httplib::Request& req, const Captures& path) const;
  Reply Statistics(const std::string& name, const std::string& version) const;
  Reply Index(const httplib::Request& req) const;
  Reply LoadOrUnload(const Captures& path, bool load) const;

  ModelServer* const server_;
  const std::function<bool()> ready_;
  const Authorizer* const authorizer_;
};

// The model and version parts of the path.
constexpr char kModel[] = "/v2/models/([^/]+)(?:/versions/([^/]+))?";

std::vector<Route> Endpoints::Routes() {
  auto route = [](const char* method, const std::string& pattern, Permission permission,
                  const char* call, Handler handle) {
    return Route{method, std::regex(pattern), permission, call, std::move(handle)};
  };
  const std::string model = kModel;
  // First match wins: /v2/models/stats before a model named "stats".
  return {
      route("GET", "/v2/health/live", Permission::kProbe, "GET /v2/health/live",
            [](auto&, auto&) {
              return Reply{200, BoolJson("live", true)};
            }),
      route("GET", "/v2/health/ready", Permission::kProbe, "GET /v2/health/ready",
            [this](auto&, auto&) { return Ready(); }),
      route("GET", "/v2", Permission::kReadModels, "GET /v2",
            [this](auto&, auto&) { return ServerMetadata(); }),
      route("GET", "/v2/models/stats", Permission::kReadModels, "GET /v2/models/stats",
            [this](auto&, auto&) { return Statistics("", ""); }),
      route("GET", model, Permission::kReadModels, "GET /v2/models/{model}",
            [this](auto&, const Captures& m) { return ModelMetadata(m); }),
      route("GET", model + "/ready", Permission::kReadModels, "GET /v2/models/{model}/ready",
            [this](auto&, const Captures& m) { return ModelReady(m); }),
      route("POST", model + "/infer", Permission::kInfer, "POST /v2/models/{model}/infer",
            [this](const httplib::Request& req, const Captures& m) { return Infer(req, m); }),
      route("GET", model + "/stats", Permission::kReadModels, "GET /v2/models/{model}/stats",
            [this](auto&, const Captures& m) { return Statistics(m[1].str(), m[2].str()); }),
      route("POST", "/v2/repository/index", Permission::kReadModels, "POST /v2/repository/index",
            [this](const httplib::Request& req, auto&) { return Index(req); }),
      route("POST", "/v2/repository/models/([^/]+)/load", Permission::kAdminister,
            "POST /v2/repository/models/{model}/load",
            [this](auto&, const Captures& m) { return LoadOrUnload(m, true); }),
      route("POST", "/v2/repository/models/([^/]+)/unload", Permission::kAdminister,
            "POST /v2/repository/models/{model}/unload",
            [this](auto&, const Captures& m) { return LoadOrUnload(m, false); }),
  };
}

// Finds the route, checks the caller and runs the handler: 404 for an
// unknown path, 405 (with Allow) for a known path under another method.
void Endpoints::Dispatch(const std::vector<Route>& routes, const httplib::Request& req,
                         httplib::Response& res) const {
  std::vector<std::string> allowed;
  Reply reply;
  const Route* found = nullptr;
  Captures match;
  for (const Route& r : routes) {
    if (!std::regex_match(req.path, match, r.pattern)) continue;
    const bool same = req.method == r.method || (req.method == "HEAD" && r.method[0] == 'G');
    if (same) {
      found = &r;
      break;
    }
    allowed.push_back(r.method);
  }
  if (found == nullptr && allowed.empty()) {
    reply = Error(absl::NotFoundError(absl::StrCat("no endpoint ", req.path)));
  } else if (found == nullptr) {
    reply = {405, ErrorJson(absl::StrCat(req.method, " is not allowed on ", req.path, "; use ",
                                         absl::StrJoin(allowed, ", ")))};
    res.set_header("Allow", absl::StrJoin(allowed, ", "));
  } else {
    std::optional<absl::string_view> authorization;
    const std::string header = req.get_header_value("Authorization");
    if (req.has_header("Authorization")) authorization = header;
    if (absl::Status s =
            authorizer_->Check(authorization, PeerCommonNames(req), found->permission, found->call)
                .status();
        !s.ok()) {
      reply = Error(s);
      if (reply.status == 401) res.set_header("WWW-Authenticate", "Bearer");
    } else {
      reply = found->handle(req, match);
    }
  }
  res.status = reply.status;
  if (reply.json_length) {
    res.set_header(std::string(kInferenceHeaderContentLength), std::to_string(*reply.json_length));
    res.set_content(std::move(reply.body), "application/octet-stream");
  } else if (!reply.body.empty()) {
    res.set_content(std::move(reply.body), "application/json");
  }
}

Reply Endpoints::ServerMetadata() const {
  inference::ServerMetadataResponse metadata;
  metadata.set_name("mantissad");
  metadata.set_version(MANTISSA_VERSION);
  for (const char* e : {"model_repository", "statistics", "binary_tensor_data"}) {
    metadata.add_extensions(e);
  }
  return {200, ServerMetadataJson(metadata)};
}

Reply Endpoints::ModelMetadata(const Captures& path) const {
  auto metadata = server_->ModelMetadata(path[1].str(), path[2].str());
  if (!metadata.ok()) return Error(metadata.status());
  return {200, ModelMetadataJson(*metadata)};
}

// 200 when ready; 503 (as a not-ready model's inference) when not.
Reply Endpoints::ModelReady(const Captures& path) const {
  auto ready = server_->ModelReady(path[1].str(), path[2].str());
  if (!ready.ok()) return Error(ready.status());
  return {*ready ? 200 : 503, BoolJson("ready", *ready, path[1].str())};
}

Reply Endpoints::Infer(const httplib::Request& req, const Captures& path) const {
  RestInferRequest rest{req.body, std::nullopt, path[1].str(), path[2].str()};
  const std::string header(kInferenceHeaderContentLength);
  if (req.has_header(header.c_str())) {
    uint64_t length = 0;
    if (!absl::SimpleAtoi(req.get_header_value(header.c_str()), &length)) {
      return Error(absl::InvalidArgumentError(absl::StrCat(
          header, ": \"", req.get_header_value(header.c_str()), "\" is not a byte count")));
    }
    rest.json_length = length;
  }
  absl::StatusOr<inference::ModelInferRequest> request = ParseInferRequest(rest);
  if (!request.ok()) return Error(request.status());
  inference::ModelInferResponse response;
  // An HTTP worker, not a reactor: blocking until the forward is done is fine.
  std::promise<absl::Status> done;
  server_->Infer(&*request, &response, [&done](absl::Status s) { done.set_value(std::move(s)); });
  if (absl::Status s = done.get_future().get(); !s.ok()) return Error(s);
  absl::StatusOr<RestBody> body = WriteInferResponse(*request, response);
  if (!body.ok()) return Error(body.status());
  return {200, std::move(body->body), body->json_length};
}

Reply Endpoints::Statistics(const std::string& name, const std::string& version) const {
  auto statistics = server_->Statistics(name, version);
  if (!statistics.ok()) return Error(statistics.status());
  return {200, StatisticsJson(*statistics)};
}

Reply Endpoints::Index(const httplib::Request& req) const {
  auto request = ParseRepositoryIndexRequest(req.body);
  if (!request.ok()) return Error(request.status());
  return {200, RepositoryIndexJson(server_->RepositoryIndex(request->ready()))};
}

// Loads take seconds (a cast and its validation): they run on this worker.
Reply Endpoints::LoadOrUnload(const Captures& path, bool load) const {
  const std::string name = path[1].str();
  absl::Status status = RunCatching(load ? "loading the model" : "unloading the model", [&] {
    return load ? server_->Load(name) : server_->Unload(name);
  });
  if (!status.ok()) return Error(status);
  return {200, ""};
}

absl::StatusOr<std::unique_ptr<httplib::Server>> NewHttpServer(
    const KServeHttpServer::Options& options, TlsFiles* tls_files) {
  if (options.tls_cert_file.empty()) return std::make_unique<httplib::Server>();
  *tls_files = {options.tls_cert_file, options.tls_key_file, options.tls_client_ca_file};
  auto server = std::make_unique<httplib::SSLServer>([tls_files](SSL_CTX& ctx) {
    SSL_CTX_set_min_proto_version(&ctx, TLS1_2_VERSION);
    SSL_CTX_set_cert_cb(&ctx, LoadCertificateForHandshake, tls_files);
    // As gRPC with --tls_client_ca_file: no verified client certificate, no
    // connection.
    if (!tls_files->client_ca.empty()) {
      SSL_CTX_set_verify(&ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    }
    return true;
  });
  if (!server->is_valid()) {
    return absl::InternalError("--http_address: cannot set up TLS for the REST endpoints");
  }
  return server;
}

}  // namespace

absl::StatusOr<std::unique_ptr<KServeHttpServer>> KServeHttpServer::Create(Options options) {
  if (options.server == nullptr) {
    return absl::InvalidArgumentError("KServeHttpServer: server is required");
  }
  if (options.threads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("KServeHttpServer: threads must be >= 1, got ", options.threads));
  }
  ASSIGN_OR_RETURN(HostPort address, ParseHostPort("--http_address", options.address));
  std::unique_ptr<KServeHttpServer> self(new KServeHttpServer());
  ASSIGN_OR_RETURN(self->http_, NewHttpServer(options, &self->tls_files_));
  httplib::Server& http = *self->http_;

  auto endpoints = std::make_shared<Endpoints>(options);
  auto routes = std::make_shared<const std::vector<Route>>(endpoints->Routes());
  auto dispatch = [endpoints, routes](const httplib::Request& req, httplib::Response& res) {
    endpoints->Dispatch(*routes, req, res);
  };
  http.Get(".*", dispatch).Post(".*", dispatch).Put(".*", dispatch);
  http.Delete(".*", dispatch).Patch(".*", dispatch).Options(".*", dispatch);
  // Errors cpp-httplib answers itself (a body over the limit, a POST without
  // Content-Length) get a JSON body too.
  const size_t max_body_bytes = options.max_body_bytes;
  http.set_error_handler([max_body_bytes](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return;
    std::string message = absl::StrCat("HTTP ", res.status);
    if (res.status == 413) {
      message = absl::StrCat("the body exceeds the limit of ", max_body_bytes, " bytes");
    } else if (res.status == 400) {
      message = "malformed HTTP request (a POST needs Content-Length or a chunked body)";
    }
    res.set_content(ErrorJson(message), "application/json");
  });
  const int threads = options.threads;
  http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http.set_payload_max_length(options.max_body_bytes);
  // Benchmarks and clients keep connections open across many requests.
  http.set_keep_alive_max_count(100000);
  // cpp-httplib writes headers and body separately: without TCP_NODELAY,
  // Nagle holds the body until the client's delayed ACK (~40 ms per answer).
  http.set_tcp_nodelay(true);
  // Only SO_REUSEADDR: cpp-httplib's default SO_REUSEPORT would let a second
  // daemon bind this port and split its traffic.
  http.set_socket_options([](int sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  self->port_ = address.port == 0
                    ? http.bind_to_any_port(address.host)
                    : (http.bind_to_port(address.host, address.port) ? address.port : -1);
  if (self->port_ <= 0) {
    return absl::UnavailableError(absl::StrCat("--http_address: cannot bind ", options.address));
  }
  self->thread_ = std::thread([&http] { http.listen_after_bind(); });
  // stop() is a no-op until the loop runs; wait so that Stop cannot hang.
  for (int i = 0; i < 5000 && !http.is_running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return self;
}

KServeHttpServer::~KServeHttpServer() { Stop(); }

void KServeHttpServer::Stop() {
  if (stopped_.exchange(true)) return;
  if (http_) http_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace mantissa
