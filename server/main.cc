// mantissad: the Mantissa training and inference daemon. Flags fill
// Options; everything else lives in the libraries under server/.

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "server/common/file_roots.h"
#include "server/common/file_sync.h"
#include "server/common/logging.h"
#include "server/jobs/job_manager.h"
#include "server/jobs/job_store.h"
#include "server/metrics/device_memory.h"
#include "server/metrics/metrics.h"
#include "server/metrics/metrics_http_server.h"
#include "server/runtime/probed_device.h"
#include "server/runtime/torch_runtime.h"
#include "server/service/authorizer.h"
#include "server/service/blocking_executor.h"
#include "server/service/inference_service.h"
#include "server/service/kserve_http_server.h"
#include "server/service/model_service.h"
#include "server/service/training_service.h"
#include "server/service/transport_security.h"
#include "server/serving/model_catalog.h"
#include "server/serving/model_server.h"
#include "server/training/rank_launcher.h"
#include "server/training/rank_process.h"
#include "server/training/spec_limits.h"
#include "server/training/training_job_runner.h"

ABSL_FLAG(std::string, grpc_address, "127.0.0.1:50051",
          "Address of the gRPC services (HOST:PORT; port 0 picks a free port).");
ABSL_FLAG(std::string, metrics_address, "127.0.0.1:9464",
          "Address of the Prometheus /metrics endpoint (HOST:PORT; port 0 picks one).");
ABSL_FLAG(std::string, http_address, "127.0.0.1:8000",
          "Address of the KServe v2 REST endpoints (/v2/...; HOST:PORT; port 0 picks one; "
          "empty turns REST off). HTTPS with --tls_cert_file.");
ABSL_FLAG(std::string, state_dir, "./mantissa-state",
          "Directory of the job database, checkpoints and model repository.");
ABSL_FLAG(std::string, database, "",
          "The job store: sqlite:PATH for one daemon (empty: sqlite:<state_dir>/jobs.db), or a "
          "PostgreSQL URI (postgresql://user@host:port/db?sslmode=..., also ?host=/socket/dir) "
          "shared by a fleet of workers, which then also share --state_dir. The password comes "
          "from the URI, PGPASSWORD or PGPASSFILE.");
ABSL_FLAG(int, lease_seconds, 30,
          "A worker holds each job it runs under a lease it renews every third of this; a job "
          "whose worker stops renewing is resumed by another from its last checkpoint.");
ABSL_FLAG(std::string, worker_id, "",
          "This worker's name in the job store and the `worker` label of its metrics; unique "
          "per process. Empty: <hostname>-<pid>-<8 random hex digits>.");
ABSL_FLAG(std::string, model_repository, "",
          "The model repository (empty: <state_dir>/models); a fleet shares it, and a change "
          "through one worker reaches the others through the job store.");
ABSL_FLAG(std::string, device, "auto", "auto | cpu | cuda | cuda:N.");
ABSL_FLAG(int, max_concurrent_jobs, 1,
          "Training jobs run at once; memory figures are exact only with 1.");
ABSL_FLAG(int, intra_op_threads, 0, "LibTorch intra-op threads; 0 = one per core.");
ABSL_FLAG(int, metrics_max_finished_jobs, 50,
          "Finished jobs whose per-job series stay in /metrics.");
ABSL_FLAG(std::string, port_file, "",
          "After binding, write {\"grpc\": PORT, \"metrics\": PORT, \"http\": PORT} to this file. "
          "It appears "
          "before the model repository has loaded: watch health or ServerReady for that.");
ABSL_FLAG(int, drain_seconds, 0,
          "On SIGTERM/SIGINT, first report NOT_SERVING (health, ServerReady) while still serving "
          "for this long, so that load balancers move traffic away; a second signal ends it.");
ABSL_FLAG(int, calibration_items, 256,
          "Items in the calibration batch that validates each model's cast to its serving "
          "precision; an exported job's batch is at most the 256 items (language models: 4096 "
          "tokens) its export artifact kept.");
ABSL_FLAG(std::string, tls_cert_file, "",
          "PEM certificate chain: serve gRPC, REST and /metrics over TLS (with --tls_key_file). "
          "Replaced files are picked up without a restart.");
ABSL_FLAG(std::string, tls_key_file, "", "PEM private key of --tls_cert_file.");
ABSL_FLAG(std::string, tls_client_ca_file, "",
          "PEM CA certificates: gRPC and REST clients must present a certificate signed by one "
          "(mTLS).");
ABSL_FLAG(int, tls_refresh_seconds, 60,
          "How often gRPC re-reads the TLS files to pick up replaced certificates.");
ABSL_FLAG(bool, allow_insecure, false,
          "Serve plaintext gRPC and /metrics on a non-loopback address (logged as a warning). "
          "Without TLS, only loopback addresses are allowed otherwise.");
ABSL_FLAG(std::string, auth_tokens_file, "",
          "Bearer tokens and roles, one per line: '<sha256 hex of token> <principal> <role>' "
          "or 'cert:<client certificate CN> <principal> <role>'; roles admin, train, serve, "
          "read, metrics. Empty: no authentication.");
