// mantissa_inference_benchmark: ModelInfer throughput and latency through a
// real mantissad on loopback, against a plain LibTorch forward loop on the
// same model version, so that the service's overhead reads as a ratio.
//
//   mantissa_inference_benchmark [--model=mlp|cnn] [--clients=16] [--seconds=5]
//                                [--request_batch=1] [--json] [--server=HOST:PORT
//                                --metrics=HOST:PORT]
//
// Trains a small model on Fashion-MNIST, exports it as bf16-true and 32-true,
// and for each drives ModelInfer from --clients synchronous clients (one
// connection each) for --seconds. Then it loads the same repository version
// in this process (Servable::Load, the daemon's own code) and times
// Servable::Run, one forward under InferenceMode, at the mean batch size the
// daemon's batcher formed and at --request_batch. Clients, daemon and the
// plain loop share this machine's cores: read the ratio with that in mind.

#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "server/runtime/torch_runtime.h"
#include "server/serving/model_repository.h"
#include "server/serving/servable.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/inference_client.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/temp_dir.h"

ABSL_FLAG(std::string, model, "mlp", "mlp | cnn, trained briefly on Fashion-MNIST.");
ABSL_FLAG(int, clients, 16, "Concurrent synchronous ModelInfer clients.");
ABSL_FLAG(double, seconds, 5, "Measured seconds per served model (after a short warm-up).");
ABSL_FLAG(int, request_batch, 1, "Items per request.");
ABSL_FLAG(int, steps, 100, "Training steps of the benchmarked model.");
// One by default: with more OpenMP threads than free cores (the clients and
// the daemon share them) every parallel region can stall for a scheduler
// time slice, which measured the plain cnn loop 3x slower on 2 busy cores.
ABSL_FLAG(int, intra_op_threads, 1,
          "LibTorch intra-op threads of the daemon and of the plain loop; 0 = one per core.");
ABSL_FLAG(std::string, server, "",
          "An existing mantissad (HOST:PORT) instead of starting one; it must share this "
          "machine's file system (the plain loop reads its repository).");
ABSL_FLAG(std::string, metrics, "",
          "With --server: its /metrics address (HOST:PORT), for the mean batch size.");
ABSL_FLAG(bool, json, false, "Also print one JSON line per row.");

