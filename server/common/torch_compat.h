#ifndef MANTISSA_SERVER_COMMON_TORCH_COMPAT_H_
#define MANTISSA_SERVER_COMMON_TORCH_COMPAT_H_

// The only place that looks at TORCH_VERSION. Mantissa builds against
// Debian's LibTorch 1.13 (CPU) and against LibTorch 2.x with CUDA; every API
// difference between them is wrapped here.

#include <torch/torch.h>
#include <torch/version.h>

#include <string>

#define MANTISSA_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) ||           \
   (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace mantissa::compat {

inline std::string LibTorchVersion() {
  return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
         std::to_string(TORCH_VERSION_PATCH);
}

inline bool CudaAvailable() { return torch::cuda::is_available(); }

inline int CudaDeviceCount() { return static_cast<int>(torch::cuda::device_count()); }

}  // namespace mantissa::compat

#endif  // MANTISSA_SERVER_COMMON_TORCH_COMPAT_H_