ABSL_FLAG(int, max_queued_jobs, 1000, "Queued jobs in all; more are refused.");
ABSL_FLAG(int, max_queued_jobs_per_principal, 100, "Queued jobs per principal; more are refused.");
ABSL_FLAG(std::string, health_address, "",
          "Also serve only grpc.health.v1, in plaintext, on this HOST:PORT (for probes that "
          "cannot speak TLS, such as Kubernetes' gRPC probes). Empty: off.");

ABSL_FLAG(int64_t, max_job_steps, 100'000'000,
          "Optimizer steps one job may run; epochs count as the steps they come to.");
ABSL_FLAG(int64_t, max_model_parameters, 2'000'000'000,
          "Parameters one training job's model may have; checked before it is built.");
ABSL_FLAG(bool, check_free_memory, true,
          "Refuse a job (RESOURCE_EXHAUSTED) whose estimated training memory exceeds the "
          "device's free memory.");
ABSL_FLAG(int64_t, max_spec_name_bytes, 256, "Bytes of a job name and of resume_from.");
ABSL_FLAG(int64_t, max_option_bytes, 4096,
          "Bytes of each model/dataset option key and value in a job spec.");
ABSL_FLAG(int64_t, max_options, 64, "Model or dataset options per job spec.");
ABSL_FLAG(absl::Duration, max_job_duration, absl::Hours(24),
          "Wall-clock limit of a job's run: the default and the cap of JobSpec.max_duration "
          "(0 = none). A job past it ends FAILED.");
ABSL_FLAG(int64_t, keep_checkpoints, 5,
          "The most checkpoints a job may keep on disk (JobSpec.keep_checkpoints, default 1).");
ABSL_FLAG(int, max_watchers_per_job, 16, "WatchJob streams per job; more are refused.");
ABSL_FLAG(int, max_send_message_bytes, 64 << 20,
          "Largest gRPC response; larger ones fail with RESOURCE_EXHAUSTED.");
ABSL_FLAG(double, keep_finished_jobs_days, 30,
          "Ended jobs (and their checkpoints) are deleted this many days after they ended; "
          "checked at start-up and hourly. 0 = keep forever.");
ABSL_FLAG(std::string, data_root, "/usr/share/datasets,<state_dir>/data",
          "Comma-separated folders that dataset options may name files in; anything else "
          "(also through '..' or a symlink) is refused with PERMISSION_DENIED. <state_dir> "
          "stands for --state_dir.");
ABSL_FLAG(std::string, torchscript_root, "",
          "Comma-separated folders of trusted TorchScript modules that RegisterModel and model "
          "torchscript may use. Empty: TorchScript is turned off. A module runs arbitrary code "
          "with the daemon's rights.");
ABSL_FLAG(int, max_versions_per_model, 16,
          "Versions one model may hold in the repository; more exports or registrations are "
          "refused (RESOURCE_EXHAUSTED) until old ones are deleted.");
ABSL_FLAG(int64_t, max_tensor_dim, int64_t{1} << 20,
          "Largest dimension a model may declare for an input or output tensor.");
ABSL_FLAG(int64_t, max_tensor_elements, int64_t{1} << 24,
          "Most elements one item of a declared input or output tensor may hold.");
ABSL_FLAG(int, collective_timeout_seconds, 300,
          "Data-parallel jobs: a collective (gradient all-reduce, rendezvous) that waits longer "
          "for a rank fails the job, naming the rank that fell behind.");
ABSL_FLAG(std::string, advertise_address, "127.0.0.1",
          "Data-parallel jobs: the address this worker's ranks bind their c10d transport to, and "
          "where the other nodes of a job over several nodes reach its rank 0.");
ABSL_FLAG(bool, rank_mode, false,
          "Internal: run one rank of a data-parallel job (started by the daemon itself, with its "
          "task on stdin and its reports on fd 3).");

