#ifndef MANTISSA_TESTS_TRAINING_KERNEL_PROFILE_H_
#define MANTISSA_TESTS_TRAINING_KERNEL_PROFILE_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace mantissa {

// A PyTorch (Kineto) profile of the work between Start and Stop: the Chrome
// trace, and where the device's time went. On CUDA the device's events are
// its kernels and copies, and busy/wall shows how long the GPU sat idle (a
// launch-bound step has a low ratio); on the CPU they are the ATen ops,
// counted by self time so that nested ops are not counted twice.
//
// LibTorch's profiler state is per thread: Start, Stop and the destructor
// must run on the thread that runs the profiled work. The profiler's own
// overhead is in whatever is timed while it is on. The header stays free of
// torch so that callers need none of the profiler's headers.
class KernelProfile {
 public:
  // One name's events.
  struct Entry {
    std::string name;
    int64_t count = 0;
    double total_ms = 0;
    double mean_us = 0;
    double percent = 0;  // of Summary::total_ms
  };

  struct Summary {
    std::string device;      // "cuda": kernels and copies; "cpu": ATen ops by self time
    std::vector<Entry> top;  // by total time, longest first
    int64_t events = 0;      // the device's events in the window
    int64_t names = 0;       // distinct names among them
    double total_ms = 0;     // their times summed (concurrent kernels both count)
    double busy_ms = 0;      // time with at least one of them running
    double wall_ms = 0;      // the work's time (Stop's work_ms), else Start to Stop
    double busy_ratio = 0;   // busy_ms / wall_ms
    std::string trace_path;  // where the trace went; empty = not saved

    // An aligned text table: a header line with the totals, then one row
    // per entry.
    std::string Format() const;
  };

  // Turns the profiler on for the calling thread: CPU ops, plus CUDA
  // activity when `cuda`. Fails when a profiler is already on.
  static absl::StatusOr<std::unique_ptr<KernelProfile>> Start(bool cuda);

  // Turns the profiler off, writes the Chrome trace to `trace_path` (none
  // when empty) and summarises the top `top_n` names. Once only. The busy
  // ratio is over `work_ms`, the time the profiled work itself took, when
  // given (> 0): else over the whole time since Start, host-only work in
  // between (progress reports, say) included.
  absl::StatusOr<Summary> Stop(const std::string& trace_path, int top_n = 25, double work_ms = 0);

  // Turns the profiler off if Stop was not called (a run that failed).
  ~KernelProfile();

  KernelProfile(const KernelProfile&) = delete;
  KernelProfile& operator=(const KernelProfile&) = delete;

 private:
  explicit KernelProfile(bool cuda);

  const bool cuda_;
  bool active_ = true;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace mantissa

#endif  // MANTISSA_TESTS_TRAINING_KERNEL_PROFILE_H_
