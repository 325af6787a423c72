#include "server/runtime/probed_device.h"

#ifdef MANTISSA_WITH_CUDA
#include <c10/cuda/CUDAFunctions.h>
#endif

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/common/torch_status.h"
#include "server/runtime/device_capabilities.h"
#include "server/runtime/torch_runtime.h"

namespace mantissa {

absl::StatusOr<ProbedDevice> ProbeDevice(const std::string& device) {
  ProbedDevice probed;
  ASSIGN_OR_RETURN(probed.name, ResolveDevice(device));
  RETURN_IF_ERROR(GuardTorch(absl::StrCat("probing ", probed.name), [&] {
    probed.capabilities = std::make_shared<const DeviceCapabilities>(
        DeviceCapabilities::Probe(torch::Device(probed.name)));
    return absl::OkStatus();
  }));
  return probed;
}

absl::StatusOr<ProbedDevice> ProbeRankDevice(const std::string& device, int local_rank) {
  ASSIGN_OR_RETURN(const std::string resolved, ResolveDevice(device));
  if (!absl::StartsWith(resolved, "cuda")) return ProbeDevice(resolved);
#ifdef MANTISSA_WITH_CUDA
  RETURN_IF_ERROR(GuardTorch(absl::StrCat("selecting cuda:", local_rank), [&] {
    c10::cuda::set_device(static_cast<c10::DeviceIndex>(local_rank));
    return absl::OkStatus();
  }));
#endif
  return ProbeDevice(absl::StrCat("cuda:", local_rank));
}

}  // namespace mantissa