namespace mantissa {
namespace {

// A comma-separated folder list; "<state_dir>" becomes the state folder.
std::vector<std::string> FolderList(const std::string& flag, const std::string& state_dir) {
  std::vector<std::string> folders;
  for (absl::string_view part : absl::StrSplit(flag, ',', absl::SkipWhitespace())) {
    std::string folder(absl::StripAsciiWhitespace(part));
    absl::StrReplaceAll({{"<state_dir>", state_dir}}, &folder);
    folders.push_back(std::move(folder));
  }
  return folders;
}

absl::Status WritePortFile(const std::string& path, int grpc_port, int metrics_port, int http_port,
                           int health_port) {
  // Write then rename, so a reader never sees half a file.
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << "{\"grpc\": " << grpc_port << ", \"metrics\": " << metrics_port;
    if (http_port > 0) out << ", \"http\": " << http_port;
    if (health_port > 0) out << ", \"health\": " << health_port;
    out << "}\n";
    if (!out.good()) return absl::InternalError(absl::StrCat("--port_file: cannot write ", tmp));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat("--port_file: ", path, ": ", ec.message()));
  return absl::OkStatus();
}

// The services the health checker reports on, beside the server as a whole ("").
constexpr const char* kHealthServices[] = {
    "inference.GRPCInferenceService", "mantissa.v1.TrainingService", "mantissa.v1.ModelService"};

// `probe_health` is the plaintext health listener's, or nullptr.
void SetServing(grpc::HealthCheckServiceInterface* health,
                grpc::HealthCheckServiceInterface* probe_health, bool serving) {
  for (grpc::HealthCheckServiceInterface* h : {health, probe_health}) {
    if (h == nullptr) continue;
    for (const char* service : kHealthServices) h->SetServingStatus(service, serving);
    h->SetServingStatus(serving);
  }
}

// Threads for loads and exports, which block for seconds; the reactors hand
// them over. Two keep one slow load from holding up the rest.
constexpr int kBlockingThreads = 2;

// /metrics answers 401 without a valid token and 403 for a role other than
// metrics or admin; nothing is checked without a tokens file.
std::function<int(const std::optional<std::string>&)> MetricsAuthorization(
    const Authorizer* authorizer) {
  if (!authorizer->enabled()) return nullptr;
  return [authorizer](const std::optional<std::string>& header) {
    std::optional<absl::string_view> value;
    if (header.has_value()) value = *header;
    absl::Status status =
        authorizer->Check(value, {}, Permission::kMetrics, "GET /metrics").status();
    if (status.ok()) return 200;
    return absl::IsPermissionDenied(status) ? 403 : 401;
  };
}

int Fail(const absl::Status& status) {
  LogError(absl::StrCat("mantissad: ", status.message()));
  return 1;
}

// Blocks SIGINT and SIGTERM so that only sigwait() in Run sees them.
sigset_t BlockShutdownSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return signals;
}

// The admission limits (--max_job_steps, ...), checked with the other
// counts and durations the flags give.
absl::StatusOr<SpecLimits> LimitsFromFlags() {
  if (absl::GetFlag(FLAGS_drain_seconds) < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--drain_seconds: must be >= 0, got ", absl::GetFlag(FLAGS_drain_seconds)));
  }
  if (absl::GetFlag(FLAGS_max_tensor_dim) < 1 || absl::GetFlag(FLAGS_max_tensor_elements) < 1) {
    return absl::InvalidArgumentError("--max_tensor_dim and --max_tensor_elements: must be >= 1");
  }
  SpecLimits limits;
  limits.max_job_steps = absl::GetFlag(FLAGS_max_job_steps);
  limits.max_model_parameters = absl::GetFlag(FLAGS_max_model_parameters);
  limits.check_free_memory = absl::GetFlag(FLAGS_check_free_memory);
  limits.max_name_bytes = absl::GetFlag(FLAGS_max_spec_name_bytes);
  limits.max_option_bytes = absl::GetFlag(FLAGS_max_option_bytes);
  limits.max_options = absl::GetFlag(FLAGS_max_options);
  limits.max_job_duration = absl::GetFlag(FLAGS_max_job_duration);
  limits.max_keep_checkpoints = absl::GetFlag(FLAGS_keep_checkpoints);
  if (limits.max_job_steps < 1 || limits.max_model_parameters < 1 || limits.max_name_bytes < 1 ||
      limits.max_option_bytes < 1 || limits.max_options < 0 || limits.max_keep_checkpoints < 1 ||
      limits.max_job_duration < absl::ZeroDuration() ||
      absl::GetFlag(FLAGS_max_watchers_per_job) < 1 ||
      absl::GetFlag(FLAGS_max_send_message_bytes) < 1024 ||
      absl::GetFlag(FLAGS_keep_finished_jobs_days) < 0) {
    return absl::InvalidArgumentError(
        "--max_job_steps, --max_model_parameters, --max_spec_name_bytes, --max_option_bytes, "
        "--keep_checkpoints, --max_watchers_per_job must be >= 1; --max_options, "
        "--max_job_duration, --keep_finished_jobs_days >= 0; --max_send_message_bytes >= 1024");
  }
  return limits;
}

// Atomic writes interrupted by a crash leave *.tmp files under the state
// folder (and beside --port_file); before anything writes, every one is
// stale.
absl::Status SweepStaleTempFiles(const std::string& state_dir, const FileRoots& data_roots,
                                 const FileRoots& torchscript_roots, bool shared) {
  // The roots hold the operator's files (the default --data_root is under
  // --state_dir): never swept.
  std::vector<std::string> operator_folders = data_roots.roots();
  operator_folders.insert(operator_folders.end(), torchscript_roots.roots().begin(),
                          torchscript_roots.roots().end());
  // A fleet's workers share the folder: a fresh *.tmp may be another
  // worker's write in progress.
  absl::StatusOr<int> swept =
      RemoveTempFiles(state_dir, operator_folders, shared ? absl::Hours(1) : absl::ZeroDuration());
  if (!swept.ok()) return swept.status();
  if (const std::string port_file = absl::GetFlag(FLAGS_port_file); !port_file.empty()) {
    std::error_code ec;
    std::filesystem::remove(port_file + ".tmp", ec);
  }
  if (*swept > 0) {
    LogInfo(absl::StrCat("removed ", *swept, " stale *.tmp file(s) under --state_dir"));
  }
  return absl::OkStatus();
}

