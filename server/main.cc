// mantissad: the Mantissa training daemon. Flags fill Options; everything
// else lives in the libraries under server/.

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
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
#include "server/metrics/metrics.h"
#include "server/metrics/metrics_http_server.h"
#include "server/service/training_service.h"
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
          "After binding, write {\"grpc\": PORT, \"metrics\": PORT} to this file.");

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

  auto runner = TrainingJobRunner::Create(
      {.device = absl::GetFlag(FLAGS_device),
       .max_concurrent_jobs = absl::GetFlag(FLAGS_max_concurrent_jobs),
       .state_dir = std::filesystem::absolute(state_dir).lexically_normal().string()});
  if (!runner.ok()) return Fail(runner.status());

  JobManager::Options manager_options;
  manager_options.store = store->get();
  manager_options.runner = runner->get();
  manager_options.metrics = &metrics;
  manager_options.max_concurrent_jobs = absl::GetFlag(FLAGS_max_concurrent_jobs);
  auto manager = JobManager::Create(manager_options);
  if (!manager.ok()) return Fail(manager.status());

  TrainingService training_service(manager->get());
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int grpc_port = 0;
  // gRPC enables SO_REUSEPORT on Linux; two daemons must not share a port.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(absl::GetFlag(FLAGS_grpc_address), grpc::InsecureServerCredentials(),
                           &grpc_port);
  builder.RegisterService(&training_service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || grpc_port == 0) {
    return Fail(absl::UnavailableError(
        absl::StrCat("--grpc_address: cannot listen on ", absl::GetFlag(FLAGS_grpc_address))));
  }

  auto metrics_server = MetricsHttpServer::Create(
      {.address = absl::GetFlag(FLAGS_metrics_address), .registry = metrics.registry()});
  if (!metrics_server.ok()) return Fail(metrics_server.status());

  if (const std::string port_file = absl::GetFlag(FLAGS_port_file); !port_file.empty()) {
    if (absl::Status s = WritePortFile(port_file, grpc_port, (*metrics_server)->port()); !s.ok()) {
      return Fail(s);
    }
  }
  LogInfo(absl::StrCat("mantissad ", MANTISSA_VERSION, " serving gRPC on port ", grpc_port,
                       ", metrics on port ", (*metrics_server)->port(), "; device ",
                       (*runner)->device(), ", LibTorch ", LibTorchVersion(), ", ", threads,
                       " intra-op threads, state in ", state_dir.string()));

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  LogInfo(absl::StrCat("received ", strsignal(signal_number), "; shutting down"));

  // Drain order: report NOT_SERVING, stop the jobs (their watchers get the
  // final event), then close the server, giving open streams a moment.
  server->GetHealthCheckService()->Shutdown();
  (*manager)->Shutdown();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(3));
  server->Wait();
  metrics_server->reset();
  LogInfo("mantissad stopped");
  return 0;
}

}  // namespace
}  // namespace mantissa

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "mantissad: trains models over gRPC under Lightning Fabric's precision modes.\n"
      "Usage: mantissad [--grpc_address=HOST:PORT] [--metrics_address=HOST:PORT] "
      "[--state_dir=DIR] [--device=auto|cpu|cuda|cuda:N] [--max_concurrent_jobs=N] "
      "[--port_file=PATH]");
  absl::ParseCommandLine(argc, argv);
  return mantissa::Run();
}
