#ifndef MANTISSA_TESTS_TESTING_DAEMON_PROCESS_H_
#define MANTISSA_TESTS_TESTING_DAEMON_PROCESS_H_

#include <sys/types.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "mantissa/v1/training.grpc.pb.h"

namespace mantissa::testing {

// The real mantissad binary on 127.0.0.1 with ports chosen by the kernel
// (port 0, read back from --port_file). Stopped with SIGKILL on destruction
// if still running.
class DaemonProcess {
 public:
  struct Options {
    std::string state_dir;  // required
    // Appended last, so they override the defaults. Test daemons run one
    // intra-op thread by default: ctest runs several at once on few cores.
    // They may read files (and TorchScript modules) under $TMPDIR (or /tmp),
    // the fetched test data and /usr/share/datasets by default.
    std::vector<std::string> extra_flags;
    // How clients of this daemon connect (NewChannel, NewStub, ScrapeMetrics):
    // over TLS when tls_ca_file is set, with a client certificate when
    // tls_cert_file and tls_key_file are, with a bearer token when token is.
    // The daemon's own TLS and token flags go in extra_flags.
    std::string tls_ca_file;
    std::string tls_cert_file;
    std::string tls_key_file;
    std::string token;
  };

  static absl::StatusOr<std::unique_ptr<DaemonProcess>> Start(Options options);
  ~DaemonProcess();

  int grpc_port() const { return grpc_port_; }
  int metrics_port() const { return metrics_port_; }
  std::string grpc_address() const { return "127.0.0.1:" + std::to_string(grpc_port_); }
  std::string server_flag() const { return "--server=" + grpc_address(); }
  int health_port() const { return health_port_; }  // 0 without --health_address
  int http_port() const { return http_port_; }      // 0 with --http_address=""
  // http(s)://127.0.0.1:<http port>, as the Options' TLS says.
  std::string http_url() const;
  std::unique_ptr<v1::TrainingService::Stub> NewStub() const;
  // A channel with the Options' credentials; `token` overrides Options::token
  // ("" sends none).
  std::shared_ptr<grpc::Channel> NewChannel() const;
  std::shared_ptr<grpc::Channel> NewChannel(const std::string& token) const;

  // SIGTERM and wait; returns the exit code (-1 if killed by a signal).
  int Terminate(absl::Duration timeout = absl::Seconds(60));
  // Sends `signal` without waiting, e.g. SIGTERM to watch the daemon drain.
  void SendSignal(int signal);
  // Waits for the daemon to exit by itself; its exit code, or -1 if a
  // signal ended it or it still ran after `timeout` (then it is killed).
  int WaitForExit(absl::Duration timeout = absl::Seconds(60));
  // SIGKILL and reap, as a crash would.
  void Kill();
  // GET http(s)://127.0.0.1:<metrics>/metrics with the Options' CA and token.
  absl::StatusOr<std::string> ScrapeMetrics() const;
  std::string Log() const;

 private:
  DaemonProcess() = default;

  pid_t pid_ = -1;
  int grpc_port_ = 0;
  int metrics_port_ = 0;
  int health_port_ = 0;
  int http_port_ = 0;
  std::string log_path_;
  Options options_;
};

// Polls GetJob until `predicate` holds or `timeout` passes; returns the last job.
absl::StatusOr<v1::Job> WaitForJob(v1::TrainingService::Stub& stub, const std::string& id,
                                   const std::function<bool(const v1::Job&)>& predicate,
                                   absl::Duration timeout = absl::Seconds(120));

bool IsTerminal(const v1::Job& job);

// An MLP on the synthetic dataset: small enough to train in about a second.
v1::JobSpec SyntheticMlpSpec(int64_t steps);

// SubmitJob over gRPC; the gRPC status on failure (code and message kept).
struct SubmitOutcome {
  grpc::Status status;
  v1::Job job;
};
SubmitOutcome Submit(v1::TrainingService::Stub& stub, const v1::JobSpec& spec);

// The value of a Prometheus sample `name{labels...}` in /metrics text whose
// label set contains every `label="value"` in `labels`; nullopt if absent.
std::optional<double> FindSample(const std::string& metrics_text, const std::string& name,
                                 const std::vector<std::string>& labels = {});

}  // namespace mantissa::testing

#endif  // MANTISSA_TESTS_TESTING_DAEMON_PROCESS_H_
