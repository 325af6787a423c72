// mantissa_inference_benchmark: what serving costs over the model itself.
// One run measures, on the same model version and request batch sizes:
//
//   bare         Servable::Run in this process, one forward at a time under
//                InferenceMode: the floor (mantissad runs one forward at a
//                time per model version too, on its batcher thread);
//   grpc         ModelInfer through a real mantissad on loopback;
//   rest-json    POST /v2/models/{m}/infer, tensors as JSON numbers;
//   rest-binary  the same with Triton's binary tensor extension;
//
// each served transport with 1 and 16 concurrent clients (one connection
// each), as throughput (items/s, requests/s), p50/p99 latency and the ratio
// to the bare forward's items/s at that batch size. Then dynamic batching:
// 16 gRPC clients sending one item per request to the model as exported
// (max_batch_size 64, max_queue_delay 500 us) and to a second export of the
// same job with batching.max_batch_size 1, which makes every forward one
// request.
//
//   mantissa_inference_benchmark [--model=mlp|cnn] [--precision=32-true]
//       [--batch_sizes=1,16,64] [--clients=1,16] [--seconds=3] [--json]
//       [--server=HOST:PORT --metrics=HOST:PORT --http=HOST:PORT]
//
// Clients, daemon and the bare loop share this machine's cores: on a small
// machine the clients' own CPU time is part of what the ratios show, so each
// row also gives the cores the daemon and this process (the clients) used.

#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "server/runtime/torch_runtime.h"
#include "server/serving/model_repository.h"
#include "server/serving/servable.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/inference_client.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/temp_dir.h"

ABSL_FLAG(std::string, model, "mlp", "mlp | cnn, trained briefly on Fashion-MNIST.");
ABSL_FLAG(std::string, precision, "32-true", "Export precision of the benchmarked model.");
ABSL_FLAG(std::string, hidden, "256,128",
          "The mlp's hidden sizes (model option hidden): wider layers make the forward, not the "
          "per-request work, the cost that batching amortizes.");
ABSL_FLAG(std::vector<std::string>, batch_sizes, std::vector<std::string>({"1", "16", "64"}),
          "Items per request (at most 64, the exported max_batch_size).");
ABSL_FLAG(std::vector<std::string>, clients, std::vector<std::string>({"1", "16"}),
          "Concurrent client counts, each client on its own connection.");
ABSL_FLAG(std::vector<std::string>, transports,
          std::vector<std::string>({"grpc", "rest-json", "rest-binary"}),
          "Served transports to measure: grpc, rest-json, rest-binary.");
ABSL_FLAG(int, batching_clients, 16,
          "Clients of the dynamic batching comparison (one item per request); 0 = skip it.");
ABSL_FLAG(double, seconds, 3, "Measured seconds per row (after a warm-up of up to 1 s).");
ABSL_FLAG(int, steps, 100, "Training steps of the benchmarked model.");
// One by default: with more OpenMP threads than free cores (the clients and
// the daemon share them) every parallel region can stall for a scheduler
// time slice, which measured the plain cnn loop 3x slower on 2 busy cores.
ABSL_FLAG(int, intra_op_threads, 1,
          "LibTorch intra-op threads of the daemon and of the bare loop; 0 = one per core.");
ABSL_FLAG(std::string, server, "",
          "An existing mantissad (HOST:PORT) instead of starting one; it must share this "
          "machine's file system (the bare loop reads its repository).");
ABSL_FLAG(std::string, metrics, "",
          "With --server: its /metrics address (HOST:PORT), for the mean batch size.");
ABSL_FLAG(std::string, http, "",
          "With --server: its REST address (HOST:PORT); without it the REST rows are skipped.");
ABSL_FLAG(bool, json, false, "Also print one JSON line per row and per target.");

namespace mantissa {
namespace {

using Clock = std::chrono::steady_clock;

// Targets (reported, never asserted: the figures depend on the machine).
constexpr double kServedOverBareTarget = 0.9;  // gRPC at batch >= 16
constexpr int64_t kServedTargetMinBatch = 16;
constexpr double kBatchingTarget = 4.0;  // batching on / off at 16 clients

struct Row {
  std::string transport;  // bare | grpc | rest-json | rest-binary
  std::string label;      // in the table; the transport when empty
  std::string served;     // the served model's name; empty for bare
  int64_t batch = 0;
  int clients = 1;
  int64_t requests = 0;
  int64_t errors = 0;
  std::string first_error;
  double seconds = 0;
  double items_per_s = 0;
  double requests_per_s = 0;
  double p50_ms = NAN;
  double p99_ms = NAN;
  double mean_batch = NAN;  // merged batch the daemon ran; NaN without metrics
  double bare_items_per_s = NAN;
  // CPU seconds per wall second in the window: where the cores went.
  double daemon_cores = NAN;
  double client_cores = NAN;  // this process: the clients, or the bare loop

