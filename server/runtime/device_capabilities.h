#ifndef MANTISSA_SERVER_RUNTIME_DEVICE_CAPABILITIES_H_
#define MANTISSA_SERVER_RUNTIME_DEVICE_CAPABILITIES_H_

#include <torch/torch.h>

#include <map>
#include <string>

namespace mantissa {

// What the device can compute, found by running a tiny forward and backward
// in each dtype (and under autocast) rather than by version tables: a
// LibTorch build without a kernel answers with an error, which is recorded.
struct DeviceCapabilities {
  torch::Device device = torch::kCPU;
  std::string device_name;  // e.g. "cpu", "cuda:0 (NVIDIA H100 80GB HBM3, sm_90)"
  bool float64 = false;
  bool bfloat16 = false;
  bool float16 = false;
  bool autocast_bfloat16 = false;
  bool autocast_float16 = false;
  int compute_capability = 0;  // CUDA: major * 10 + minor; 0 on CPU
  // Why a probe failed: the first line of LibTorch's error, keyed by
  // "float64", "bfloat16", "float16", "autocast_bfloat16", "autocast_float16".
  std::map<std::string, std::string> failures;

  static DeviceCapabilities Probe(torch::Device device);

  bool is_cuda() const { return device.is_cuda(); }
  std::string Failure(const std::string& key) const {
    auto it = failures.find(key);
    return it == failures.end() ? "" : it->second;
  }
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_RUNTIME_DEVICE_CAPABILITIES_H_