namespace mantissa {
namespace {

using Clock = std::chrono::steady_clock;

struct Row {
  std::string precision;
  int64_t requests = 0;
  int64_t errors = 0;
  std::string first_error;
  double items_per_s = 0;
  double p50_ms = 0;
  double p99_ms = 0;
  double mean_batch = 0;  // NaN without metrics
  int64_t plain_batch = 0;
  double plain_items_per_s = 0;  // at plain_batch
  double plain_request_batch_items_per_s = 0;
  double plain_ms_per_forward = 0;
};

absl::StatusOr<std::string> Scrape(const std::string& address) {
  testing::CommandResult r = testing::RunCommand(
      {"/usr/bin/curl", "-sSf", "--max-time", "10", absl::StrCat("http://", address, "/metrics")});
  if (r.exit_code != 0) return absl::UnavailableError(absl::StrCat("curl: ", r.err));
  return r.out;
}

// (sum, count) of the model's batch-size histogram; nullopt without metrics.
std::optional<std::pair<double, double>> BatchHistogram(const std::string& metrics_address,
                                                        const std::string& model) {
  if (metrics_address.empty()) return std::nullopt;
  auto text = Scrape(metrics_address);
  if (!text.ok()) return std::nullopt;
  const std::string label = absl::StrCat("model=\"", model, "\"");
  auto sum = testing::FindSample(*text, "mantissa_inference_batch_size_sum", {label});
  auto count = testing::FindSample(*text, "mantissa_inference_batch_size_count", {label});
  if (!sum || !count) return std::pair<double, double>(0, 0);
  return std::pair<double, double>(*sum, *count);
}

double Percentile(std::vector<double>& values, double q) {
  if (values.empty()) return NAN;
  const size_t k = std::min(values.size() - 1, static_cast<size_t>(q * values.size()));
  std::nth_element(values.begin(), values.begin() + k, values.end());
  return values[k];
}

// Drives `model` from `clients` threads; fills the service half of `row`.
void DriveService(const std::string& address, const std::string& metrics_address,
                  const std::string& model, const std::vector<int64_t>& item_shape, Row& row) {
  const int clients = absl::GetFlag(FLAGS_clients);
  const int64_t batch = absl::GetFlag(FLAGS_request_batch);
  const absl::Duration measured = absl::Seconds(absl::GetFlag(FLAGS_seconds));
  std::vector<int64_t> shape = {batch};
  shape.insert(shape.end(), item_shape.begin(), item_shape.end());
  int64_t elements = 1;
  for (int64_t d : shape) elements *= d;

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
      testing::InferenceClient client(address, /*own_connection=*/true);
      const inference::ModelInferRequest request = testing::FloatRequest(
          model, "input", shape, testing::PseudoRandomFloats(elements, 1000 + c), "FP32");
      inference::ModelInferResponse response;
      PerClient& mine = results[c];
      while (!stop.load()) {
        const int64_t begin = now_ns();
        const grpc::Status status = client.Infer(request, &response, absl::Seconds(30));
        const int64_t end = now_ns();
        if (end < window_start.load() || end > window_end.load()) continue;
        if (status.ok()) {
          mine.latencies_ms.push_back((end - begin) / 1e6);
        } else if (mine.errors++ == 0) {
          mine.first_error = absl::StrCat(status.error_code(), ": ", status.error_message());
        }
      }
    });
  }
  absl::SleepFor(std::min(absl::Seconds(1), measured / 2));  // warm-up
  const auto before = BatchHistogram(metrics_address, model);
  window_start = now_ns();
  absl::SleepFor(measured);
  window_end = now_ns();
  const auto after = BatchHistogram(metrics_address, model);
  stop = true;
  for (std::thread& t : threads) t.join();

  std::vector<double> latencies;
  for (const PerClient& r : results) {
    latencies.insert(latencies.end(), r.latencies_ms.begin(), r.latencies_ms.end());
    row.errors += r.errors;
    if (row.first_error.empty()) row.first_error = r.first_error;
  }
  row.requests = static_cast<int64_t>(latencies.size());
  const double seconds = (window_end.load() - window_start.load()) / 1e9;
  row.items_per_s = row.requests * batch / seconds;
  row.p50_ms = Percentile(latencies, 0.50);
  row.p99_ms = Percentile(latencies, 0.99);
  row.mean_batch = NAN;
  if (before && after && after->second > before->second) {
    row.mean_batch = (after->first - before->first) / (after->second - before->second);
  }
}

// Items per second of Servable::Run at `batch`, for about `duration`.
absl::StatusOr<std::pair<double, double>> PlainForward(Servable& servable, int64_t batch,
                                                       absl::Duration duration) {
  std::vector<int64_t> shape = {batch};
  for (int64_t d : servable.inputs()[0].shape()) shape.push_back(d);
  // Inputs already in the model's dtype: the loop times the forward alone.
  const std::vector<torch::Tensor> inputs = {
      torch::randn(shape, torch::TensorOptions().dtype(torch::kFloat32)).to(servable.dtype())};
  for (int i = 0; i < 3; ++i) {
    auto warm = servable.Run(inputs);
    if (!warm.ok()) return warm.status();
  }
  int64_t iterations = 0;
  const Clock::time_point start = Clock::now();
  const Clock::time_point stop = start + absl::ToChronoNanoseconds(duration);
  Clock::time_point now = start;
  while (now < stop || iterations < 3) {
    auto out = servable.Run(inputs);
    if (!out.ok()) return out.status();
    ++iterations;
    now = Clock::now();
  }
  const double seconds = std::chrono::duration<double>(now - start).count();
  return std::make_pair(iterations * batch / seconds, seconds * 1e3 / iterations);
}

