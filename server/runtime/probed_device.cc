#include "server/runtime/probed_device.h"

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

}  // namespace mantissa