  double over_bare() const { return items_per_s / bare_items_per_s; }
};

// Where the served model lives and what its requests look like.
struct Target {
  std::string grpc_address;
  std::string metrics_address;  // empty: no mean batch
  pid_t daemon_pid = 0;         // 0: no daemon CPU figure
  std::string http_host;        // empty: no REST rows
  int http_port = 0;
  std::string model;
  std::string input;
  std::string output;
  std::vector<int64_t> item_shape;
};

// One request of one client; runs on that client's own thread and connection.
using Call = std::function<absl::Status()>;
using CallFactory = std::function<Call(int client)>;

absl::StatusOr<std::vector<int64_t>> ParseInts(const std::vector<std::string>& values,
                                               const std::string& flag, int64_t min, int64_t max) {
  std::vector<int64_t> out;
  for (const std::string& v : values) {
    int64_t n;
    if (!absl::SimpleAtoi(v, &n) || n < min || n > max) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, ": \"", v, "\" is not an integer in ", min, "..", max));
    }
    out.push_back(n);
  }
  if (out.empty()) return absl::InvalidArgumentError(absl::StrCat("--", flag, " is empty"));
  return out;
}

absl::StatusOr<std::pair<std::string, int>> SplitHostPort(const std::string& address) {
  const size_t colon = address.rfind(':');
  int port;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port)) {
    return absl::InvalidArgumentError(absl::StrCat("\"", address, "\" is not HOST:PORT"));
  }
  return std::make_pair(address.substr(0, colon), port);
}

std::optional<std::pair<double, double>> BatchHistogram(const std::string& metrics_address,
                                                        const std::string& model) {
  if (metrics_address.empty()) return std::nullopt;
  testing::CommandResult r =
      testing::RunCommand({"/usr/bin/curl", "-sSf", "--max-time", "10",
                           absl::StrCat("http://", metrics_address, "/metrics")});
  if (r.exit_code != 0) return std::nullopt;
  const std::string label = absl::StrCat("model=\"", model, "\"");
  auto sum = testing::FindSample(r.out, "mantissa_inference_batch_size_sum", {label});
  auto count = testing::FindSample(r.out, "mantissa_inference_batch_size_count", {label});
  if (!sum || !count) return std::pair<double, double>(0, 0);
  return std::pair<double, double>(*sum, *count);
}

// CPU seconds (user + system, every thread) `pid` has used; NaN when unknown.
double CpuSeconds(pid_t pid) {
  if (pid <= 0) return NAN;
  std::ifstream file(absl::StrCat("/proc/", pid, "/stat"));
  std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  // The command name may hold spaces; the fields after it start at "state".
  const size_t close = text.rfind(')');
  if (close == std::string::npos || close + 2 >= text.size()) return NAN;
  const std::vector<std::string> fields = absl::StrSplit(text.substr(close + 2), ' ');
  int64_t utime, stime;  // fields 14 and 15 of proc(5)
  if (fields.size() < 13 || !absl::SimpleAtoi(fields[11], &utime) ||
      !absl::SimpleAtoi(fields[12], &stime)) {
    return NAN;
  }
  return static_cast<double>(utime + stime) / sysconf(_SC_CLK_TCK);
}

// The mantissad this process started: its child named "mantissad"; 0 if none.
pid_t DaemonPid() {
  std::error_code error;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task", error)) {
    std::ifstream children(task.path() / "children");
    for (pid_t pid; children >> pid;) {
      std::ifstream comm(absl::StrCat("/proc/", pid, "/comm"));
      std::string name;
      if (std::getline(comm, name) && name == "mantissad") return pid;
    }
  }
  return 0;
}

double Percentile(std::vector<double>& values, double q) {
  if (values.empty()) return NAN;
  const size_t k = std::min(values.size() - 1, static_cast<size_t>(q * values.size()));
  std::nth_element(values.begin(), values.begin() + k, values.end());
  return values[k];
}

std::vector<int64_t> BatchShape(int64_t batch, const std::vector<int64_t>& item_shape) {
  std::vector<int64_t> shape = {batch};
  shape.insert(shape.end(), item_shape.begin(), item_shape.end());
  return shape;
}