// The shared model repository's change records, kept in the job store's
// models table (ModelServer depends on ModelCatalog only).
class JobStoreModelCatalog final : public ModelCatalog {
 public:
  explicit JobStoreModelCatalog(JobStore* store) : store_(store) {}
  absl::StatusOr<int64_t> PublishChange(const std::string& name, bool loaded) override {
    return store_->PublishModelChange(name, loaded);
  }
  absl::StatusOr<std::vector<ModelCatalogRecord>> Records() override {
    absl::StatusOr<std::vector<ModelRecord>> records = store_->ModelRecords();
    if (!records.ok()) return records.status();
    std::vector<ModelCatalogRecord> catalog;
    catalog.reserve(records->size());
    for (ModelRecord& r : *records) catalog.push_back({std::move(r.name), r.generation, r.loaded});
    return catalog;
  }

 private:
  JobStore* const store_;  // not owned
};

// `catalog`: the fleet's (null for a lone daemon, whose restart reloads the
// repository as it is on disk).
absl::StatusOr<std::unique_ptr<ModelServer>> CreateModelServer(const std::string& state_dir,
                                                               const ProbedDevice& device,
                                                               Metrics* metrics,
                                                               const FileRoots& torchscript_roots,
                                                               ModelCatalog* catalog) {
  ModelServer::Options model_server_options;
  model_server_options.state_dir = state_dir;
  model_server_options.repository_root = absl::GetFlag(FLAGS_model_repository);
  model_server_options.catalog = catalog;
  model_server_options.device = device;
  model_server_options.metrics = metrics;
  model_server_options.calibration_items = absl::GetFlag(FLAGS_calibration_items);
  model_server_options.torchscript_roots = torchscript_roots;
  model_server_options.max_versions_per_model = absl::GetFlag(FLAGS_max_versions_per_model);
  model_server_options.shape_limits = {.max_dim = absl::GetFlag(FLAGS_max_tensor_dim),
                                       .max_elements = absl::GetFlag(FLAGS_max_tensor_elements)};
  return ModelServer::Create(model_server_options);
}

absl::StatusOr<std::unique_ptr<JobManager>> CreateJobManager(JobStore* store, JobRunner* runner,
                                                             Metrics* metrics,
                                                             const std::string& state_dir,
                                                             const std::string& worker_id) {
  JobManager::Options manager_options;
  manager_options.store = store;
  manager_options.worker_id = worker_id;
  manager_options.lease = absl::Seconds(absl::GetFlag(FLAGS_lease_seconds));
  // SQLite admits one daemon (it locks the file): whatever it finds running
  // was left by its own previous life.
  manager_options.sole_worker = store->kind() == "sqlite";
  manager_options.runner = runner;
  manager_options.metrics = metrics;
  manager_options.max_concurrent_jobs = absl::GetFlag(FLAGS_max_concurrent_jobs);
  manager_options.max_queued_jobs = absl::GetFlag(FLAGS_max_queued_jobs);
  manager_options.max_watchers_per_job = absl::GetFlag(FLAGS_max_watchers_per_job);
  manager_options.jobs_dir = state_dir + "/jobs";
  manager_options.keep_finished_jobs =
      absl::Hours(24) * absl::GetFlag(FLAGS_keep_finished_jobs_days);
  manager_options.max_queued_jobs_per_principal =
      absl::GetFlag(FLAGS_max_queued_jobs_per_principal);
  return JobManager::Create(manager_options);
}

// The gRPC server with the services, and the plaintext health listener
// (--health_address) when asked for.
struct Listeners {
  std::unique_ptr<grpc::Server> server;
  int grpc_port = 0;
  grpc::HealthCheckServiceInterface* health = nullptr;
  // The probe listener: plaintext, no services of ours, only the default
  // health service (and reflection), mirroring the main one's status.
  std::unique_ptr<grpc::Server> probe_server;
  grpc::HealthCheckServiceInterface* probe_health = nullptr;
  int health_port = 0;
};

