// mantissa_train_benchmark: the daemon's own training loop (Trainer::Create +
// Run, the code a submitted job runs) on the reference workloads of
// DESIGN.md's "Performance anchors", one JSON line per workload x precision,
// against Lightning Fabric's figures for the same workload on an H100.
//
//   mantissa_train_benchmark [--workloads=mlp,gpt] [--precisions=32-true,...]
//                            [--device=auto|cpu|cuda:N] [--warmup=5] [--steps=20]
//                            [--scale=1.0] [--json_only] [--profile=DIR]
//
// Data is synthetic and copied to the device once (Trainer::Options::
// data_on_device), the optimizer is AdamW with the daemon's defaults, and
// step_ms is the median wall time of --steps steps after --warmup, each
// synchronised with the device before its clock is read. The peak is the
// job's own figure (Job.memory, from the trainer's MemoryTracker: the CUDA
// caching allocator's peak, or the counting CPU allocator's), relative to
// what was allocated before the model was built, so the resident data set
// is not in it. Fabric's figures are printed only for full-size runs on a
// CUDA device: at --scale != 1 or on the CPU nothing is comparable.
//
// --profile=DIR records a PyTorch (Kineto) profile of each run's measured
// steps (the warm-up is left out) into DIR/<workload>-<precision>.trace.json
// and prints where the device's time went: on CUDA the top kernels and how
// much of the window the GPU was busy, which shows a launch-bound step. The
// profiler's overhead is in those runs' step times, so the table's figures
// come from a run without --profile.

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/json_format.h"
#include "server/common/status_macros.h"
#include "server/common/torch_compat.h"
#include "server/common/torch_status.h"
#include "server/jobs/job_runner.h"
#include "server/metrics/metrics.h"
#include "server/precision/precision_registry.h"
#include "server/runtime/device_capabilities.h"
#include "server/runtime/torch_runtime.h"
#include "server/training/job_spec_resolver.h"
#include "server/training/memory_tracker.h"
#include "server/training/trainer.h"
#include "tests/testing/fake_job_context.h"
#include "tests/training/kernel_profile.h"

ABSL_FLAG(std::string, workloads, "mlp,gpt", "Comma-separated: mlp, gpt.");
ABSL_FLAG(std::string, precisions, "",
          "Comma-separated precision values. Default: 32-true, 16-mixed, bf16-mixed, 16-true, "
          "bf16-true, plus transformer-engine where the device supports it. Values the device "
          "cannot run print a line with \"skipped\" and the resolver's reason.");
ABSL_FLAG(std::string, device, "auto", "auto (CUDA if present), cpu, cuda or cuda:N.");
ABSL_FLAG(int, warmup, 5, "Steps run before the measured ones.");
ABSL_FLAG(int, steps, 20, "Measured steps; step_ms is their median.");
ABSL_FLAG(double, scale, 1.0,
          "In (0, 1]: scales batch sizes, widths, GPT layers/heads/vocab/seq_len for runs on small "
          "machines (widths round up to multiples of 16; at 0.05 the mlp is 64 -> 208 x4 -> 10 "
          "with batch 410). Fabric's figures are null unless it is 1 on a CUDA device.");
ABSL_FLAG(int, memory_baseline_steps, 0,
          "JobSpec.memory_baseline_steps: 0 skips the 32-true baseline run that jobs measure "
          "before their own (it is not what is benchmarked, and it runs in the same process).");
ABSL_FLAG(double, fp16_true_eps, 1e-4,
          "AdamW eps for 16-true runs. The daemon's default, 1e-8, rounds to 0 in float16: the "
          "loss turns NaN (as in Fabric's 16-true anchor runs) and the trainer stops the job. "
          "0 keeps the default.");
ABSL_FLAG(bool, cuda_graph, false,
          "JobSpec.cuda_graph: replay each step as one CUDA graph (CUDA only; elsewhere the job "
          "trains eagerly and the line's warnings say why).");
ABSL_FLAG(int, intra_op_threads, 0, "LibTorch intra-op threads; 0 = one per core (mantissad's).");
ABSL_FLAG(bool, json_only, false,
          "Print only the JSON lines, not the summary table or --profile's summaries.");