int64_t Elements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// The calls of one transport: each client sends its own fixed request, built
// once, so that the loop times the request and not its making.
CallFactory MakeCalls(const std::string& transport, const Target& t, int64_t batch) {
  const std::vector<int64_t> shape = BatchShape(batch, t.item_shape);
  const int64_t elements = Elements(shape);
  if (transport == "grpc") {
    return [=](int c) -> Call {
      auto client = std::make_shared<testing::InferenceClient>(t.grpc_address,
                                                               /*own_connection=*/true);
      auto request = std::make_shared<inference::ModelInferRequest>(testing::FloatRequest(
          t.model, t.input, shape, testing::PseudoRandomFloats(elements, 1000 + c)));
      return [client, request]() -> absl::Status {
        inference::ModelInferResponse response;
        const grpc::Status s = client->Infer(*request, &response);
        if (s.ok()) return absl::OkStatus();
        return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
      };
    };
  }
  const bool binary = transport == "rest-binary";
  return [=](int c) -> Call {
    auto client = std::make_shared<testing::RestClient>(t.http_host, t.http_port);
    const std::vector<float> values = testing::PseudoRandomFloats(elements, 1000 + c);
    auto request = std::make_shared<testing::RestRequest>(
        binary ? testing::RestBinaryInferRequest(t.input, shape, values, t.output)
               : testing::RestJsonInferRequest(t.input, shape, values));
    const std::string path = absl::StrCat("/v2/models/", t.model, "/infer");
    return [client, request, path, binary]() -> absl::Status {
      auto response = client->Post(path, *request);
      if (!response.ok()) return response.status();
      if (response->status != 200) {
        return absl::UnknownError(absl::StrCat("HTTP ", response->status, ": ", response->body));
      }
      if (binary && response->header_length < 0) {
        return absl::UnknownError("binary answer without Inference-Header-Content-Length");
      }
      return absl::OkStatus();
    };
  };
}

// Drives `make_call` from `clients` threads; fills the measured half of `row`.
void Drive(const CallFactory& make_call, int clients, const Target& target, Row& row) {
  const absl::Duration measured = absl::Seconds(absl::GetFlag(FLAGS_seconds));
  struct PerClient {
    std::vector<double> latencies_ms;  // of requests that ended inside the window
    int64_t errors = 0;
    std::string first_error;
  };
  std::vector<PerClient> results(clients);
  // Requests that end in [start, end] count; the window opens after a warm-up.
  std::atomic<int64_t> window_start{INT64_MAX}, window_end{INT64_MAX};
  std::atomic<bool> stop{false};
  const auto now_ns = [] {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
        .count();
  };
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      const Call call = make_call(c);
      PerClient& mine = results[c];
      while (!stop.load()) {
        const int64_t begin = now_ns();
        const absl::Status status = call();
        const int64_t end = now_ns();
        if (end < window_start.load() || end > window_end.load()) continue;
        if (status.ok()) {
          mine.latencies_ms.push_back((end - begin) / 1e6);
        } else if (mine.errors++ == 0) {
          mine.first_error = status.ToString();
        }
      }
    });
  }
  absl::SleepFor(std::min(absl::Seconds(1), measured / 2));  // connections, warm-up
  const auto before = BatchHistogram(target.metrics_address, row.served);
  const double daemon_cpu = CpuSeconds(target.daemon_pid), client_cpu = CpuSeconds(getpid());
  window_start = now_ns();
  absl::SleepFor(measured);
  window_end = now_ns();
  row.daemon_cores = CpuSeconds(target.daemon_pid) - daemon_cpu;
  row.client_cores = CpuSeconds(getpid()) - client_cpu;
  const auto after = BatchHistogram(target.metrics_address, row.served);
  stop = true;
  for (std::thread& t : threads) t.join();

  std::vector<double> latencies;
  for (const PerClient& r : results) {
    latencies.insert(latencies.end(), r.latencies_ms.begin(), r.latencies_ms.end());
    row.errors += r.errors;
    if (row.first_error.empty()) row.first_error = r.first_error;
  }
  row.requests = static_cast<int64_t>(latencies.size());
  row.seconds = (window_end.load() - window_start.load()) / 1e9;
  row.daemon_cores /= row.seconds;
  row.client_cores /= row.seconds;
  row.requests_per_s = row.requests / row.seconds;
  row.items_per_s = row.requests_per_s * row.batch;
  row.p50_ms = Percentile(latencies, 0.50);
  row.p99_ms = Percentile(latencies, 0.99);
  if (before && after && after->second > before->second) {
    row.mean_batch = (after->first - before->first) / (after->second - before->second);
  }
}

