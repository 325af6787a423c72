// mantissa_data_parallel_benchmark: how data-parallel jobs scale on one
// machine. Starts a real mantissad (on the CPU by default) and trains the mlp
// reference workload of mantissa_train_benchmark, at a CPU-sized --scale, once
// per --devices value with the same per-rank batch, so the global batch grows
// with the ranks as it does under Fabric(devices=N).
//
//   mantissa_data_parallel_benchmark [--devices=1,2] [--scale=0.25] [--batch_size=256]
//                                    [--steps=40] [--progress_every=5] [--intra_op_threads=0]
//                                    [--precision=32-true] [--device=cpu] [--repeats=1] [--json]
//
// items/s is the job's own figure: the trainer's PROGRESS reports count the
// items of every rank over each reporting interval. The benchmark takes the
// median over the intervals after --warmup_intervals (start-up, the first
// collectives), and prints items/s per world size, the speed-up against the
// first world size and the scaling efficiency (speed-up / rank ratio), with
// --repeats > 1 the median over the repeats, which alternate. The
// daemon trains a one-rank job in its own process on all its intra-op threads
// and gives each of N ranks max(1, threads / N): on the CPU the ranks share
// the cores the single process had, so read the speed-up with that in mind.
// The synthetic classes overlap (--noise), so the loss stays away from 0,
// where denormal gradients would dominate the timing. Nothing here asserts a
// figure; it fails only when a job does not succeed.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <utility>
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
#include "absl/time/time.h"
#include "grpcpp/client_context.h"
#include "mantissa/v1/training.grpc.pb.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/temp_dir.h"

ABSL_FLAG(std::string, devices, "1,2", "Comma-separated JobSpec.devices values, one job each.");
ABSL_FLAG(double, scale, 0.25,
          "In (0, 1]: the mlp's widths as mantissa_train_benchmark scales them (1024 -> 4096 x4 "
          "-> 10 at 1; 256 -> 1024 x4 -> 10 at 0.25).");
ABSL_FLAG(double, noise, 30,
          "The synthetic dataset's noise: enough that the classes overlap and the loss stays well "
          "above 0. On well-separated classes the loss reaches 0 within a few steps, and the "
          "gradients' denormal floats then slow the CPU's arithmetic by orders of magnitude.");
ABSL_FLAG(int64_t, batch_size, 256, "JobSpec.batch_size: items per rank per step.");
ABSL_FLAG(int64_t, steps, 40, "Steps per job.");
ABSL_FLAG(int64_t, progress_every, 5, "JobSpec.progress_every_n_steps: one interval per report.");
ABSL_FLAG(int, warmup_intervals, 1, "Leading progress intervals left out of the median.");
ABSL_FLAG(int, intra_op_threads, 0,
          "The daemon's --intra_op_threads; 0 = one per core. Each of N ranks gets "
          "max(1, threads / N).");
ABSL_FLAG(std::string, precision, "32-true", "JobSpec.precision of every job.");
ABSL_FLAG(std::string, device, "cpu", "The daemon's --device.");
ABSL_FLAG(int, job_timeout_seconds, 600, "Give up on a job after this long.");
ABSL_FLAG(int, repeats, 1, "Runs per world size, alternating between them.");
ABSL_FLAG(bool, json, false, "Also print one JSON line per job.");

