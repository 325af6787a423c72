#include "server/runtime/device_capabilities.h"

#include <functional>

#include "server/common/torch_compat.h"

#ifdef MANTISSA_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

namespace mantissa {
namespace {

// The ops every training step needs: matmul, add, activation, reduction,
// backward. Throws c10::Error where a kernel is missing.
void TinyStep(torch::Device device, torch::Dtype dtype) {
  const auto options = torch::TensorOptions(dtype).device(device);
  torch::Tensor w = torch::ones({4, 4}, options).requires_grad_(true);
  torch::Tensor x = torch::ones({2, 4}, options);
  torch::Tensor y = torch::relu(torch::addmm(torch::zeros({4}, options), x, w)).sum();
  y.backward();
}

// A Linear under autocast must come out in the autocast dtype.
bool AutocastProduces(torch::Device device, torch::Dtype dtype) {
  const auto options = torch::TensorOptions(torch::kFloat32).device(device);
  compat::AutocastGuard guard(device.type(), dtype);
  torch::Tensor out = torch::linear(torch::ones({2, 4}, options), torch::ones({4, 4}, options));
  return out.scalar_type() == dtype;
}

void RunProbe(std::map<std::string, std::string>& failures, const std::string& key, bool& result,
              const std::function<bool()>& fn) {
  try {
    result = fn();
    if (!result) failures[key] = "autocast leaves this dtype disabled on this device";
  } catch (const c10::Error& e) {
    result = false;
    std::string message = e.what_without_backtrace();
    failures[key] = message.substr(0, message.find('\n'));
  }
}

}  // namespace

DeviceCapabilities DeviceCapabilities::Probe(torch::Device device) {
  DeviceCapabilities caps;
  caps.device = device;
  caps.device_name = device.str();
#ifdef MANTISSA_WITH_CUDA
  if (device.is_cuda()) {
    const cudaDeviceProp* prop = at::cuda::getDeviceProperties(device.index());
    caps.compute_capability = prop->major * 10 + prop->minor;
    caps.device_name =
        device.str() + " (" + prop->name + ", sm_" + std::to_string(caps.compute_capability) + ")";
  }
#endif
  auto& f = caps.failures;
  RunProbe(f, "float64", caps.float64, [&] {
    TinyStep(device, torch::kFloat64);
    return true;
  });
  RunProbe(f, "bfloat16", caps.bfloat16, [&] {
    TinyStep(device, torch::kBFloat16);
    return true;
  });
  RunProbe(f, "float16", caps.float16, [&] {
    TinyStep(device, torch::kFloat16);
    return true;
  });
  RunProbe(f, "autocast_bfloat16", caps.autocast_bfloat16,
           [&] { return AutocastProduces(device, torch::kBFloat16); });
  RunProbe(f, "autocast_float16", caps.autocast_float16,
           [&] { return AutocastProduces(device, torch::kFloat16); });
  return caps;
}

}  // namespace mantissa