// Servable::Run at `batch`, one forward after another, for --seconds.
absl::StatusOr<Row> BareForward(Servable& servable, int64_t batch) {
  std::vector<int64_t> shape = {batch};
  for (int64_t d : servable.inputs()[0].shape()) shape.push_back(d);
  // Inputs already in the model's dtype: the loop times the forward alone.
  const std::vector<torch::Tensor> inputs = {
      torch::randn(shape, torch::TensorOptions().dtype(torch::kFloat32)).to(servable.dtype())};
  for (int i = 0; i < 3; ++i) {
    auto warm = servable.Run(inputs);
    if (!warm.ok()) return warm.status();
  }
  std::vector<double> latencies;
  const double cpu = CpuSeconds(getpid());
  const Clock::time_point start = Clock::now();
  const Clock::time_point stop =
      start + absl::ToChronoNanoseconds(absl::Seconds(absl::GetFlag(FLAGS_seconds)));
  Clock::time_point now = start;
  while (now < stop || latencies.size() < 3) {
    auto out = servable.Run(inputs);
    if (!out.ok()) return out.status();
    const Clock::time_point end = Clock::now();
    latencies.push_back(std::chrono::duration<double, std::milli>(end - now).count());
    now = end;
  }
  Row row;
  row.transport = "bare";
  row.batch = batch;
  row.requests = static_cast<int64_t>(latencies.size());
  row.seconds = std::chrono::duration<double>(now - start).count();
  row.requests_per_s = row.requests / row.seconds;
  row.items_per_s = row.requests_per_s * batch;
  row.bare_items_per_s = row.items_per_s;
  row.client_cores = (CpuSeconds(getpid()) - cpu) / row.seconds;
  row.p50_ms = Percentile(latencies, 0.50);
  row.p99_ms = Percentile(latencies, 0.99);
  row.mean_batch = batch;
  return row;
}

// One request per transport with the same input: every answer must match
// gRPC's, so that a REST front end that answers fast but wrong fails here.
absl::Status CheckAnswersAgree(const Target& t, const std::vector<std::string>& transports,
                               int64_t batch) {
  const std::vector<int64_t> shape = BatchShape(batch, t.item_shape);
  const std::vector<float> values = testing::PseudoRandomFloats(Elements(shape), 7);
  testing::InferenceClient grpc_client(t.grpc_address);
  inference::ModelInferResponse response;
  const grpc::Status s =
      grpc_client.Infer(testing::FloatRequest(t.model, t.input, shape, values), &response);
  if (!s.ok()) return absl::UnknownError(absl::StrCat("gRPC: ", s.error_message()));
  auto expected = testing::OutputFloats(response);
  if (!expected.ok()) return expected.status();
  for (const std::string& transport : transports) {
    if (transport == "grpc") continue;
    testing::RestClient rest(t.http_host, t.http_port);
    auto answer = rest.Post(absl::StrCat("/v2/models/", t.model, "/infer"),
                            transport == "rest-binary"
                                ? testing::RestBinaryInferRequest(t.input, shape, values, t.output)
                                : testing::RestJsonInferRequest(t.input, shape, values));
    if (!answer.ok()) return answer.status();
    auto got = testing::RestOutputFloats(*answer);
    if (!got.ok()) return absl::UnknownError(absl::StrCat(transport, ": ", got.status().message()));
    if (got->size() != expected->size()) {
      return absl::UnknownError(
          absl::StrCat(transport, ": ", got->size(), " values, gRPC gave ", expected->size()));
    }
    for (size_t i = 0; i < got->size(); ++i) {
      const float e = (*expected)[i];
      if (std::fabs((*got)[i] - e) > 1e-5f * (1 + std::fabs(e))) {
        return absl::UnknownError(absl::StrCat(transport, " at batch ", batch, ": value #", i, " ",
                                               (*got)[i], ", gRPC gave ", e));
      }
    }
  }
  return absl::OkStatus();
}

v1::JobSpec BenchmarkSpec(const std::string& model) {
  v1::JobSpec spec;
  spec.set_model(model);
  spec.set_dataset("fashion-mnist");
  (*spec.mutable_dataset_options())["train_limit"] = "4096";
  (*spec.mutable_dataset_options())["test_limit"] = "512";
  if (model == "mlp") {
    (*spec.mutable_model_options())["hidden"] = absl::GetFlag(FLAGS_hidden);
  } else {
    (*spec.mutable_model_options())["channels"] = "16,32";
  }
  spec.set_steps(absl::GetFlag(FLAGS_steps));
  spec.set_batch_size(64);
  spec.set_seed(1);
  spec.set_memory_baseline_steps(0);
  return spec;
}