// Starts both, NOT_SERVING until the repository has loaded: probes see that,
// while training and liveness calls are answered already.
absl::StatusOr<Listeners> StartListeners(const std::vector<grpc::Service*>& services,
                                         TransportSecurity& security) {
  Listeners l;
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // gRPC enables SO_REUSEPORT on Linux; two daemons must not share a port.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxSendMessageSize(absl::GetFlag(FLAGS_max_send_message_bytes));
  builder.AddListeningPort(absl::GetFlag(FLAGS_grpc_address), security.GrpcCredentials(),
                           &l.grpc_port);
  for (grpc::Service* service : services) builder.RegisterService(service);
  l.server = builder.BuildAndStart();
  if (l.server == nullptr || l.grpc_port == 0) {
    return absl::UnavailableError(
        absl::StrCat("--grpc_address: cannot listen on ", absl::GetFlag(FLAGS_grpc_address)));
  }
  l.health = l.server->GetHealthCheckService();
  if (const std::string address = absl::GetFlag(FLAGS_health_address); !address.empty()) {
    grpc::ServerBuilder probe_builder;
    probe_builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    probe_builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &l.health_port);
    l.probe_server = probe_builder.BuildAndStart();
    if (l.probe_server == nullptr || l.health_port == 0) {
      return absl::UnavailableError(absl::StrCat("--health_address: cannot listen on ", address));
    }
    l.probe_health = l.probe_server->GetHealthCheckService();
  }
  SetServing(l.health, l.probe_health, false);
  return l;
}

// Waits for SIGINT or SIGTERM, then drains: reports NOT_SERVING while still
// answering everything, so that load balancers and readiness probes move
// traffic away first (a second signal ends the drain).
void WaitForShutdown(sigset_t& signals, std::atomic<bool>& draining, const Listeners& listeners) {
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  LogInfo(absl::StrCat("received ", strsignal(signal_number), "; shutting down"));
  draining = true;
  SetServing(listeners.health, listeners.probe_health, false);
  if (const int drain_seconds = absl::GetFlag(FLAGS_drain_seconds); drain_seconds > 0) {
    LogInfo(absl::StrCat("draining for ", drain_seconds, " s (a second signal skips it)"));
    const timespec timeout{drain_seconds, 0};
    sigtimedwait(&signals, nullptr, &timeout);
  }
}

// How data-parallel jobs start their ranks: this binary again, with this
// process's flags and --rank_mode.
absl::StatusOr<RankLauncher::Options> RankLauncherOptions(const std::vector<std::string>& args,
                                                          int threads) {
  if (absl::GetFlag(FLAGS_collective_timeout_seconds) < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--collective_timeout_seconds: must be >= 1, got ",
                     absl::GetFlag(FLAGS_collective_timeout_seconds)));
  }
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot find this binary (/proc/self/exe): ", ec.message()));
  }
  RankLauncher::Options options;
  options.executable = self.string();
  options.arguments = args;
  options.collective_timeout = absl::Seconds(absl::GetFlag(FLAGS_collective_timeout_seconds));
  options.address = absl::GetFlag(FLAGS_advertise_address);
  options.intra_op_threads = threads;
  return options;
}

// The runner's options from the flags, as the daemon and its rank
// processes both build them.
TrainingJobRunner::Options RunnerOptions(const ProbedDevice& device, const SpecLimits& limits,
                                         const std::string& state_dir, const FileRoots& data_roots,
                                         const FileRoots& torchscript_roots) {
  return TrainingJobRunner::Options{.device = device,
                                    .max_concurrent_jobs = absl::GetFlag(FLAGS_max_concurrent_jobs),
                                    .state_dir = state_dir,
                                    .limits = limits,
                                    .data_roots = data_roots,
                                    .torchscript_roots = torchscript_roots};
}

// The job runner on the probed device; a CUDA device's memory joins the
// metrics.
absl::StatusOr<std::unique_ptr<TrainingJobRunner>> CreateRunner(
    const ProbedDevice& device, const SpecLimits& limits, const std::string& state_dir,
    const FileRoots& data_roots, const FileRoots& torchscript_roots, Metrics& metrics,
    RankLauncher::Options ranks) {
  TrainingJobRunner::Options options =
      RunnerOptions(device, limits, state_dir, data_roots, torchscript_roots);
  options.ranks = std::move(ranks);
  auto runner = TrainingJobRunner::Create(std::move(options));
  if (!runner.ok()) return runner.status();
  if ((*runner)->device() != "cpu") {
    metrics.SetDeviceMemoryReader((*runner)->device(), CudaMemoryReader((*runner)->device()));
  }
  return runner;
}

// Stops the jobs (their watchers get the final event), then closes the
// server, giving open calls a moment. Shutdown returns once every call has
// finished; the inference threads keep running until then, so the requests
// they hold complete. Then stops the inference threads and the executor.
void ShutDown(Listeners& listeners, KServeHttpServer* http, JobManager& manager,
              ModelServer& model_server, BlockingExecutor& executor) {
  listeners.health->Shutdown();
  if (listeners.probe_health != nullptr) listeners.probe_health->Shutdown();
  manager.Shutdown();
  listeners.server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(3));
  // REST requests finish on the inference threads too: stopped (and their
  // answers sent) before those go.
  if (http != nullptr) http->Stop();
  model_server.Shutdown();
  executor.Shutdown();
  listeners.server->Wait();
  if (listeners.probe_server != nullptr) {
    listeners.probe_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    listeners.probe_server->Wait();
  }
}

