// mantissad: the Mantissa training and inference daemon. Flags fill
// Options; everything else lives in the libraries under server/.

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/common/logging.h"
#include "server/jobs/job_manager.h"
#include "server/jobs/job_store.h"
#include "server/metrics/device_memory.h"
#include "server/metrics/metrics.h"
#include "server/metrics/metrics_http_server.h"
#include "server/service/blocking_executor.h"
#include "server/service/inference_service.h"
#include "server/service/model_service.h"
#include "server/service/training_service.h"
#include "server/serving/model_server.h"
#include "server/training/torch_runtime.h"
#include "server/training/training_job_runner.h"

ABSL_FLAG(std::string, grpc_address, "127.0.0.1:50051",
          "Address of the gRPC services (HOST:PORT; port 0 picks a free port).");
ABSL_FLAG(std::string, metrics_address, "127.0.0.1:9464",
          "Address of the Prometheus /metrics endpoint (HOST:PORT; port 0 picks one).");
ABSL_FLAG(std::string, state_dir, "./mantissa-state",
          "Directory of the job database, checkpoints and model repository.");
ABSL_FLAG(std::string, device, "auto", "auto | cpu | cuda | cuda:N.");
ABSL_FLAG(int, max_concurrent_jobs, 1,
          "Training jobs run at once; memory figures are exact only with 1.");
ABSL_FLAG(int, intra_op_threads, 0, "LibTorch intra-op threads; 0 = one per core.");
ABSL_FLAG(int, metrics_max_finished_jobs, 50,
          "Finished jobs whose per-job series stay in /metrics.");
ABSL_FLAG(std::string, port_file, "",
          "After binding, write {\"grpc\": PORT, \"metrics\": PORT} to this file. It appears "
          "before the model repository has loaded: watch health or ServerReady for that.");
ABSL_FLAG(int, drain_seconds, 0,
          "On SIGTERM/SIGINT, first report NOT_SERVING (health, ServerReady) while still serving "
          "for this long, so that load balancers move traffic away; a second signal ends it.");
ABSL_FLAG(int, calibration_items, 256,
          "Items in the calibration batch that validates each model's cast to its serving "
          "precision.");

namespace mantissa {
namespace {

absl::Status WritePortFile(const std::string& path, int grpc_port, int metrics_port) {
  // Write then rename, so a reader never sees half a file.
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << "{\"grpc\": " << grpc_port << ", \"metrics\": " << metrics_port << "}\n";
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

void SetServing(grpc::HealthCheckServiceInterface* health, bool serving) {
  for (const char* service : kHealthServices) health->SetServingStatus(service, serving);
  health->SetServingStatus(serving);
}

// Threads for loads and exports, which block for seconds; the reactors hand
// them over. Two keep one slow load from holding up the rest.
constexpr int kBlockingThreads = 2;

int Fail(const absl::Status& status) {
  LogError(absl::StrCat("mantissad: ", status.message()));
  return 1;
}

int Run() {
  // Block the shutdown signals before any thread starts, so every thread
  // inherits the mask and only sigwait() below sees them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  ConfigureHostAllocator();
  const int threads = ConfigureIntraOpThreads(absl::GetFlag(FLAGS_intra_op_threads));

  if (absl::GetFlag(FLAGS_drain_seconds) < 0) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--drain_seconds: must be >= 0, got ", absl::GetFlag(FLAGS_drain_seconds))));
  }
  const std::filesystem::path state_dir = absl::GetFlag(FLAGS_state_dir);
  std::error_code ec;
  std::filesystem::create_directories(state_dir, ec);
  if (ec) {
    return Fail(absl::FailedPreconditionError(
        absl::StrCat("--state_dir: cannot create ", state_dir.string(), ": ", ec.message())));
  }

  auto store = JobStore::Create({.path = (state_dir / "jobs.db").string()});
  if (!store.ok()) return Fail(store.status());

  Metrics metrics({.max_finished_jobs = absl::GetFlag(FLAGS_metrics_max_finished_jobs)});
  // Host memory always; a CUDA runner adds its GPUs with their own readers.
  metrics.SetDeviceMemoryReader("cpu", ReadProcessMemory);

  const std::string absolute_state_dir =
      std::filesystem::absolute(state_dir).lexically_normal().string();
  auto runner =
      TrainingJobRunner::Create({.device = absl::GetFlag(FLAGS_device),
                                 .max_concurrent_jobs = absl::GetFlag(FLAGS_max_concurrent_jobs),
                                 .state_dir = absolute_state_dir});
  if (!runner.ok()) return Fail(runner.status());
  if ((*runner)->device() != "cpu") {
    metrics.SetDeviceMemoryReader((*runner)->device(), CudaMemoryReader((*runner)->device()));
  }

  ModelServer::Options model_server_options;
  model_server_options.state_dir = absolute_state_dir;
  model_server_options.device = absl::GetFlag(FLAGS_device);
  model_server_options.metrics = &metrics;
  model_server_options.calibration_items = absl::GetFlag(FLAGS_calibration_items);
  auto model_server = ModelServer::Create(model_server_options);
  if (!model_server.ok()) return Fail(model_server.status());

  JobManager::Options manager_options;
  manager_options.store = store->get();
  manager_options.runner = runner->get();
  manager_options.metrics = &metrics;
  manager_options.max_concurrent_jobs = absl::GetFlag(FLAGS_max_concurrent_jobs);
  auto manager = JobManager::Create(manager_options);
  if (!manager.ok()) return Fail(manager.status());

  // ServerReady: the repository has loaded and no shutdown signal has come.
  std::atomic<bool> draining{false};
  BlockingExecutor executor({.threads = kBlockingThreads});
  TrainingService training_service(manager->get());
  InferenceService inference_service(model_server->get(), &executor,
                                     [&] { return (*model_server)->ready() && !draining.load(); });
  ModelService model_service(manager->get(), model_server->get(), &executor);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int grpc_port = 0;
  // gRPC enables SO_REUSEPORT on Linux; two daemons must not share a port.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(absl::GetFlag(FLAGS_grpc_address), grpc::InsecureServerCredentials(),
                           &grpc_port);
  builder.RegisterService(&training_service);
  builder.RegisterService(&inference_service);
  builder.RegisterService(&model_service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || grpc_port == 0) {
    return Fail(absl::UnavailableError(
        absl::StrCat("--grpc_address: cannot listen on ", absl::GetFlag(FLAGS_grpc_address))));
  }
  // Not ready until the repository has loaded: probes see NOT_SERVING, while
  // training and liveness calls are answered already.
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  SetServing(health, false);