std::string Fixed(double v, int digits) {
  return std::isnan(v) ? "-" : absl::StrFormat("%.*f", digits, v);
}

std::string JsonNumber(double v) {
  return std::isnan(v) || std::isinf(v) ? "null" : absl::StrFormat("%.6g", v);
}

int Fail(const std::string& what, const absl::Status& status) {
  std::fprintf(stderr, "mantissa_inference_benchmark: %s: %s\n", what.c_str(),
               status.ToString().c_str());
  return 1;
}

// The daemon: given by flags, or a fresh one on a temporary state directory.
struct Daemon {
  std::unique_ptr<testing::TempDir> temp;
  std::unique_ptr<testing::DaemonProcess> process;
  Target target;
};

absl::StatusOr<Daemon> StartDaemon() {
  Daemon d;
  if (!absl::GetFlag(FLAGS_server).empty()) {
    d.target.grpc_address = absl::GetFlag(FLAGS_server);
    d.target.metrics_address = absl::GetFlag(FLAGS_metrics);
    if (!absl::GetFlag(FLAGS_http).empty()) {
      auto http = SplitHostPort(absl::GetFlag(FLAGS_http));
      if (!http.ok())
        return absl::InvalidArgumentError(absl::StrCat("--http: ", http.status().message()));
      std::tie(d.target.http_host, d.target.http_port) = *http;
    }
    return d;
  }
  d.temp = std::make_unique<testing::TempDir>();
  auto started = testing::DaemonProcess::Start(
      {.state_dir = d.temp->path(),
       .extra_flags = {
           absl::StrCat("--intra_op_threads=", absl::GetFlag(FLAGS_intra_op_threads))}});
  if (!started.ok()) return started.status();
  d.process = std::move(*started);
  d.target.grpc_address = d.process->grpc_address();
  d.target.metrics_address = absl::StrCat("127.0.0.1:", d.process->metrics_port());
  d.target.http_host = "127.0.0.1";
  d.target.http_port = d.process->http_port();
  d.target.daemon_pid = DaemonPid();
  return d;
}

absl::Status WaitReady(testing::InferenceClient& client) {
  for (absl::Time deadline = absl::Now() + absl::Seconds(60);;) {
    auto ready = client.ServerReady();
    if (ready.ok() && *ready) return absl::OkStatus();
    if (absl::Now() > deadline) return absl::DeadlineExceededError("mantissad is not ready");
    absl::SleepFor(absl::Milliseconds(20));
  }
}

// Trains the benchmarked model; the succeeded job.
absl::StatusOr<v1::Job> Train(testing::InferenceClient& client, const std::string& model) {
  auto training = v1::TrainingService::NewStub(client.channel());
  const testing::SubmitOutcome submitted = testing::Submit(*training, BenchmarkSpec(model));
  if (!submitted.status.ok()) return absl::UnknownError(submitted.status.error_message());
  auto job = testing::WaitForJob(*training, submitted.job.id(), testing::IsTerminal);
  if (!job.ok()) return job.status();
  if (job->state() != v1::SUCCEEDED) {
    return absl::InternalError(
        absl::StrCat("job ", job->id(), " ", v1::JobState_Name(job->state()), ": ", job->error()));
  }
  return *job;
}

// The exported version, loaded in this process as mantissad loads it.
absl::StatusOr<std::shared_ptr<Servable>> LoadInProcess(const v1::Job& job,
                                                        const v1::ModelConfig& config) {
  // <state_dir>/jobs/<id>/checkpoint.pt: the repository is <state_dir>/models.
  const std::filesystem::path state_dir =
      std::filesystem::path(job.checkpoint().path()).parent_path().parent_path().parent_path();
  auto repository = ModelRepository::Create({.root = (state_dir / "models").string()});
  if (!repository.ok()) return repository.status();
  auto on_disk = (*repository)->ReadConfig(config.name(), config.version());
  if (!on_disk.ok()) return on_disk.status();
  Servable::Options options;
  options.config = *on_disk;
  options.version_dir = (*repository)->VersionDir(config.name(), config.version());
  options.calibration_items = 64;
  return Servable::Load(options);
}