// TLS as the flags set it, checked against the addresses it will serve.
absl::StatusOr<std::unique_ptr<TransportSecurity>> CreateTransportSecurity() {
  auto security =
      TransportSecurity::Create({.cert_file = absl::GetFlag(FLAGS_tls_cert_file),
                                 .key_file = absl::GetFlag(FLAGS_tls_key_file),
                                 .client_ca_file = absl::GetFlag(FLAGS_tls_client_ca_file),
                                 .refresh_seconds = absl::GetFlag(FLAGS_tls_refresh_seconds),
                                 .allow_insecure = absl::GetFlag(FLAGS_allow_insecure)});
  if (!security.ok()) return security.status();
  for (auto [flag, address] : {std::pair{"--grpc_address", absl::GetFlag(FLAGS_grpc_address)},
                               std::pair{"--metrics_address", absl::GetFlag(FLAGS_metrics_address)},
                               std::pair{"--http_address", absl::GetFlag(FLAGS_http_address)}}) {
    if (address.empty()) continue;  // only --http_address may be empty (REST off)
    if (absl::Status s = (*security)->CheckBind(flag, address); !s.ok()) return s;
  }
  return security;
}

// /metrics, refreshing device memory before each scrape.
absl::StatusOr<std::unique_ptr<MetricsHttpServer>> StartMetricsServer(
    Metrics& metrics, const Authorizer* authorizer) {
  return MetricsHttpServer::Create({.address = absl::GetFlag(FLAGS_metrics_address),
                                    .registry = metrics.registry(),
                                    .before_scrape = [&metrics] { metrics.RefreshDeviceMemory(); },
                                    .tls_cert_file = absl::GetFlag(FLAGS_tls_cert_file),
                                    .tls_key_file = absl::GetFlag(FLAGS_tls_key_file),
                                    .authorize = MetricsAuthorization(authorizer)});
}

// The KServe v2 REST endpoints over the same ModelServer, readiness and
// authorization as gRPC; nullptr when --http_address is empty.
absl::StatusOr<std::unique_ptr<KServeHttpServer>> StartHttpServer(ModelServer* model_server,
                                                                  std::function<bool()> ready,
                                                                  const Authorizer* authorizer) {
  if (absl::GetFlag(FLAGS_http_address).empty()) return nullptr;
  return KServeHttpServer::Create(
      {.address = absl::GetFlag(FLAGS_http_address),
       .server = model_server,
       .ready = std::move(ready),
       .authorizer = authorizer,
       .tls_cert_file = absl::GetFlag(FLAGS_tls_cert_file),
       .tls_key_file = absl::GetFlag(FLAGS_tls_key_file),
       .tls_client_ca_file = absl::GetFlag(FLAGS_tls_client_ca_file),
       // Enough for 16 and more keep-alive clients, each holding a worker.
       .threads = 32,
       // As gRPC's receive limit, which the daemon leaves at its default.
       .max_body_bytes = GRPC_DEFAULT_MAX_RECV_MESSAGE_LENGTH});
}

// Writes --port_file and logs where the daemon listens.
absl::Status Announce(const Listeners& listeners, int metrics_port, int http_port,
                      const std::string& device, int threads, const std::string& state_dir,
                      const std::string& worker_id) {
  if (const std::string port_file = absl::GetFlag(FLAGS_port_file); !port_file.empty()) {
    if (absl::Status s = WritePortFile(port_file, listeners.grpc_port, metrics_port, http_port,
                                       listeners.health_port);
        !s.ok()) {
      return s;
    }
  }
  LogInfo(absl::StrCat("mantissad ", MANTISSA_VERSION, " listening for gRPC on port ",
                       listeners.grpc_port, ", metrics on port ", metrics_port,
                       http_port > 0 ? absl::StrCat(", KServe v2 REST on port ", http_port) : "",
                       "; device ", device, ", LibTorch ", LibTorchVersion(), ", ", threads,
                       " intra-op threads (BLAS: ", BlasThreading(), "), state in ", state_dir));
  const std::string database = absl::GetFlag(FLAGS_database);
  LogInfo(
      absl::StrCat("worker ", worker_id, ", job store ",
                   database.empty() ? "sqlite:" + state_dir + "/jobs.db" : RedactDatabase(database),
                   ", lease ", absl::GetFlag(FLAGS_lease_seconds), " s"));
  return absl::OkStatus();
}

// --worker_id, or a name unique to this process: the host (a pod's name),
// the pid, and 32 random bits, as a container restarted in its pod reuses
// both (and would otherwise renew its predecessor's leases).
std::string WorkerId() {
  if (std::string id = absl::GetFlag(FLAGS_worker_id); !id.empty()) return id;
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0') std::strcpy(host, "mantissad");
  absl::BitGen gen;
  return absl::StrFormat("%s-%d-%08x", host, getpid(), absl::Uniform<uint32_t>(gen));
}

// --database (empty: SQLite under --state_dir), with --lease_seconds checked.
absl::StatusOr<std::unique_ptr<JobStore>> OpenStore(const std::filesystem::path& state_dir) {
  if (absl::GetFlag(FLAGS_lease_seconds) < 1) {
    return absl::InvalidArgumentError(absl::StrCat("--lease_seconds: must be at least 1, got ",
                                                   absl::GetFlag(FLAGS_lease_seconds)));
  }
  return OpenJobStore({.database = absl::GetFlag(FLAGS_database), .state_dir = state_dir.string()});
}

