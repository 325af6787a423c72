#include "tests/training/kernel_profile.h"

#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/torch.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/json_format.h"
#include "server/common/status_macros.h"
#include "server/common/torch_compat.h"
#include "server/common/torch_status.h"

namespace mantissa {
namespace {

namespace profiler = torch::autograd::profiler;
using torch::profiler::impl::ActivityType;
using torch::profiler::impl::ProfilerConfig;
using torch::profiler::impl::ProfilerState;

// libkineto::ActivityType values, the same from 1.13 to 2.11 (its header is
// not installed with every LibTorch). Of the CUDA device's events only these
// are its work: GPU user annotations, for one, mirror CPU-side ranges.
constexpr uint8_t kCpuOp = 0;
constexpr uint8_t kGpuMemcpy = 3;
constexpr uint8_t kGpuMemset = 4;
constexpr uint8_t kConcurrentKernel = 5;

// One event of the device's, in nanoseconds.
struct Span {
  std::string name;
  uint64_t thread = 0;
  int64_t start = 0;
  int64_t end = 0;
  int64_t counted = 0;  // the part summed into its name's total
};

bool IsDeviceEvent(const profiler::KinetoEvent& e, bool cuda) {
  if (cuda) {
    const uint8_t type = e.activityType();
    return e.deviceType() == c10::DeviceType::CUDA &&
           (type == kConcurrentKernel || type == kGpuMemcpy || type == kGpuMemset);
  }
  return e.deviceType() == c10::DeviceType::CPU && e.activityType() == kCpuOp;
}

std::vector<Span> DeviceSpans(const profiler::ProfilerResult& result, bool cuda) {
  std::vector<Span> spans;
  for (const profiler::KinetoEvent& e : result.events()) {
    if (!IsDeviceEvent(e, cuda)) continue;
    const int64_t duration = compat::EventDurationNanos(e);
    // 2.x marks an op still open when the profiler stopped with -1.
    if (duration < 0) continue;
    Span span;
    span.name = e.name();
    span.thread = e.startThreadId();
    span.start = compat::EventStartNanos(e);
    span.end = span.start + duration;
    span.counted = duration;
    spans.push_back(std::move(span));
  }
  return spans;
}

// CPU ops nest (aten::linear holds aten::addmm): each op keeps only the time
// none of its children ran on its thread, so the totals add up to the time
// spent in ops. Sorted by thread, start, and the enclosing op first.
void KeepSelfTimes(std::vector<Span>& spans) {
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    if (a.thread != b.thread) return a.thread < b.thread;
    if (a.start != b.start) return a.start < b.start;
    return a.end > b.end;
  });
  std::vector<Span*> open;
  for (Span& span : spans) {
    while (!open.empty() &&
           (open.back()->thread != span.thread || open.back()->end <= span.start)) {
      open.pop_back();
    }
    if (!open.empty()) open.back()->counted -= span.end - span.start;
    open.push_back(&span);
  }
  for (Span& span : spans) span.counted = std::max<int64_t>(0, span.counted);
}

// The time at least one span was running.
int64_t BusyNanos(std::vector<Span> spans) {
  std::sort(spans.begin(), spans.end(),
            [](const Span& a, const Span& b) { return a.start < b.start; });
  int64_t busy = 0;
  int64_t run_start = 0;
  int64_t run_end = -1;
  for (const Span& span : spans) {
    if (span.start > run_end) {
      if (run_end > run_start) busy += run_end - run_start;
      run_start = span.start;
      run_end = span.end;
    } else {
      run_end = std::max(run_end, span.end);
    }
  }
  if (run_end > run_start) busy += run_end - run_start;
  return busy;
}