namespace mantissa {
namespace {

// As mantissa_train_benchmark scales the reference widths: multiples of 16.
int64_t ScaledWidth(int64_t width, double scale) {
  const double scaled = std::ceil(static_cast<double>(width) * scale / 16) * 16;
  return std::max<int64_t>(16, static_cast<int64_t>(scaled));
}

struct Workload {
  int64_t features = 0;
  int64_t width = 0;
  std::string Describe() const { return absl::StrFormat("mlp %d -> %d x4 -> 10", features, width); }
};

v1::JobSpec MlpSpec(const Workload& workload, int devices) {
  const int64_t batch = absl::GetFlag(FLAGS_batch_size);
  const int64_t steps = absl::GetFlag(FLAGS_steps);
  v1::JobSpec spec;
  spec.set_name(absl::StrCat("dp-benchmark-", devices));
  spec.set_model("mlp");
  (*spec.mutable_model_options())["hidden"] =
      absl::StrJoin({workload.width, workload.width, workload.width, workload.width}, ",");
  spec.set_dataset("synthetic");
  auto& data = *spec.mutable_dataset_options();
  data["features"] = absl::StrCat(workload.features);
  data["classes"] = "10";
  data["noise"] = absl::StrCat(absl::GetFlag(FLAGS_noise));
  // Every step gets items of its own, as in a real epoch.
  data["train_size"] = absl::StrCat(batch * devices * steps);
  data["test_size"] = "0";
  spec.set_batch_size(batch);
  spec.set_devices(devices);
  spec.set_steps(steps);
  spec.set_precision(absl::GetFlag(FLAGS_precision));
  spec.set_optimizer("adamw");
  spec.set_seed(1);
  spec.set_progress_every_n_steps(absl::GetFlag(FLAGS_progress_every));
  spec.set_memory_baseline_steps(0);
  spec.mutable_eval()->set_disabled(true);
  return spec;
}

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

struct Run {
  int devices = 0;
  int threads_per_rank = 0;
  v1::Job job;  // as it ended
  int intervals = 0;
  double items_per_s = 0;  // median over the steady intervals
  double step_ms = 0;
};

// Follows the job's events until it ends; the PROGRESS reports' figures, one
// per reported step.
absl::StatusOr<v1::Job> Follow(v1::TrainingService::Stub& stub, const std::string& id,
                               std::vector<v1::Progress>& reports) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(absl::GetFlag(FLAGS_job_timeout_seconds)));
  v1::WatchJobRequest request;
  request.set_job_id(id);
  std::unique_ptr<grpc::ClientReader<v1::JobEvent>> reader = stub.WatchJob(&context, request);
  v1::JobEvent event;
  v1::Job last;
  while (reader->Read(&event)) {
    last = event.job();
    const v1::Progress& progress = event.job().progress();
    if (event.type() == v1::JobEvent::PROGRESS &&
        (reports.empty() || progress.step() > reports.back().step())) {
      reports.push_back(progress);
    }
  }
  const grpc::Status status = reader->Finish();
  if (!status.ok()) {
    return absl::UnavailableError(absl::StrCat("watching job ", id, ": ", status.error_message()));
  }
  return last;
}

absl::StatusOr<Run> Measure(v1::TrainingService::Stub& stub, const Workload& workload, int devices,
                            int daemon_threads) {
  const testing::SubmitOutcome submitted = testing::Submit(stub, MlpSpec(workload, devices));
  if (!submitted.status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(submitted.status.error_code()),
                        absl::StrCat("devices=", devices, ": ", submitted.status.error_message()));
  }
  std::vector<v1::Progress> reports;
  absl::StatusOr<v1::Job> job = Follow(stub, submitted.job.id(), reports);
  if (!job.ok()) return job.status();
  if (job->state() != v1::SUCCEEDED) {
    return absl::InternalError(absl::StrCat("devices=", devices, ": job ", job->id(), " ",
                                            v1::JobState_Name(job->state()), ": ", job->error()));
  }
  Run run;
  run.devices = devices;
  run.threads_per_rank = devices == 1 ? daemon_threads : std::max(1, daemon_threads / devices);
  run.job = *job;
  // Too few reports to leave the warm-up out (tiny smoke runs): take them all.
  const size_t skip = reports.size() > static_cast<size_t>(absl::GetFlag(FLAGS_warmup_intervals))
                          ? absl::GetFlag(FLAGS_warmup_intervals)
                          : 0;
  std::vector<double> items_per_s;
  std::vector<double> step_seconds;
  for (size_t i = skip; i < reports.size(); ++i) {
    items_per_s.push_back(reports[i].items_per_second());
    step_seconds.push_back(reports[i].step_seconds());
  }
  if (items_per_s.empty()) {
    return absl::InternalError(
        absl::StrCat("devices=", devices, ": job ", job->id(), " sent no PROGRESS event"));
  }
  run.intervals = static_cast<int>(items_per_s.size());
  run.items_per_s = Median(items_per_s);
  run.step_ms = Median(step_seconds) * 1e3;
  return run;
}