// The store's change notifications go to whoever is subscribed; an empty
// payload (after a reconnection, when some may have been missed) concerns
// everyone. They arrive on the store's thread: a subscription ends before
// its object is destroyed, on every way out of Run, and never mid-call.
class StoreNotifications {
 public:
  template <typename T>
  class Subscription {
   public:
    Subscription(StoreNotifications& n, T*& slot, T* target) : n_(n), slot_(slot) {
      std::lock_guard<std::mutex> lock(n_.mu_);
      slot_ = target;
    }
    ~Subscription() {
      std::lock_guard<std::mutex> lock(n_.mu_);
      slot_ = nullptr;
    }

   private:
    StoreNotifications& n_;
    T*& slot_;
  };

  Subscription<JobManager> Subscribe(JobManager* m) { return {*this, manager_, m}; }
  Subscription<ModelServer> Subscribe(ModelServer* s) { return {*this, models_, s}; }

  void operator()(StoreChannel channel, const std::string& payload) {
    std::lock_guard<std::mutex> lock(mu_);
    if (manager_ != nullptr && (channel == StoreChannel::kJobs || payload.empty())) {
      manager_->StoreChanged(payload);
    }
    if (models_ != nullptr && (channel == StoreChannel::kModels || payload.empty())) {
      models_->CatalogChanged();
    }
  }

 private:
  std::mutex mu_;
  JobManager* manager_ = nullptr;
  ModelServer* models_ = nullptr;
};

absl::Status CreateStateDir(const std::filesystem::path& state_dir) {
  std::error_code ec;
  std::filesystem::create_directories(state_dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("--state_dir: cannot create ", state_dir.string(), ": ", ec.message()));
  }
  return absl::OkStatus();
}

// --torchscript_root, with a warning when it turns TorchScript on.
FileRoots TorchScriptRoots(const std::string& absolute_state_dir) {
  FileRoots roots(FolderList(absl::GetFlag(FLAGS_torchscript_root), absolute_state_dir),
                  "mantissad --torchscript_root");
  if (!roots.empty()) {
    LogWarning(absl::StrCat("TorchScript is on (--torchscript_root): modules under ",
                            absl::StrJoin(roots.roots(), ", "),
                            " run arbitrary code with this daemon's rights"));
  }
  return roots;
}

// --rank_mode: one rank of a data-parallel job, before anything opens a
// store, a port or a metrics endpoint. Its intra-op threads come with its task.
int RunRank() {
  ConfigureHostAllocator();
  absl::StatusOr<SpecLimits> limits = LimitsFromFlags();
  if (!limits.ok()) return Fail(limits.status());
  const std::string absolute_state_dir =
      std::filesystem::absolute(absl::GetFlag(FLAGS_state_dir)).lexically_normal().string();
  const FileRoots data_roots(FolderList(absl::GetFlag(FLAGS_data_root), absolute_state_dir),
                             "mantissad --data_root");
  const FileRoots torchscript_roots(
      FolderList(absl::GetFlag(FLAGS_torchscript_root), absolute_state_dir),
      "mantissad --torchscript_root");
  // One GPU per rank: LOCAL_RANK's (RankEnvironment checks it again).
  int local_rank = 0;
  const char* local = std::getenv("LOCAL_RANK");
  if (local != nullptr && !absl::SimpleAtoi(local, &local_rank)) local_rank = 0;
  absl::StatusOr<ProbedDevice> device = ProbeRankDevice(absl::GetFlag(FLAGS_device), local_rank);
  if (!device.ok()) return Fail(device.status());
  return RunRankProcess(
      RunnerOptions(*device, *limits, absolute_state_dir, data_roots, torchscript_roots));
}