ABSL_FLAG(std::string, profile, "",
          "A directory (created if missing); empty = off. Records a PyTorch (Kineto) profile of "
          "each run's measured steps into DIR/<workload>-<precision>.trace.json (Chrome trace "
          "format), prints the top kernels (CPU ops on the CPU) after the run's JSON line and adds "
          "\"profile\" and \"device_busy_ratio\" to it. The profiler's overhead is in these "
          "runs' step times: take the table's figures from a run without --profile. Needs "
          "--warmup >= 1.");

namespace mantissa {
namespace {

constexpr double kMiB = 1024.0 * 1024.0;

const std::vector<std::string>& DefaultPrecisions() {
  static const auto* const precisions =
      new std::vector<std::string>{"32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true"};
  return *precisions;
}

// DESIGN.md "Performance anchors": Lightning Fabric, H100, PyTorch 2.11,
// default settings.
struct FabricAnchor {
  double step_ms = 0;
  double peak_mib = 0;
};

std::optional<FabricAnchor> FabricDefault(const std::string& workload,
                                          const std::string& precision) {
  static const auto* const anchors =
      new std::map<std::pair<std::string, std::string>, FabricAnchor>{
          {{"mlp", "32-true"}, {54.4, 1558}},    {{"mlp", "16-mixed"}, {7.09, 1318}},
          {{"mlp", "bf16-mixed"}, {6.43, 1318}}, {{"mlp", "16-true"}, {5.12, 910}},
          {{"mlp", "bf16-true"}, {5.28, 910}},   {{"gpt", "32-true"}, {119.5, 6874}},
          {{"gpt", "16-mixed"}, {25.2, 5037}},   {{"gpt", "bf16-mixed"}, {27.3, 5036}},
          {{"gpt", "16-true"}, {19.0, 4007}},    {{"gpt", "bf16-true"}, {18.8, 4007}},
      };
  auto it = anchors->find({workload, precision});
  if (it == anchors->end()) return std::nullopt;
  return it->second;
}

// The same, tuned by hand (fused AdamW, torch.compile where it helped): the
// row Mantissa has to beat.
std::optional<double> FabricTunedStepMs(const std::string& workload, const std::string& precision) {
  static const auto* const anchors = new std::map<std::pair<std::string, std::string>, double>{
      {{"mlp", "16-mixed"}, 5.69}, {{"mlp", "bf16-mixed"}, 5.34}, {{"mlp", "bf16-true"}, 4.77},
      {{"gpt", "16-mixed"}, 25.4}, {{"gpt", "bf16-mixed"}, 20.7}, {{"gpt", "bf16-true"}, 17.0},
  };
  auto it = anchors->find({workload, precision});
  if (it == anchors->end()) return std::nullopt;
  return it->second;
}

// A width at --scale: a multiple of 16, at least 16; exact at scale 1.
int64_t ScaledWidth(int64_t width, double scale, int64_t multiple = 16) {
  const double scaled = std::ceil(static_cast<double>(width) * scale / multiple) * multiple;
  return std::max<int64_t>(multiple, static_cast<int64_t>(scaled));
}

int64_t ScaledCount(int64_t count, double scale) {
  return std::max<int64_t>(1, std::llround(static_cast<double>(count) * scale));
}

struct Workload {
  std::string name;
  v1::JobSpec spec;  // as submitted, without precision
  int64_t items_per_step = 0;
  std::string unit;  // what items_per_s counts: "items" or "tokens"
};

void SetOption(google::protobuf::Map<std::string, std::string>& options, const std::string& key,
               int64_t value) {
  options[key] = absl::StrCat(value);
}

// Linear 1024 -> 4096, three 4096 -> 4096, 4096 -> 10, ReLU between; batch 8192.
Workload MlpWorkload(double scale, int64_t total_steps) {
  Workload w;
  w.name = "mlp";
  w.unit = "items";
  const int64_t batch = ScaledCount(8192, scale);
  const int64_t width = ScaledWidth(4096, scale);
  w.spec.set_model("mlp");
  (*w.spec.mutable_model_options())["hidden"] = absl::StrJoin({width, width, width, width}, ",");
  w.spec.set_dataset("synthetic");
  auto& data = *w.spec.mutable_dataset_options();
  SetOption(data, "features", ScaledWidth(1024, scale));
  SetOption(data, "classes", 10);
  // Every step gets batches of its own, as in a real epoch.
  SetOption(data, "train_size", batch * total_steps);
  SetOption(data, "test_size", 0);
  w.spec.set_batch_size(batch);
  w.items_per_step = batch;
  return w;
}

// GPT-2 layout: vocab 8192, d_model 768, 12 layers, 12 heads, seq_len 512;
// batch 16 sequences. Items are tokens.
Workload GptWorkload(double scale, int64_t total_steps) {
  Workload w;
  w.name = "gpt";
  w.unit = "tokens";
  const int64_t batch = ScaledCount(16, scale);
  const int64_t heads = std::min<int64_t>(12, ScaledCount(12, scale));
  const int64_t layers = std::min<int64_t>(12, ScaledCount(12, scale));
  // A multiple of 16 * heads: heads divide it, and head widths stay multiples of 16.
  const int64_t d_model = ScaledWidth(768, scale, 16 * heads);
  const int64_t vocab = ScaledWidth(8192, scale);
  const int64_t seq_len = ScaledWidth(512, scale);
  w.spec.set_model("gpt");
  auto& model = *w.spec.mutable_model_options();
  SetOption(model, "vocab", vocab);
  SetOption(model, "d_model", d_model);
  SetOption(model, "layers", layers);
  SetOption(model, "heads", heads);
  SetOption(model, "seq_len", seq_len);
  w.spec.set_dataset("synthetic-tokens");
  auto& data = *w.spec.mutable_dataset_options();
  SetOption(data, "vocab", vocab);
  SetOption(data, "seq_len", seq_len);
  // Items are windows of seq_len + 1 tokens overlapping by one.
  SetOption(data, "train_tokens", batch * total_steps * seq_len + 1);
  SetOption(data, "test_tokens", 0);
  w.spec.set_batch_size(batch);
  w.items_per_step = batch * seq_len;
  return w;
}

// One JSON object on one line, keys in insertion order.
class JsonLine {
 public:
  JsonLine& Add(const std::string& key, const std::string& value) { return Raw(key, Quote(value)); }
  JsonLine& Add(const std::string& key, const char* value) { return Add(key, std::string(value)); }
  JsonLine& Add(const std::string& key, int64_t value) { return Raw(key, absl::StrCat(value)); }
  JsonLine& Add(const std::string& key, int value) { return Raw(key, absl::StrCat(value)); }
  // NaN, infinities and nullopt print as null.
  JsonLine& Add(const std::string& key, std::optional<double> value) {
    return Raw(
        key, value.has_value() && std::isfinite(*value) ? absl::StrFormat("%.6g", *value) : "null");
  }
  JsonLine& Add(const std::string& key, double value) {
    return Add(key, std::optional<double>(value));
  }
  JsonLine& Add(const std::string& key, const std::vector<std::string>& values) {
    std::vector<std::string> quoted;
    for (const std::string& v : values) quoted.push_back(Quote(v));
    return Raw(key, absl::StrCat("[", absl::StrJoin(quoted, ","), "]"));
  }