void PrintTable(const std::vector<Row>& rows) {
  int width = 11;
  for (const Row& r : rows) width = std::max<int>(width, r.label.size());
  std::printf(
      "| %-*s | batch | clients | requests/s |   items/s | p50 ms | p99 ms | mean batch | vs bare "
      "| daemon cores | client cores |\n"
      "|%s|------:|--------:|-----------:|----------:|-------:|-------:|-----------:|--------:"
      "|-------------:|-------------:|\n",
      width, "transport", std::string(width + 2, '-').c_str());
  for (const Row& r : rows) {
    std::printf("| %-*s | %5lld | %7d | %10s | %9s | %6s | %6s | %10s | %7s | %12s | %12s |\n",
                width, (r.label.empty() ? r.transport : r.label).c_str(),
                static_cast<long long>(r.batch), r.clients, Fixed(r.requests_per_s, 0).c_str(),
                Fixed(r.items_per_s, 0).c_str(), Fixed(r.p50_ms, 3).c_str(),
                Fixed(r.p99_ms, 3).c_str(), Fixed(r.mean_batch, 1).c_str(),
                Fixed(r.over_bare(), 2).c_str(), Fixed(r.daemon_cores, 2).c_str(),
                Fixed(r.client_cores, 2).c_str());
  }
  for (const Row& r : rows) {
    if (r.errors > 0) {
      std::printf("%s batch %lld, %d clients: %lld errors, first: %s\n", r.transport.c_str(),
                  static_cast<long long>(r.batch), r.clients, static_cast<long long>(r.errors),
                  r.first_error.c_str());
    }
  }
}

void PrintJsonRow(const Row& r, const std::string& model, const std::string& precision,
                  int threads) {
  std::printf(
      "{\"kind\":\"row\",\"model\":\"%s\",\"precision\":\"%s\",\"served\":\"%s\","
      "\"transport\":\"%s\",\"batch\":%lld,\"clients\":%d,\"seconds\":%s,\"requests\":%lld,"
      "\"errors\":%lld,\"requests_per_s\":%s,\"items_per_s\":%s,\"p50_ms\":%s,\"p99_ms\":%s,"
      "\"mean_batch\":%s,\"bare_items_per_s\":%s,\"over_bare\":%s,\"daemon_cores\":%s,"
      "\"client_cores\":%s,\"intra_op_threads\":%d}\n",
      model.c_str(), precision.c_str(), r.served.c_str(), r.transport.c_str(),
      static_cast<long long>(r.batch), r.clients, JsonNumber(r.seconds).c_str(),
      static_cast<long long>(r.requests), static_cast<long long>(r.errors),
      JsonNumber(r.requests_per_s).c_str(), JsonNumber(r.items_per_s).c_str(),
      JsonNumber(r.p50_ms).c_str(), JsonNumber(r.p99_ms).c_str(), JsonNumber(r.mean_batch).c_str(),
      JsonNumber(r.bare_items_per_s).c_str(), JsonNumber(r.over_bare()).c_str(),
      JsonNumber(r.daemon_cores).c_str(), JsonNumber(r.client_cores).c_str(), threads);
}

struct Goal {
  std::string name;
  double value = NAN;
  double target = NAN;
  bool met() const { return value >= target; }
};

// The targets the rows can speak to: gRPC at batch >= 16 with the most
// clients against bare, and batching on against off.
std::vector<Goal> Goals(const std::vector<Row>& rows, const Row* batched, const Row* unbatched) {
  int most_clients = 0;
  for (const Row& r : rows) most_clients = std::max(most_clients, r.clients);
  std::vector<Goal> goals;
  for (const Row& r : rows) {
    if (r.transport == "grpc" && r.batch >= kServedTargetMinBatch && r.clients == most_clients) {
      goals.push_back(
          {absl::StrCat("grpc batch ", r.batch, ", ", r.clients, " clients: items/s over bare"),
           r.over_bare(), kServedOverBareTarget});
    }
  }
  if (batched != nullptr && unbatched != nullptr) {
    goals.push_back({absl::StrCat("dynamic batching, ", batched->clients,
                                  " clients x 1 item: items/s over max_batch_size 1"),
                     batched->items_per_s / unbatched->items_per_s, kBatchingTarget});
  }
  return goals;
}

struct Plan {
  std::vector<int64_t> batches;
  std::vector<int64_t> clients;
  std::vector<std::string> transports;
  int batching_clients = 0;
};

