#include "tests/testing/daemon_process.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/client_interceptor.h>
#include <signal.h>
#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "tests/testing/subprocess.h"

namespace mantissa::testing {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Reads {"grpc": N, "metrics": M[, "http": H][, "health": K]}.
bool ParsePortFile(const std::string& text, int* grpc, int* metrics, int* http, int* health) {
  std::smatch m;
  static const std::regex re(
      R"re(\{"grpc": (\d+), "metrics": (\d+)(, "http": (\d+))?(, "health": (\d+))?\})re");
  if (!std::regex_search(text, m, re)) return false;
  if (m[4].matched && !absl::SimpleAtoi(m[4].str(), http)) return false;
  if (m[6].matched && !absl::SimpleAtoi(m[6].str(), health)) return false;
  return absl::SimpleAtoi(m[1].str(), grpc) && absl::SimpleAtoi(m[2].str(), metrics);
}

// Adds `authorization: Bearer <token>` to every call, as the CLI does.
class TokenInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit TokenInterceptor(std::string header) : header_(std::move(header)) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->insert({"authorization", header_});
    }
    methods->Proceed();
  }

 private:
  const std::string header_;
};

class TokenInterceptorFactory final : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit TokenInterceptorFactory(std::string token) : header_("Bearer " + std::move(token)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo*) override {
    return new TokenInterceptor(header_);
  }

 private:
  const std::string header_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<DaemonProcess>> DaemonProcess::Start(Options options) {
  std::unique_ptr<DaemonProcess> d(new DaemonProcess());
  const std::string port_file = options.state_dir + "/ports.json";
  std::remove(port_file.c_str());
  d->log_path_ = options.state_dir + "/mantissad.log";
  d->options_ = options;
  std::vector<std::string> argv = {MANTISSAD_BIN,
                                   "--grpc_address=127.0.0.1:0",
                                   "--metrics_address=127.0.0.1:0",
                                   "--http_address=127.0.0.1:0",
                                   "--state_dir=" + options.state_dir,
                                   "--port_file=" + port_file,
                                   "--intra_op_threads=1"};
  // Test files live in temp folders and the fetched test data: the daemon
  // may read them (and TorchScript modules there) unless a test says
  // otherwise with its own --data_root / --torchscript_root.
  const char* tmp = std::getenv("TMPDIR");
  const std::string temp_root = tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
  argv.push_back(
      absl::StrCat("--data_root=/usr/share/datasets,", temp_root, ",", MANTISSA_TEST_DATA_DIR));
  argv.push_back("--torchscript_root=" + temp_root);
  argv.insert(argv.end(), options.extra_flags.begin(), options.extra_flags.end());
  d->pid_ = Spawn(argv, d->log_path_);

  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (absl::Now() < deadline) {
    if (ParsePortFile(ReadFile(port_file), &d->grpc_port_, &d->metrics_port_, &d->http_port_,
                      &d->health_port_)) {
      return d;
    }
    int status = 0;
    if (waitpid(d->pid_, &status, WNOHANG) == d->pid_) {
      d->pid_ = -1;
      return absl::InternalError(absl::StrCat("mantissad exited during start-up: ", d->Log()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return absl::DeadlineExceededError(absl::StrCat("mantissad did not start: ", d->Log()));
}

DaemonProcess::~DaemonProcess() { Kill(); }

std::unique_ptr<v1::TrainingService::Stub> DaemonProcess::NewStub() const {
  return v1::TrainingService::NewStub(NewChannel());
}

std::shared_ptr<grpc::Channel> DaemonProcess::NewChannel() const {
  return NewChannel(options_.token);
}

std::shared_ptr<grpc::Channel> DaemonProcess::NewChannel(const std::string& token) const {
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (!options_.tls_ca_file.empty()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ReadFile(options_.tls_ca_file);
    if (!options_.tls_cert_file.empty()) {
      ssl.pem_cert_chain = ReadFile(options_.tls_cert_file);
      ssl.pem_private_key = ReadFile(options_.tls_key_file);
    }
    credentials = grpc::SslCredentials(ssl);
  }
  if (token.empty()) return grpc::CreateChannel(grpc_address(), credentials);
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> factories;
  factories.push_back(std::make_unique<TokenInterceptorFactory>(token));
  return grpc::experimental::CreateCustomChannelWithInterceptors(
      grpc_address(), credentials, grpc::ChannelArguments(), std::move(factories));
}

int DaemonProcess::Terminate(absl::Duration timeout) {
  if (pid_ <= 0) return -1;
  SendSignal(SIGTERM);
  return WaitForExit(timeout);
}

void DaemonProcess::SendSignal(int signal) {
  if (pid_ > 0) kill(pid_, signal);
}

int DaemonProcess::WaitForExit(absl::Duration timeout) {
  if (pid_ <= 0) return -1;
  const absl::Time deadline = absl::Now() + timeout;
  int status = 0;
  while (absl::Now() < deadline) {
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  Kill();
  return -1;
}

void DaemonProcess::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

absl::StatusOr<std::string> DaemonProcess::ScrapeMetrics() const {
  // curl is part of every Debian base image used here; no HTTP client code
  // of our own to get wrong.
  std::vector<std::string> argv = {"/usr/bin/curl", "-sSf", "--max-time", "10"};
  std::string scheme = "http";
  if (!options_.tls_ca_file.empty()) {
    scheme = "https";
    argv.insert(argv.end(), {"--cacert", options_.tls_ca_file});
  }
  if (!options_.token.empty()) {
    argv.insert(argv.end(), {"-H", "Authorization: Bearer " + options_.token});
  }
  argv.push_back(absl::StrCat(scheme, "://127.0.0.1:", metrics_port_, "/metrics"));
  CommandResult r = RunCommand(argv);
  if (r.exit_code != 0) return absl::UnavailableError(absl::StrCat("curl: ", r.err));
  return r.out;
}

std::string DaemonProcess::http_url() const {
  return absl::StrCat(options_.tls_ca_file.empty() ? "http" : "https", "://127.0.0.1:", http_port_);
}

std::string DaemonProcess::Log() const { return ReadFile(log_path_); }

absl::StatusOr<v1::Job> WaitForJob(v1::TrainingService::Stub& stub, const std::string& id,
                                   const std::function<bool(const v1::Job&)>& predicate,
                                   absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  v1::Job last;
  while (absl::Now() < deadline) {
    grpc::ClientContext context;
    v1::GetJobRequest request;
    request.set_job_id(id);
    v1::GetJobResponse response;
    grpc::Status status = stub.GetJob(&context, request, &response);
    if (!status.ok()) return absl::UnknownError(status.error_message());
    last = response.job();
    if (predicate(last)) return last;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("job ", id, " never reached the condition; last: ", last.ShortDebugString()));
}

bool IsTerminal(const v1::Job& job) {
  return job.state() == v1::SUCCEEDED || job.state() == v1::FAILED || job.state() == v1::CANCELLED;
}

v1::JobSpec SyntheticMlpSpec(int64_t steps) {
  v1::JobSpec spec;
  spec.set_model("mlp");
  (*spec.mutable_model_options())["hidden"] = "64";
  spec.set_dataset("synthetic");
  spec.set_steps(steps);
  spec.set_batch_size(32);
  spec.set_seed(7);
  return spec;
}

SubmitOutcome Submit(v1::TrainingService::Stub& stub, const v1::JobSpec& spec) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::SubmitJobRequest request;
  *request.mutable_spec() = spec;
  v1::SubmitJobResponse response;
  SubmitOutcome outcome;
  outcome.status = stub.SubmitJob(&context, request, &response);
  outcome.job = response.job();
  return outcome;
}

std::optional<double> FindSample(const std::string& metrics_text, const std::string& name,
                                 const std::vector<std::string>& labels) {
  for (absl::string_view line : absl::StrSplit(metrics_text, '\n')) {
    if (line.empty() || line[0] == '#') continue;
    const size_t name_end = line.find_first_of("{ ");
    if (name_end == absl::string_view::npos || line.substr(0, name_end) != name) continue;
    const size_t value_start = line.rfind(' ');
    const absl::string_view label_text = line.substr(name_end, value_start - name_end);
    bool all = true;
    for (const std::string& l : labels) all = all && label_text.find(l) != absl::string_view::npos;
    double value = 0;
    if (all && absl::SimpleAtod(line.substr(value_start + 1), &value)) return value;
  }
  return std::nullopt;
}

}  // namespace mantissa::testing