  std::string str() const { return absl::StrCat("{", absl::StrJoin(fields_, ","), "}"); }

 private:
  JsonLine& Raw(const std::string& key, const std::string& value) {
    fields_.push_back(absl::StrCat(Quote(key), ":", value));
    return *this;
  }
  static std::string Quote(const std::string& s) { return cli::JsonString(s); }

  std::vector<std::string> fields_;
};

struct Measurement {
  std::string effective_precision;
  std::vector<std::string> warnings;
  int64_t parameters = 0;
  double eps = 0;
  std::vector<double> step_seconds;  // the measured steps
  double median_seconds = 0;
  v1::MemoryStats memory;
  double final_loss = 0;
  std::optional<KernelProfile::Summary> profile;  // with --profile
};

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

// Profiles steps first..last of a run when given a trace path. Trainer::Run
// calls on_step on the thread that runs the steps, the thread LibTorch's
// profiler state belongs to, so the profile starts and stops there.
class StepProfiler {
 public:
  // `measured_seconds`: the times of steps first.. as they run, the
  // profiled window's.
  StepProfiler(std::string trace_path, bool cuda, int64_t first, int64_t last,
               const std::vector<double>& measured_seconds)
      : trace_path_(std::move(trace_path)),
        cuda_(cuda),
        first_(first),
        last_(last),
        measured_seconds_(measured_seconds) {}