absl::StatusOr<Plan> ReadFlags() {
  Plan plan;
  auto batches = ParseInts(absl::GetFlag(FLAGS_batch_sizes), "batch_sizes", 1, 64);
  if (!batches.ok()) return batches.status();
  auto clients = ParseInts(absl::GetFlag(FLAGS_clients), "clients", 1, 256);
  if (!clients.ok()) return clients.status();
  plan.batches = *batches;
  plan.clients = *clients;
  for (const std::string& t : absl::GetFlag(FLAGS_transports)) {
    if (t != "grpc" && t != "rest-json" && t != "rest-binary") {
      return absl::InvalidArgumentError(
          absl::StrCat("--transports: \"", t, "\" is not one of grpc, rest-json, rest-binary"));
    }
    plan.transports.push_back(t);
  }
  plan.batching_clients = absl::GetFlag(FLAGS_batching_clients);
  if (plan.batching_clients < 0 || absl::GetFlag(FLAGS_seconds) <= 0) {
    return absl::InvalidArgumentError("--batching_clients must be >= 0 and --seconds > 0");
  }
  if (absl::GetFlag(FLAGS_model) != "mlp" && absl::GetFlag(FLAGS_model) != "cnn") {
    return absl::InvalidArgumentError(
        absl::StrCat("--model must be mlp or cnn, got ", absl::GetFlag(FLAGS_model)));
  }
  return plan;
}

// ExportModel of `job` as `name` at --precision; the exported config.
absl::StatusOr<v1::ModelConfig> Export(testing::InferenceClient& client, const v1::Job& job,
                                       const std::string& name, std::optional<int> max_batch_size) {
  v1::ModelVersionStatus exported;
  const grpc::Status s =
      client.Export(job.id(), name, absl::GetFlag(FLAGS_precision), &exported, max_batch_size);
  if (!s.ok()) return absl::UnknownError(absl::StrCat("export ", name, ": ", s.error_message()));
  return exported.config();
}

// One bare row per batch size, on the version mantissad serves.
absl::StatusOr<std::vector<Row>> MeasureBare(const v1::Job& job, const v1::ModelConfig& config,
                                             const std::vector<int64_t>& batches) {
  auto servable = LoadInProcess(job, config);
  if (!servable.ok()) return servable.status();
  std::vector<Row> rows;
  for (int64_t batch : batches) {
    auto row = BareForward(**servable, batch);
    if (!row.ok()) return row.status();
    rows.push_back(*row);
  }
  (*servable)->Stop();
  return rows;
}

Row MeasureServed(const Target& target, const std::string& transport, int64_t batch, int clients,
                  double bare_items_per_s) {
  Row row;
  row.transport = transport;
  row.served = target.model;
  row.batch = batch;
  row.clients = clients;
  row.bare_items_per_s = bare_items_per_s;
  Drive(MakeCalls(transport, target, batch), clients, target, row);
  return row;
}

void Report(const std::vector<Row>& rows, const std::vector<Row>& batching, int threads) {
  const std::string model = absl::GetFlag(FLAGS_model);
  const std::string precision = absl::GetFlag(FLAGS_precision);
  std::printf(
      "\nServing %s %s on loopback: %.1f s per row; %d intra-op threads, %u cores; clients, "
      "daemon and bare loop share the cores\n\n",
      model.c_str(), precision.c_str(), absl::GetFlag(FLAGS_seconds), threads,
      std::thread::hardware_concurrency());
  PrintTable(rows);
  const Row* on = batching.size() == 2 ? &batching[0] : nullptr;
  const Row* off = batching.size() == 2 ? &batching[1] : nullptr;
  if (on != nullptr) {
    std::printf("\nDynamic batching, one item per request:\n\n");
    PrintTable(batching);
    std::printf("\nbatching on / off: %sx\n", Fixed(on->items_per_s / off->items_per_s, 2).c_str());
  }
  const std::vector<Goal> goals = Goals(rows, on, off);
  std::printf("\nTargets (reported, not asserted):\n");
  for (const Goal& g : goals) {
    std::printf("  %s: %s (target >= %s): %s\n", g.name.c_str(), Fixed(g.value, 2).c_str(),
                Fixed(g.target, 2).c_str(), g.met() ? "met" : "missed");
  }
  if (!absl::GetFlag(FLAGS_json)) return;
  for (const Row& r : rows) PrintJsonRow(r, model, precision, threads);
  for (const Row& r : batching) PrintJsonRow(r, model, precision, threads);
  for (const Goal& g : goals) {
    std::printf("{\"kind\":\"target\",\"name\":\"%s\",\"value\":%s,\"target\":%s,\"met\":%s}\n",
                g.name.c_str(), JsonNumber(g.value).c_str(), JsonNumber(g.target).c_str(),
                g.met() ? "true" : "false");
  }
}

