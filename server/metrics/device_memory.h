#ifndef MANTISSA_SERVER_METRICS_DEVICE_MEMORY_H_
#define MANTISSA_SERVER_METRICS_DEVICE_MEMORY_H_

#include <cstdint>
#include <functional>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mantissa {

// One device's memory at one moment: mantissa_device_memory_{used,total}_bytes.
struct DeviceMemory {
  int64_t used_bytes = 0;
  int64_t total_bytes = 0;
};

// Reads a device's memory now. Called at every scrape on the metrics HTTP
// thread, so it must be cheap and thread-safe. The CPU reader is below; a
// CUDA runner adds one per GPU from the driver's numbers (cudaMemGetInfo).
using DeviceMemoryReader = std::function<absl::StatusOr<DeviceMemory>()>;

// The "cpu" device: this process's resident set (/proc/self/statm) as used,
// the machine's MemTotal (/proc/meminfo) as total.
absl::StatusOr<DeviceMemory> ReadProcessMemory();

// The parsers behind ReadProcessMemory, for tests. Errors name the file.
absl::StatusOr<int64_t> ParseStatmResidentBytes(absl::string_view statm, int64_t page_size);
absl::StatusOr<int64_t> ParseMeminfoTotalBytes(absl::string_view meminfo);

}  // namespace mantissa

#endif  // MANTISSA_SERVER_METRICS_DEVICE_MEMORY_H_