// The events in Chrome's trace format (times in microseconds), for a
// LibTorch built without Kineto, which cannot save its own.
absl::Status WriteChromeTrace(const profiler::ProfilerResult& result, const std::string& path) {
  std::ofstream out(path, std::ios::trunc);
  if (!out) return absl::UnavailableError(absl::StrCat("cannot write ", path));
  out << "{\"traceEvents\":[";
  bool first = true;
  for (const profiler::KinetoEvent& e : result.events()) {
    const int64_t duration = compat::EventDurationNanos(e);
    if (duration < 0) continue;
    const bool on_cuda = e.deviceType() == c10::DeviceType::CUDA;
    out << (first ? "\n" : ",\n")
        << absl::StrFormat(
               R"({"ph":"X","cat":"%s","name":%s,"pid":%d,"tid":%d,"ts":%.3f,"dur":%.3f})",
               on_cuda ? "kernel" : "cpu_op", cli::JsonString(e.name()),
               on_cuda ? static_cast<int>(e.deviceIndex()) + 1 : 0,
               static_cast<int64_t>(on_cuda ? e.deviceResourceId() : e.startThreadId()),
               compat::EventStartNanos(e) / 1e3, duration / 1e3);
    first = false;
  }
  out << "\n]}\n";
  out.close();
  if (!out) return absl::UnavailableError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

// Kineto writes the trace where LibTorch was built with it; Debian's 1.13
// was not (USE_KINETO=0), and its save() throws. The events are then
// written here, so a trace exists either way.
absl::Status SaveTrace(profiler::ProfilerResult& result, const std::string& path) {
  const absl::Status saved = GuardTorch(absl::StrCat("saving ", path), [&] {
    result.save(path);
    return absl::OkStatus();
  });
  if (saved.ok()) return saved;
  const absl::Status written = WriteChromeTrace(result, path);
  if (!written.ok())
    return absl::InternalError(absl::StrCat(saved.message(), "; ", written.message()));
  return absl::OkStatus();
}

KernelProfile::Summary Summarise(const profiler::ProfilerResult& result, bool cuda, int top_n,
                                 double wall_ms) {
  KernelProfile::Summary summary;
  summary.device = cuda ? "cuda" : "cpu";
  summary.wall_ms = wall_ms;
  std::vector<Span> spans = DeviceSpans(result, cuda);
  if (!cuda) KeepSelfTimes(spans);
  std::map<std::string, KernelProfile::Entry> by_name;
  int64_t total = 0;
  for (const Span& span : spans) {
    KernelProfile::Entry& entry = by_name[span.name];
    entry.name = span.name;
    ++entry.count;
    entry.total_ms += span.counted / 1e6;
    total += span.counted;
  }
  summary.events = static_cast<int64_t>(spans.size());
  summary.names = static_cast<int64_t>(by_name.size());
  summary.total_ms = total / 1e6;
  summary.busy_ms = BusyNanos(std::move(spans)) / 1e6;
  summary.busy_ratio = wall_ms > 0 ? summary.busy_ms / wall_ms : 0;
  for (auto& [name, entry] : by_name) {
    entry.mean_us = entry.total_ms * 1e3 / static_cast<double>(entry.count);
    entry.percent = total > 0 ? 100.0 * entry.total_ms / summary.total_ms : 0;
    summary.top.push_back(std::move(entry));
  }
  std::stable_sort(summary.top.begin(), summary.top.end(),
                   [](const KernelProfile::Entry& a, const KernelProfile::Entry& b) {
                     return a.total_ms > b.total_ms;
                   });
  if (top_n >= 0 && summary.top.size() > static_cast<size_t>(top_n)) summary.top.resize(top_n);
  return summary;
}

}  // namespace

KernelProfile::KernelProfile(bool cuda) : cuda_(cuda), start_(std::chrono::steady_clock::now()) {}

absl::StatusOr<std::unique_ptr<KernelProfile>> KernelProfile::Start(bool cuda) {
  RETURN_IF_ERROR(GuardTorch("starting the profiler", [&] {
    std::set<ActivityType> activities{ActivityType::CPU};
    if (cuda) activities.insert(ActivityType::CUDA);
    const ProfilerConfig config(ProfilerState::KINETO);
    // Sets up Kineto (CUPTI on CUDA) before collection starts, as
    // torch.profiler does.
    profiler::prepareProfiler(config, activities);
    profiler::enableProfiler(config, activities);
    return absl::OkStatus();
  }));
  // After enableProfiler, whose set-up is not the profiled work's.
  return std::unique_ptr<KernelProfile>(new KernelProfile(cuda));
}

absl::StatusOr<KernelProfile::Summary> KernelProfile::Stop(const std::string& trace_path, int top_n,
                                                           double work_ms) {
  if (!active_) return absl::FailedPreconditionError("the profiler was stopped already");
  const double wall_ms =
      work_ms > 0
          ? work_ms
          : std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_)
                .count();
  active_ = false;
  Summary summary;
  RETURN_IF_ERROR(GuardTorch("stopping the profiler", [&]() -> absl::Status {
    std::unique_ptr<profiler::ProfilerResult> result = profiler::disableProfiler();
    if (result == nullptr) return absl::InternalError("the profiler returned no result");
    if (!trace_path.empty()) RETURN_IF_ERROR(SaveTrace(*result, trace_path));
    summary = Summarise(*result, cuda_, top_n, wall_ms);
    return absl::OkStatus();
  }));
  summary.trace_path = trace_path;
  return summary;
}

KernelProfile::~KernelProfile() {
  if (!active_) return;
  // Its result is of no use; a failure here has nowhere to go.
  GuardTorch("stopping the profiler", [] {
    profiler::disableProfiler();
    return absl::OkStatus();
  }).IgnoreError();
}

std::string KernelProfile::Summary::Format() const {
  const bool on_cuda = device == "cuda";
  std::string out =
      absl::StrFormat("%s: %d events, %d names, %.3f ms summed; busy %.3f ms of %.3f ms (%.1f%%)\n",
                      on_cuda ? "CUDA kernels and copies" : "CPU ops (self time)", events, names,
                      total_ms, busy_ms, wall_ms, 100.0 * busy_ratio);
  if (!trace_path.empty()) absl::StrAppend(&out, "trace: ", trace_path, "\n");
  if (top.empty()) return out;
  // Kernel names run to hundreds of characters (templated CUTLASS ones).
  constexpr size_t kNameWidth = 100;
  absl::StrAppendFormat(&out, "%7s %10s %10s %6s  %s\n", "count", "total ms", "mean us", "%",
                        "name");
  for (const Entry& e : top) {
    std::string name = e.name;
    if (name.size() > kNameWidth) name = name.substr(0, kNameWidth - 3) + "...";
    absl::StrAppendFormat(&out, "%7d %10.3f %10.2f %6.2f  %s\n", e.count, e.total_ms, e.mean_us,
                          e.percent, name);
  }
  return out;
}

}  // namespace mantissa