// Fills `target`'s request side from the exported config.
void Describe(const v1::ModelConfig& config, Target& target) {
  target.model = config.name();
  target.input = config.inputs(0).name();
  target.output = config.outputs(0).name();
  target.item_shape.assign(config.inputs(0).shape().begin(), config.inputs(0).shape().end());
}

// One-item requests from `clients` clients to the model as exported, then to
// the `unbatched` export (max_batch_size 1: every forward is one request).
std::vector<Row> MeasureBatching(Target target, const std::string& unbatched, int clients) {
  std::vector<Row> rows;
  rows.push_back(MeasureServed(target, "grpc", 1, clients, NAN));
  rows.back().label = "grpc, batching on";
  target.model = unbatched;
  rows.push_back(MeasureServed(target, "grpc", 1, clients, NAN));
  rows.back().label = "grpc, max_batch_size 1";
  return rows;
}

int Run() {
  auto plan = ReadFlags();
  if (!plan.ok()) return Fail("flags", plan.status());
  // As mantissad does, so that the bare loop runs under the same conditions.
  ConfigureHostAllocator();
  const int threads = ConfigureIntraOpThreads(absl::GetFlag(FLAGS_intra_op_threads));
  auto daemon = StartDaemon();
  if (!daemon.ok()) return Fail("starting mantissad", daemon.status());
  Target& target = daemon->target;
  if (target.http_host.empty()) {
    plan->transports.erase(std::remove_if(plan->transports.begin(), plan->transports.end(),
                                          [](const std::string& t) { return t != "grpc"; }),
                           plan->transports.end());
  }
  testing::InferenceClient client(target.grpc_address);
  if (absl::Status s = WaitReady(client); !s.ok()) return Fail("mantissad", s);
  const std::string model = absl::GetFlag(FLAGS_model);
  auto job = Train(client, model);
  if (!job.ok()) return Fail("training", job.status());
  auto config = Export(client, *job, absl::StrCat("bench-", model), std::nullopt);
  if (!config.ok()) return Fail("export", config.status());
  Describe(*config, target);
  const std::string unbatched = absl::StrCat("bench-", model, "-unbatched");
  if (plan->batching_clients > 0) {
    auto other = Export(client, *job, unbatched, /*max_batch_size=*/1);
    if (!other.ok()) return Fail("export", other.status());
  }
  for (int64_t batch : plan->batches) {
    absl::Status agree = CheckAnswersAgree(target, plan->transports, batch);
    if (!agree.ok()) return Fail("answers", agree);
  }
  auto bare = MeasureBare(*job, *config, plan->batches);
  if (!bare.ok()) return Fail("bare forward", bare.status());

  std::vector<Row> rows;
  for (const Row& floor : *bare) {
    rows.push_back(floor);
    for (const std::string& transport : plan->transports) {
      for (int64_t clients : plan->clients) {
        rows.push_back(MeasureServed(target, transport, floor.batch, clients, floor.items_per_s));
      }
    }
  }
  std::vector<Row> batching;
  if (plan->batching_clients > 0) {
    batching = MeasureBatching(target, unbatched, plan->batching_clients);
  }
  Report(rows, batching, threads);
  if (daemon->process != nullptr && daemon->process->Terminate() != 0) {
    return Fail("mantissad",
                absl::InternalError("did not exit cleanly: " + daemon->process->Log()));
  }
  // A benchmark that measured failures or nothing at all must not pass a smoke test.
  for (const std::vector<Row>* list : {&rows, &batching}) {
    for (const Row& r : *list) {
      if (r.errors > 0 || r.requests == 0) return 1;
    }
  }
  return 0;
}

}  // namespace
}  // namespace mantissa

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Measures serving against a bare LibTorch forward on the same model: gRPC, REST JSON and "
      "REST binary with concurrent clients, and dynamic batching on against off.\n"
      "Usage: mantissa_inference_benchmark [--model=mlp|cnn] [--precision=32-true] "
      "[--batch_sizes=1,16,64] [--clients=1,16] [--seconds=S] [--json] "
      "[--server=HOST:PORT --metrics=HOST:PORT --http=HOST:PORT]");
  absl::ParseCommandLine(argc, argv);
  return mantissa::Run();
}