// The runs of one world size over the repeats.
struct Row {
  std::vector<Run> runs;
  double items_per_s() const { return Median(Collect(&Run::items_per_s)); }
  double step_ms() const { return Median(Collect(&Run::step_ms)); }
  std::vector<double> Collect(double Run::*field) const {
    std::vector<double> values;
    for (const Run& run : runs) values.push_back(run.*field);
    return values;
  }
};

void PrintTable(const std::vector<Row>& rows, const Workload& workload,
                const v1::GetCapabilitiesResponse& caps) {
  std::printf(
      "\n%s (mantissa_train_benchmark's mlp at scale %g), synthetic data (noise %g), batch %lld "
      "per rank, %s, AdamW, "
      "%lld steps, on %s with %d daemon intra-op threads; items/s: median of the progress "
      "intervals after %d warm-up, then of %d alternating repeats (range)\n",
      workload.Describe().c_str(), absl::GetFlag(FLAGS_scale), absl::GetFlag(FLAGS_noise),
      static_cast<long long>(absl::GetFlag(FLAGS_batch_size)),
      absl::GetFlag(FLAGS_precision).c_str(), static_cast<long long>(absl::GetFlag(FLAGS_steps)),
      caps.device().c_str(), caps.intra_op_threads(), absl::GetFlag(FLAGS_warmup_intervals),
      absl::GetFlag(FLAGS_repeats));
  std::printf("%5s %12s %12s %10s %15s %9s %9s %10s %10s\n", "ranks", "threads/rank",
              "global batch", "items/s", "range", "step ms", "speed-up", "efficiency",
              "final loss");
  const Row& base = rows.front();
  for (const Row& row : rows) {
    const Run& run = row.runs.back();
    const std::vector<double> items = row.Collect(&Run::items_per_s);
    const auto [low, high] = std::minmax_element(items.begin(), items.end());
    const double speedup = row.items_per_s() / base.items_per_s();
    const double efficiency = speedup * base.runs.back().devices / run.devices;
    std::printf("%5d %12d %12lld %10.0f %15s %9.2f %9.2f %9.0f%% %10.4g\n", run.devices,
                run.threads_per_rank, static_cast<long long>(run.job.global_batch_size()),
                row.items_per_s(), absl::StrFormat("%.0f-%.0f", *low, *high).c_str(), row.step_ms(),
                speedup, efficiency * 100, run.job.result().final_loss());
  }
}

void PrintJson(const Run& run, int repeat, const Workload& workload) {
  std::printf(
      "{\"workload\":\"%s\",\"precision\":\"%s\",\"repeat\":%d,\"devices\":%d,"
      "\"world_size\":%d,\"threads_per_rank\":%d,\"batch_per_rank\":%lld,"
      "\"global_batch\":%lld,\"intervals\":%d,\"items_per_s\":%.6g,\"step_ms\":%.6g,"
      "\"final_loss\":%.6g}\n",
      workload.Describe().c_str(), absl::GetFlag(FLAGS_precision).c_str(), repeat, run.devices,
      run.job.world_size(), run.threads_per_rank,
      static_cast<long long>(absl::GetFlag(FLAGS_batch_size)),
      static_cast<long long>(run.job.global_batch_size()), run.intervals, run.items_per_s,
      run.step_ms, run.job.result().final_loss());
  std::fflush(stdout);
}