  auto metrics_server =
      MetricsHttpServer::Create({.address = absl::GetFlag(FLAGS_metrics_address),
                                 .registry = metrics.registry(),
                                 .before_scrape = [&metrics] { metrics.RefreshDeviceMemory(); }});
  if (!metrics_server.ok()) return Fail(metrics_server.status());

  if (const std::string port_file = absl::GetFlag(FLAGS_port_file); !port_file.empty()) {
    if (absl::Status s = WritePortFile(port_file, grpc_port, (*metrics_server)->port()); !s.ok()) {
      return Fail(s);
    }
  }
  LogInfo(absl::StrCat("mantissad ", MANTISSA_VERSION, " listening for gRPC on port ", grpc_port,
                       ", metrics on port ", (*metrics_server)->port(), "; device ",
                       (*runner)->device(), ", LibTorch ", LibTorchVersion(), ", ", threads,
                       " intra-op threads, state in ", state_dir.string()));

  // A signal during the load is seen once it ends: the load is not interruptible.
  (*model_server)->LoadRepository();
  SetServing(health, true);
  LogInfo("model repository loaded; serving");

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  LogInfo(absl::StrCat("received ", strsignal(signal_number), "; shutting down"));

  // Drain: report NOT_SERVING while still answering everything, so that load
  // balancers and readiness probes move traffic away first.
  draining = true;
  SetServing(health, false);
  if (const int drain_seconds = absl::GetFlag(FLAGS_drain_seconds); drain_seconds > 0) {
    LogInfo(absl::StrCat("draining for ", drain_seconds, " s (a second signal skips it)"));
    const timespec timeout{drain_seconds, 0};
    sigtimedwait(&signals, nullptr, &timeout);
  }

  // Stop the jobs (their watchers get the final event), then close the
  // server, giving open calls a moment. Shutdown returns once every call has
  // finished; the inference threads keep running until then, so the requests
  // they hold complete. Then stop the inference threads and the executor.
  health->Shutdown();
  (*manager)->Shutdown();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(3));
  (*model_server)->Shutdown();
  executor.Shutdown();
  server->Wait();
  metrics_server->reset();
  LogInfo("mantissad stopped");
  return 0;
}

}  // namespace
}  // namespace mantissa

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "mantissad: trains models over gRPC under Lightning Fabric's precision modes, and serves\n"
      "them in true half precision over the Open Inference Protocol (KServe v2 gRPC).\n"
      "Usage: mantissad [--grpc_address=HOST:PORT] [--metrics_address=HOST:PORT] "
      "[--state_dir=DIR] [--device=auto|cpu|cuda|cuda:N] [--max_concurrent_jobs=N] "
      "[--port_file=PATH] [--drain_seconds=N] [--calibration_items=N]");
  absl::ParseCommandLine(argc, argv);
  return mantissa::Run();
}
