#ifndef MANTISSA_TESTS_TESTING_DAEMON_RESOLVE_CONTEXT_H_
#define MANTISSA_TESTS_TESTING_DAEMON_RESOLVE_CONTEXT_H_

#include <algorithm>
#include <cstdlib>
#include <string>
#include <thread>

#include "server/training/job_spec_resolver.h"

namespace mantissa::testing {

// The ResolveContext of a test mantissad (DaemonProcess) on the CPU: one job
// at a time, default limits, files under /usr/share/datasets, $TMPDIR (or
// /tmp) and the fetched test data, TorchScript modules under $TMPDIR. The
// in-process twin of what SubmitJob resolves against.
inline const ResolveContext& DaemonResolveContext() {
  static const ResolveContext* const context = [] {
    const char* tmp = std::getenv("TMPDIR");
    const std::string temp_root = tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
    auto* c = new ResolveContext;
    c->caps = DeviceCapabilities::Probe(torch::kCPU);
    c->max_concurrent_jobs = 1;
    // As a daemon on the CPU: data-parallel jobs of up to one rank per core.
    c->max_devices = std::max(2, static_cast<int>(std::thread::hardware_concurrency()));
    c->data_roots = FileRoots({"/usr/share/datasets", temp_root, MANTISSA_TEST_DATA_DIR},
                              "mantissad --data_root");
    c->torchscript_roots = FileRoots({temp_root}, "mantissad --torchscript_root");
    return c;
  }();
  return *context;
}

}  // namespace mantissa::testing

#endif  // MANTISSA_TESTS_TESTING_DAEMON_RESOLVE_CONTEXT_H_