int Fail(const std::string& what, const absl::Status& status) {
  std::fprintf(stderr, "mantissa_data_parallel_benchmark: %s: %s\n", what.c_str(),
               status.ToString().c_str());
  return 2;
}

absl::StatusOr<std::vector<int>> ParseDevices() {
  std::vector<int> devices;
  for (absl::string_view text :
       absl::StrSplit(absl::GetFlag(FLAGS_devices), ',', absl::SkipWhitespace())) {
    int value = 0;
    if (!absl::SimpleAtoi(text, &value) || value < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", text, "' is not a positive integer; e.g. --devices=1,2"));
    }
    devices.push_back(value);
  }
  if (devices.empty()) return absl::InvalidArgumentError("give at least one value, e.g. 1,2");
  return devices;
}

absl::StatusOr<v1::GetCapabilitiesResponse> Capabilities(v1::TrainingService::Stub& stub) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::GetCapabilitiesResponse caps;
  const grpc::Status status = stub.GetCapabilities(&context, {}, &caps);
  if (!status.ok()) return absl::UnavailableError(status.error_message());
  return caps;
}

int Main() {
  const double scale = absl::GetFlag(FLAGS_scale);
  if (!(scale > 0) || scale > 1) {
    return Fail("--scale",
                absl::InvalidArgumentError(absl::StrCat("must be in (0, 1], got ", scale)));
  }
  if (absl::GetFlag(FLAGS_repeats) < 1) {
    return Fail("--repeats", absl::InvalidArgumentError("must be >= 1"));
  }
  absl::StatusOr<std::vector<int>> devices = ParseDevices();
  if (!devices.ok()) return Fail("--devices", devices.status());
  const Workload workload{ScaledWidth(1024, scale), ScaledWidth(4096, scale)};

  testing::TempDir state;
  auto daemon = testing::DaemonProcess::Start(
      {.state_dir = state.path(),
       .extra_flags = {absl::StrCat("--intra_op_threads=", absl::GetFlag(FLAGS_intra_op_threads)),
                       absl::StrCat("--device=", absl::GetFlag(FLAGS_device))}});
  if (!daemon.ok()) return Fail("starting mantissad", daemon.status());
  std::unique_ptr<v1::TrainingService::Stub> stub = (*daemon)->NewStub();
  absl::StatusOr<v1::GetCapabilitiesResponse> caps = Capabilities(*stub);
  if (!caps.ok()) return Fail("GetCapabilities", caps.status());

  // Repeats alternate the world sizes, so that a change in the machine's
  // load lands on all of them.
  std::vector<Row> rows(devices->size());
  for (int repeat = 1; repeat <= absl::GetFlag(FLAGS_repeats); ++repeat) {
    for (size_t i = 0; i < devices->size(); ++i) {
      absl::StatusOr<Run> run = Measure(*stub, workload, (*devices)[i], caps->intra_op_threads());
      if (!run.ok()) {
        std::fprintf(stderr, "%s\n", (*daemon)->Log().c_str());
        return Fail("training", run.status());
      }
      if (absl::GetFlag(FLAGS_json)) PrintJson(*run, repeat, workload);
      rows[i].runs.push_back(std::move(*run));
    }
  }
  PrintTable(rows, workload, *caps);
  return (*daemon)->Terminate() == 0 ? 0 : 1;
}

}  // namespace
}  // namespace mantissa

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Trains the mlp reference workload through a real mantissad at each --devices value "
      "(same batch per rank) and prints items/s, speed-up and scaling efficiency.\n"
      "Usage: mantissa_data_parallel_benchmark [--devices=1,2] [--scale=0.25] "
      "[--batch_size=256] [--steps=40] [--progress_every=5] [--intra_op_threads=0] [--repeats=1] "
      "[--json]");
  absl::ParseCommandLine(argc, argv);
  return mantissa::Main();
}