int Run(const std::vector<std::string>& args) {
  // Before any thread starts, so every thread inherits the mask.
  sigset_t signals = BlockShutdownSignals();

  ConfigureHostAllocator();
  const int threads = ConfigureIntraOpThreads(absl::GetFlag(FLAGS_intra_op_threads));

  absl::StatusOr<SpecLimits> limits = LimitsFromFlags();
  if (!limits.ok()) return Fail(limits.status());
  auto ranks = RankLauncherOptions(args, threads);
  if (!ranks.ok()) return Fail(ranks.status());
  const std::filesystem::path state_dir = absl::GetFlag(FLAGS_state_dir);
  if (absl::Status s = CreateStateDir(state_dir); !s.ok()) return Fail(s);

  auto security = CreateTransportSecurity();
  if (!security.ok()) return Fail(security.status());
  auto authorizer = Authorizer::Create({.tokens_file = absl::GetFlag(FLAGS_auth_tokens_file)});
  if (!authorizer.ok()) return Fail(authorizer.status());

  // Declared before the store, so that it outlives the store's thread.
  StoreNotifications notified;
  auto store = OpenStore(state_dir);
  if (!store.ok()) return Fail(store.status());
  const std::string worker_id = WorkerId();
  (*store)->SetChangeListener(std::ref(notified));
  JobStoreModelCatalog catalog(store->get());

  Metrics metrics(
      {.max_finished_jobs = absl::GetFlag(FLAGS_metrics_max_finished_jobs), .worker = worker_id});
  // Host memory always; a CUDA runner adds its GPUs with their own readers.
  metrics.SetDeviceMemoryReader("cpu", ReadProcessMemory);

  const std::string absolute_state_dir =
      std::filesystem::absolute(state_dir).lexically_normal().string();
  const FileRoots data_roots(FolderList(absl::GetFlag(FLAGS_data_root), absolute_state_dir),
                             "mantissad --data_root");
  const FileRoots torchscript_roots = TorchScriptRoots(absolute_state_dir);
  if (absl::Status swept = SweepStaleTempFiles(state_dir.string(), data_roots, torchscript_roots,
                                               (*store)->kind() != "sqlite");
      !swept.ok()) {
    return Fail(swept);
  }
  // Training and serving share the device: resolved and probed once.
  absl::StatusOr<ProbedDevice> device = ProbeDevice(absl::GetFlag(FLAGS_device));
  if (!device.ok()) return Fail(device.status());
  auto runner = CreateRunner(*device, *limits, absolute_state_dir, data_roots, torchscript_roots,
                             metrics, *std::move(ranks));

  if (!runner.ok()) return Fail(runner.status());
  auto model_server = CreateModelServer(absolute_state_dir, *device, &metrics, torchscript_roots,
                                        (*store)->kind() == "sqlite" ? nullptr : &catalog);
  if (!model_server.ok()) return Fail(model_server.status());
  auto models_subscription = notified.Subscribe(model_server->get());

  auto manager =
      CreateJobManager(store->get(), runner->get(), &metrics, absolute_state_dir, worker_id);
  if (!manager.ok()) return Fail(manager.status());
  auto manager_subscription = notified.Subscribe(manager->get());

  // ServerReady: the repository has loaded and no shutdown signal has come.
  std::atomic<bool> draining{false};
  BlockingExecutor executor({.threads = kBlockingThreads});
  TrainingService training_service(manager->get(), authorizer->get());
  InferenceService inference_service(
      model_server->get(), &executor, [&] { return (*model_server)->ready() && !draining.load(); },
      authorizer->get());
  ModelService model_service(manager->get(), model_server->get(), &executor, authorizer->get());
  absl::StatusOr<Listeners> listeners =
      StartListeners({&training_service, &inference_service, &model_service}, **security);
  if (!listeners.ok()) return Fail(listeners.status());
  auto http_server = StartHttpServer(
      model_server->get(), [&] { return (*model_server)->ready() && !draining.load(); },
      authorizer->get());
  if (!http_server.ok()) return Fail(http_server.status());

  auto metrics_server = StartMetricsServer(metrics, authorizer->get());
  if (!metrics_server.ok()) return Fail(metrics_server.status());

  if (absl::Status s = Announce(*listeners, (*metrics_server)->port(),
                                *http_server != nullptr ? (*http_server)->port() : 0,
                                (*runner)->device(), threads, state_dir.string(), worker_id);
      !s.ok()) {
    return Fail(s);
  }

  // A signal during the load is seen once it ends: the load is not interruptible.
  (*model_server)->LoadRepository();
  SetServing(listeners->health, listeners->probe_health, true);
  LogInfo("model repository loaded; serving");

  WaitForShutdown(signals, draining, *listeners);

  ShutDown(*listeners, http_server->get(), **manager, **model_server, executor);
  // Nothing uses the store now: closing it stops its notifications first.
  store->reset();
  metrics_server->reset();
  LogInfo("mantissad stopped");
  return 0;
}

}  // namespace
}  // namespace mantissa

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "mantissad: trains models over gRPC under Lightning Fabric's precision modes, and serves\n"
      "them in true half precision over the Open Inference Protocol (KServe v2 gRPC and REST).\n"
      "Usage: mantissad [--grpc_address=HOST:PORT] [--http_address=HOST:PORT] "
      "[--metrics_address=HOST:PORT] "
      "[--state_dir=DIR] [--device=auto|cpu|cuda|cuda:N] [--max_concurrent_jobs=N] "
      "[--port_file=PATH] [--drain_seconds=N] [--calibration_items=N]\n"
      "       [--tls_cert_file=PEM --tls_key_file=PEM [--tls_client_ca_file=PEM]] "
      "[--auth_tokens_file=PATH] [--health_address=HOST:PORT] [--allow_insecure]");
  absl::ParseCommandLine(argc, argv);
  if (absl::GetFlag(FLAGS_rank_mode)) return mantissa::RunRank();
  // The flags as given: rank processes get the same (and --rank_mode).
  return mantissa::Run(std::vector<std::string>(argv + 1, argv + argc));
}