  // After each step: starts once step first - 1 is done, stops after last.
  void OnStep(int64_t step) {
    if (trace_path_.empty() || !status_.ok()) return;
    if (step == first_ - 1) {
      absl::StatusOr<std::unique_ptr<KernelProfile>> started = KernelProfile::Start(cuda_);
      if (started.ok()) {
        profile_ = *std::move(started);
      } else {
        status_ = started.status();
      }
    } else if (step == last_) {
      Stop();
    }
  }

  // After the run: stops a profile the run left on (it ended early), and
  // returns the summary (none without a trace path) or the first error.
  absl::StatusOr<std::optional<KernelProfile::Summary>> Finish() {
    if (profile_ != nullptr) Stop();
    RETURN_IF_ERROR(status_);
    return std::move(summary_);
  }

 private:
  void Stop() {
    if (profile_ == nullptr) return;
    // Busy over the steps' own time: the progress report after each step
    // (host work, in the window) does not count as the device idling.
    const double step_ms =
        std::accumulate(measured_seconds_.begin(), measured_seconds_.end(), 0.0) * 1e3;
    absl::StatusOr<KernelProfile::Summary> summary =
        profile_->Stop(trace_path_, /*top_n=*/25, step_ms);
    profile_.reset();
    if (summary.ok()) {
      summary_ = *std::move(summary);
    } else {
      status_ = summary.status();
    }
  }