v1::JobSpec BenchmarkSpec(const std::string& model) {
  v1::JobSpec spec;
  spec.set_model(model);
  spec.set_dataset("fashion-mnist");
  (*spec.mutable_dataset_options())["train_limit"] = "4096";
  (*spec.mutable_dataset_options())["test_limit"] = "512";
  if (model == "mlp") {
    (*spec.mutable_model_options())["hidden"] = "256,128";
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

std::string JsonNumber(double v) { return std::isnan(v) ? "null" : absl::StrFormat("%.6g", v); }

int Fail(const std::string& what, const absl::Status& status) {
  std::fprintf(stderr, "mantissa_inference_benchmark: %s: %s\n", what.c_str(),
               status.ToString().c_str());
  return 1;
}

int Run() {
  const std::string model = absl::GetFlag(FLAGS_model);
  if (model != "mlp" && model != "cnn") {
    return Fail("--model", absl::InvalidArgumentError("must be mlp or cnn, got " + model));
  }
  if (absl::GetFlag(FLAGS_clients) < 1 || absl::GetFlag(FLAGS_request_batch) < 1 ||
      absl::GetFlag(FLAGS_seconds) <= 0) {
    return Fail("flags", absl::InvalidArgumentError(
                             "--clients and --request_batch must be >= 1, --seconds > 0"));
  }
  // As mantissad does, so that the plain loop runs under the same conditions.
  ConfigureHostAllocator();
  const int threads = ConfigureIntraOpThreads(absl::GetFlag(FLAGS_intra_op_threads));

  // The daemon: given, or a fresh one on a temporary state directory.
  std::unique_ptr<testing::TempDir> temp;
  std::unique_ptr<testing::DaemonProcess> daemon;
  std::string address = absl::GetFlag(FLAGS_server);
  std::string metrics_address = absl::GetFlag(FLAGS_metrics);
  if (address.empty()) {
    temp = std::make_unique<testing::TempDir>();
    auto started = testing::DaemonProcess::Start(
        {.state_dir = temp->path(),
         .extra_flags = {
             absl::StrCat("--intra_op_threads=", absl::GetFlag(FLAGS_intra_op_threads))}});
    if (!started.ok()) return Fail("starting mantissad", started.status());
    daemon = std::move(*started);
    address = daemon->grpc_address();
    metrics_address = absl::StrCat("127.0.0.1:", daemon->metrics_port());
  }
  testing::InferenceClient client(address);
  for (absl::Time deadline = absl::Now() + absl::Seconds(60);;) {
    auto ready = client.ServerReady();
    if (ready.ok() && *ready) break;
    if (absl::Now() > deadline) return Fail("mantissad", absl::DeadlineExceededError("not ready"));
    absl::SleepFor(absl::Milliseconds(20));
  }

  auto training = v1::TrainingService::NewStub(client.channel());
  const testing::SubmitOutcome submitted = testing::Submit(*training, BenchmarkSpec(model));
  if (!submitted.status.ok()) {
    return Fail("submit", absl::UnknownError(submitted.status.error_message()));
  }
  auto job = testing::WaitForJob(*training, submitted.job.id(), testing::IsTerminal);
  if (!job.ok()) return Fail("training", job.status());
  if (job->state() != v1::SUCCEEDED) {
    return Fail("training",
                absl::InternalError(absl::StrCat(
                    "job ", job->id(), " ", v1::JobState_Name(job->state()), ": ", job->error())));
  }
  // <state_dir>/jobs/<id>/checkpoint.pt: the repository is <state_dir>/models.
  const std::filesystem::path state_dir =
      std::filesystem::path(job->checkpoint().path()).parent_path().parent_path().parent_path();
  auto repository = ModelRepository::Create({.root = (state_dir / "models").string()});
  if (!repository.ok()) return Fail("repository", repository.status());

  std::vector<Row> rows;
  for (const std::string precision : {"bf16-true", "32-true"}) {
    const std::string name =
        absl::StrCat("bench-", model, precision == "32-true" ? "-fp32" : "-bf16");
    v1::ModelVersionStatus exported;
    grpc::Status s = client.Export(job->id(), name, precision, &exported);
    if (!s.ok()) return Fail("export " + name, absl::UnknownError(s.error_message()));
    const v1::ModelConfig& config = exported.config();
    const std::vector<int64_t> item_shape(config.inputs(0).shape().begin(),
                                          config.inputs(0).shape().end());

    Row row;
    row.precision = precision;
    DriveService(address, metrics_address, name, item_shape, row);

    // The same version, in this process.
    Servable::Options options;
    auto on_disk = (*repository)->ReadConfig(name, config.version());
    if (!on_disk.ok()) return Fail("reading " + name, on_disk.status());
    options.config = *on_disk;
    options.version_dir = (*repository)->VersionDir(name, config.version());
    options.calibration_items = 64;
    auto servable = Servable::Load(options);
    if (!servable.ok()) return Fail("loading " + name + " in-process", servable.status());
    const absl::Duration plain_time =
        std::min(absl::Seconds(2), absl::Seconds(absl::GetFlag(FLAGS_seconds)));
    row.plain_batch = std::isnan(row.mean_batch)
                          ? absl::GetFlag(FLAGS_request_batch)
                          : std::max<int64_t>(1, std::llround(row.mean_batch));
    auto plain = PlainForward(**servable, row.plain_batch, plain_time);
    if (!plain.ok()) return Fail("plain forward", plain.status());
    row.plain_items_per_s = plain->first;
    row.plain_ms_per_forward = plain->second;
    auto plain_request = PlainForward(**servable, absl::GetFlag(FLAGS_request_batch), plain_time);
    if (!plain_request.ok()) return Fail("plain forward", plain_request.status());
    row.plain_request_batch_items_per_s = plain_request->first;
    (*servable)->Stop();
    rows.push_back(row);
  }

  std::printf(
      "\nModelInfer on loopback: model %s, %d clients, request batch %d, %.1f s each; "
      "%d intra-op threads, %u cores\n",
      model.c_str(), absl::GetFlag(FLAGS_clients), absl::GetFlag(FLAGS_request_batch),
      absl::GetFlag(FLAGS_seconds), threads, std::thread::hardware_concurrency());
  std::printf("%-10s %9s %7s %11s %8s %8s %10s | %11s %11s %9s | %13s\n", "precision", "requests",
              "errors", "items/s", "p50 ms", "p99 ms", "mean batch", "plain batch", "plain it/s",
              "svc/plain", "plain@req it/s");
  for (const Row& r : rows) {
    std::printf("%-10s %9lld %7lld %11s %8s %8s %10s | %11lld %11s %9s | %13s\n",
                r.precision.c_str(), static_cast<long long>(r.requests),
                static_cast<long long>(r.errors), Fixed(r.items_per_s, 0).c_str(),
                Fixed(r.p50_ms, 3).c_str(), Fixed(r.p99_ms, 3).c_str(),
                Fixed(r.mean_batch, 2).c_str(), static_cast<long long>(r.plain_batch),
                Fixed(r.plain_items_per_s, 0).c_str(),
                Fixed(r.items_per_s / r.plain_items_per_s, 3).c_str(),
                Fixed(r.plain_request_batch_items_per_s, 0).c_str());
    if (r.errors > 0) std::printf("  first error: %s\n", r.first_error.c_str());
  }
  if (absl::GetFlag(FLAGS_json)) {
    for (const Row& r : rows) {
      std::printf(
          "{\"model\":\"%s\",\"precision\":\"%s\",\"clients\":%d,\"request_batch\":%d,"
          "\"seconds\":%s,\"requests\":%lld,\"errors\":%lld,\"items_per_s\":%s,\"p50_ms\":%s,"
          "\"p99_ms\":%s,\"mean_batch\":%s,\"plain_batch\":%lld,\"plain_items_per_s\":%s,"
          "\"plain_ms_per_forward\":%s,\"plain_request_batch_items_per_s\":%s,"
          "\"service_over_plain\":%s,\"intra_op_threads\":%d}\n",
          model.c_str(), r.precision.c_str(), absl::GetFlag(FLAGS_clients),
          absl::GetFlag(FLAGS_request_batch), JsonNumber(absl::GetFlag(FLAGS_seconds)).c_str(),
          static_cast<long long>(r.requests), static_cast<long long>(r.errors),
          JsonNumber(r.items_per_s).c_str(), JsonNumber(r.p50_ms).c_str(),
          JsonNumber(r.p99_ms).c_str(), JsonNumber(r.mean_batch).c_str(),
          static_cast<long long>(r.plain_batch), JsonNumber(r.plain_items_per_s).c_str(),
          JsonNumber(r.plain_ms_per_forward).c_str(),
          JsonNumber(r.plain_request_batch_items_per_s).c_str(),
          JsonNumber(r.items_per_s / r.plain_items_per_s).c_str(), threads);
    }
  }
  if (daemon != nullptr && daemon->Terminate() != 0) {
    return Fail("mantissad", absl::InternalError("did not exit cleanly: " + daemon->Log()));
  }
  int64_t errors = 0, requests = 0;
  for (const Row& r : rows) {
    errors += r.errors;
    requests += r.requests;
  }
  // A benchmark that measured failures or nothing at all must not pass a smoke test.
  return errors == 0 && requests > 0 ? 0 : 1;
}

}  // namespace
}  // namespace mantissa

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Drives ModelInfer on a real mantissad with concurrent clients and compares it with a plain "
      "LibTorch forward loop on the same model.\n"
      "Usage: mantissa_inference_benchmark [--model=mlp|cnn] [--clients=N] [--seconds=S] "
      "[--request_batch=B] [--json] [--server=HOST:PORT --metrics=HOST:PORT]");
  absl::ParseCommandLine(argc, argv);
  return mantissa::Run();
}