  const std::string trace_path_;
  const bool cuda_;
  const int64_t first_;
  const int64_t last_;
  const std::vector<double>& measured_seconds_;
  std::unique_ptr<KernelProfile> profile_;  // on while not null
  std::optional<KernelProfile::Summary> summary_;
  absl::Status status_;
};

// `trace_path` non-empty: the measured steps are profiled into it.
absl::StatusOr<Measurement> Measure(const Workload& workload, const std::string& precision,
                                    const DeviceCapabilities& caps, const std::string& trace_path) {
  const int warmup = absl::GetFlag(FLAGS_warmup);
  const int steps = absl::GetFlag(FLAGS_steps);
  v1::JobSpec submitted = workload.spec;
  submitted.set_precision(precision);
  submitted.set_optimizer("adamw");
  submitted.set_seed(1);
  submitted.set_steps(warmup + steps);
  submitted.set_memory_baseline_steps(absl::GetFlag(FLAGS_memory_baseline_steps));
  // Every step: final_loss is the last step's. The report runs after the
  // step's clock has stopped, so it is not in step_ms.
  submitted.set_progress_every_n_steps(1);
  if (absl::GetFlag(FLAGS_cuda_graph)) submitted.set_cuda_graph(true);
  ASSIGN_OR_RETURN(ResolvedPrecision resolved, PrecisionRegistry::Resolve(precision, caps));
  if (resolved.effective == "16-true" && absl::GetFlag(FLAGS_fp16_true_eps) > 0) {
    submitted.set_eps(absl::GetFlag(FLAGS_fp16_true_eps));
  }
  // The daemon's own defaults and checks, as for a submitted job.
  ASSIGN_OR_RETURN(ResolvedJob prepared,
                   ResolveJobSpec(submitted, ResolveContext{caps, /*max_concurrent_jobs=*/1}));

  Measurement m;
  m.effective_precision = prepared.effective_precision;
  m.warnings = prepared.warnings;
  m.eps = prepared.spec.eps();
  // Metric labels do not matter here; the job message carries the figures.
  testing::FakeJobContext context;
  StepProfiler profiler(trace_path, caps.is_cuda(), warmup + 1, warmup + steps, m.step_seconds);
  absl::StatusOr<v1::JobResult> result;
  RETURN_IF_ERROR(GuardTorch(absl::StrCat(workload.name, " ", precision), [&]() -> absl::Status {
    Trainer::Options options;
    options.job = prepared;
    options.device = caps.device;
    options.data_on_device = true;
    options.synchronize_steps = true;
    options.on_step = [&](int64_t step, double seconds) {
      if (step > warmup) m.step_seconds.push_back(seconds);
      profiler.OnStep(step);
    };
    ASSIGN_OR_RETURN(std::unique_ptr<Trainer> trainer, Trainer::Create(std::move(options)));
    result = trainer->Run(context);
    return absl::OkStatus();
  }));
  RETURN_IF_ERROR(result.status());
  ASSIGN_OR_RETURN(m.profile, profiler.Finish());
  if (m.step_seconds.empty()) return absl::InternalError("no step was measured");
  const v1::Job job = context.job();
  for (const std::string& w : job.warnings()) m.warnings.push_back(w);
  m.parameters = job.parameter_count();
  m.memory = job.memory();
  m.final_loss = result->final_loss();
  m.median_seconds = Median(m.step_seconds);
  return m;
}

// One row of the summary table.
struct Row {
  std::string workload;
  std::string precision;
  std::string runs_as;
  std::string note;  // skipped or failed: why
  double step_ms = NAN;
  double items_per_s = NAN;
  double peak_mib = NAN;
  double tflops = NAN;
  std::optional<FabricAnchor> fabric;
  std::optional<double> fabric_tuned_ms;
  double final_loss = NAN;
};

std::string Cell(double v, int digits) {
  return std::isfinite(v) ? absl::StrFormat("%.*f", digits, v) : "-";
}

// Four significant digits: losses range from ~1e-5 to ~10.
std::string Cell(double v) { return std::isfinite(v) ? absl::StrFormat("%.4g", v) : "-"; }

void PrintTable(const std::vector<Row>& rows, const std::string& device_name, double scale) {
  std::printf("\nTrainer steps on %s (scale %g, LibTorch %s, %d warm-up + %d measured steps)\n",
              device_name.c_str(), scale, compat::LibTorchVersion().c_str(),
              absl::GetFlag(FLAGS_warmup), absl::GetFlag(FLAGS_steps));
  std::printf("%-5s %-11s %-11s %9s %12s %9s %8s | %9s %10s %7s | %9s %8s | %10s\n", "work",
              "precision", "runs as", "step ms", "items/s", "peak MiB", "TFLOP/s", "Fabric ms",
              "Fabric MiB", "speedup", "tuned ms", "vs tuned", "final loss");
  for (const Row& r : rows) {
    if (!r.note.empty()) {
      std::printf("%-5s %-11s %s\n", r.workload.c_str(), r.precision.c_str(), r.note.c_str());
      continue;
    }
    const double fabric_ms = r.fabric ? r.fabric->step_ms : NAN;
    const double fabric_mib = r.fabric ? r.fabric->peak_mib : NAN;
    const double tuned_ms = r.fabric_tuned_ms.value_or(NAN);
    std::printf("%-5s %-11s %-11s %9s %12s %9s %8s | %9s %10s %7s | %9s %8s | %10s\n",
                r.workload.c_str(), r.precision.c_str(), r.runs_as.c_str(),
                Cell(r.step_ms, 3).c_str(), Cell(r.items_per_s, 0).c_str(),
                Cell(r.peak_mib, 1).c_str(), Cell(r.tflops, 4).c_str(), Cell(fabric_ms, 2).c_str(),
                Cell(fabric_mib, 0).c_str(), Cell(fabric_ms / r.step_ms, 2).c_str(),
                Cell(tuned_ms, 2).c_str(), Cell(tuned_ms / r.step_ms, 2).c_str(),
                Cell(r.final_loss).c_str());
  }
  std::printf(
      "TFLOP/s = 6 x parameters x tokens/s (gpt) or items/s (mlp); speedup = Fabric ms / step "
      "ms (> 1: Mantissa faster).\n");
}

int Fail(const std::string& what, const absl::Status& status) {
  std::fprintf(stderr, "mantissa_train_benchmark: %s: %s\n", what.c_str(),
               status.ToString().c_str());
  return 2;
}

int Run() {
  const double scale = absl::GetFlag(FLAGS_scale);
  if (!(scale > 0) || scale > 1) {
    return Fail("--scale",
                absl::InvalidArgumentError(absl::StrCat("must be in (0, 1], got ", scale)));
  }
  if (absl::GetFlag(FLAGS_warmup) < 0 || absl::GetFlag(FLAGS_steps) < 1) {
    return Fail("flags", absl::InvalidArgumentError("--warmup must be >= 0 and --steps >= 1"));
  }
  const std::string profile_dir = absl::GetFlag(FLAGS_profile);
  if (!profile_dir.empty()) {
    // The first step's one-time costs (cuBLAS handles, the allocator's
    // first blocks) are not what a profile of steps should show.
    if (absl::GetFlag(FLAGS_warmup) < 1) {
      return Fail("--profile", absl::InvalidArgumentError("needs --warmup >= 1"));
    }
    std::error_code error;
    std::filesystem::create_directories(profile_dir, error);
    if (error) {
      return Fail("--profile", absl::InvalidArgumentError(absl::StrCat(
                                   "cannot create ", profile_dir, ": ", error.message())));
    }
  }
  ConfigureHostAllocator();
  const int threads = ConfigureIntraOpThreads(absl::GetFlag(FLAGS_intra_op_threads));
  absl::StatusOr<std::string> device = ResolveDevice(absl::GetFlag(FLAGS_device));
  if (!device.ok()) return Fail("--device", device.status());
  // Before anything is allocated, as mantissad does, so every tensor is counted.
  MemoryTracker::InstallCpuCounting();
  DeviceCapabilities caps;
  absl::Status probed = GuardTorch(absl::StrCat("probing ", *device), [&] {
    caps = DeviceCapabilities::Probe(torch::Device(*device));
    return absl::OkStatus();
  });
  if (!probed.ok()) return Fail("--device", probed);
  const std::string device_name =
      caps.is_cuda() ? caps.device_name : absl::StrCat("cpu (", threads, " intra-op threads)");
  // Fabric ran full-size on an H100: anything else is not comparable.
  const bool comparable = scale == 1.0 && caps.is_cuda();

  std::vector<std::string> precisions =
      absl::StrSplit(absl::GetFlag(FLAGS_precisions), ',', absl::SkipWhitespace());
  if (precisions.empty()) {
    precisions = DefaultPrecisions();
    if (PrecisionRegistry::Resolve("transformer-engine", caps).ok()) {
      precisions.push_back("transformer-engine");
    }
  }
  for (const std::string& precision : precisions) {
    // A misspelt value is a usage error; one this device cannot run is a skipped line.
    absl::Status status = PrecisionRegistry::Resolve(precision, caps).status();
    if (absl::IsInvalidArgument(status)) return Fail("--precisions", status);
  }
  const int64_t total_steps = absl::GetFlag(FLAGS_warmup) + absl::GetFlag(FLAGS_steps);
  std::vector<Workload> workloads;
  for (absl::string_view name :
       absl::StrSplit(absl::GetFlag(FLAGS_workloads), ',', absl::SkipWhitespace())) {
    if (name == "mlp") {
      workloads.push_back(MlpWorkload(scale, total_steps));
    } else if (name == "gpt") {
      workloads.push_back(GptWorkload(scale, total_steps));
    } else {
      return Fail("--workloads", absl::InvalidArgumentError(absl::StrCat("unknown workload '", name,
                                                                         "'; valid: mlp, gpt")));
    }
  }

  std::vector<Row> rows;
  int failures = 0;
  for (const Workload& workload : workloads) {
    for (const std::string& precision : precisions) {
      Row row;
      row.workload = workload.name;
      row.precision = precision;
      JsonLine line;
      line.Add("workload", workload.name).Add("precision", precision).Add("device", *device);
      absl::StatusOr<ResolvedPrecision> resolved = PrecisionRegistry::Resolve(precision, caps);
      if (!resolved.ok()) {
        const std::string reason(resolved.status().message());
        line.Add("skipped", reason);
        row.note = absl::StrCat("skipped: ", reason);
        std::printf("%s\n", line.str().c_str());
        std::fflush(stdout);
        rows.push_back(row);
        continue;
      }
      const std::string trace_path =
          profile_dir.empty() ? ""
                              : (std::filesystem::path(profile_dir) /
                                 absl::StrCat(workload.name, "-", precision, ".trace.json"))
                                    .string();
      absl::StatusOr<Measurement> m = Measure(workload, precision, caps, trace_path);
      if (!m.ok()) {
        ++failures;
        line.Add("error", m.status().ToString());
        row.note = absl::StrCat("failed: ", m.status().ToString());
        std::printf("%s\n", line.str().c_str());
        std::fflush(stdout);
        rows.push_back(row);
        continue;
      }
      const double step_ms = m->median_seconds * 1e3;
      const double items_per_s = workload.items_per_step / m->median_seconds;
      const double peak_mib = m->memory.peak_bytes() / kMiB;
      const double tflops = 6.0 * m->parameters * items_per_s / 1e12;
      const auto [min_it, max_it] =
          std::minmax_element(m->step_seconds.begin(), m->step_seconds.end());
      // Fabric's rows are keyed by the value asked for: on CUDA it runs as asked.
      const std::optional<FabricAnchor> fabric =
          comparable ? FabricDefault(workload.name, precision) : std::nullopt;
      const std::optional<double> tuned =
          comparable ? FabricTunedStepMs(workload.name, precision) : std::nullopt;
      line.Add("effective_precision", m->effective_precision)
          .Add("device_name", device_name)
          .Add("scale", scale)
          .Add("batch", workload.spec.batch_size())
          .Add("items_per_step", workload.items_per_step)
          .Add("item_unit", workload.unit)
          .Add("parameters", m->parameters)
          .Add("warmup", absl::GetFlag(FLAGS_warmup))
          .Add("steps", absl::GetFlag(FLAGS_steps))
          .Add("step_ms", step_ms)
          .Add("step_ms_min", *min_it * 1e3)
          .Add("step_ms_max", *max_it * 1e3)
          .Add("items_per_s", items_per_s)
          .Add("peak_alloc_mib", peak_mib)
          .Add("memory_source", m->memory.source())
          .Add("tflops", tflops)
          .Add("tflops_basis", absl::StrCat("6*params*", workload.unit, "/s"))
          .Add("fabric_step_ms", fabric ? std::optional<double>(fabric->step_ms) : std::nullopt)
          .Add("fabric_peak_mib", fabric ? std::optional<double>(fabric->peak_mib) : std::nullopt)
          .Add("speedup_vs_fabric",
               fabric ? std::optional<double>(fabric->step_ms / step_ms) : std::nullopt)
          .Add("fabric_tuned_step_ms", tuned)
          .Add("speedup_vs_fabric_tuned",
               tuned ? std::optional<double>(*tuned / step_ms) : std::nullopt)
          .Add("final_loss", m->final_loss)
          .Add("adamw_eps", m->eps)
          .Add("cuda_graph", absl::GetFlag(FLAGS_cuda_graph) ? "requested" : "off")
          .Add("intra_op_threads", threads)
          .Add("libtorch", compat::LibTorchVersion())
          .Add("warnings", m->warnings);
      if (m->memory.baseline_fp32_peak_bytes() > 0) {
        line.Add("baseline_fp32_peak_mib", m->memory.baseline_fp32_peak_bytes() / kMiB);
      }
      if (m->profile) {
        line.Add("profile", m->profile->trace_path)
            .Add("device_busy_ratio", m->profile->busy_ratio);
      }
      std::printf("%s\n", line.str().c_str());
      if (m->profile && !absl::GetFlag(FLAGS_json_only)) {
        std::printf("\nProfile of %s %s, %d measured steps (with the profiler's overhead):\n%s\n",
                    workload.name.c_str(), precision.c_str(), absl::GetFlag(FLAGS_steps),
                    m->profile->Format().c_str());
      }
      std::fflush(stdout);
      row.runs_as = m->effective_precision;
      row.step_ms = step_ms;
      row.items_per_s = items_per_s;
      row.peak_mib = peak_mib;
      row.tflops = tflops;
      row.fabric = fabric;
      row.fabric_tuned_ms = tuned;
      row.final_loss = m->final_loss;
      rows.push_back(row);
    }
  }
  if (!absl::GetFlag(FLAGS_json_only)) PrintTable(rows, device_name, scale);
  // A benchmark that failed to measure something must not pass a smoke test.
  return failures == 0 ? 0 : 1;
}

}  // namespace
}  // namespace mantissa

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Runs the reference training workloads (DESIGN.md \"Performance anchors\") through the "
      "daemon's Trainer in each precision and compares them with Lightning Fabric's figures.\n"
      "Usage: mantissa_train_benchmark [--workloads=mlp,gpt] [--precisions=P,...] "
      "[--device=auto|cpu|cuda:N] [--warmup=5] [--steps=20] [--scale=1.0] [--json_only] "
      "[--profile=DIR]");
  absl::ParseCommandLine(argc, argv);
  return mantissa::Run();
}
