#ifndef MANTISSA_SERVER_RUNTIME_PROBED_DEVICE_H_
#define MANTISSA_SERVER_RUNTIME_PROBED_DEVICE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace mantissa {

struct DeviceCapabilities;  // device_capabilities.h (torch)

// The daemon's device, resolved and probed once at start-up and handed to
// training and serving alike. Free of torch headers, so main.cc and the
// runners' option structs stay quick to compile. Copies share the probe.
struct ProbedDevice {
  std::string name;                                        // canonical: "cpu", "cuda:0"
  std::shared_ptr<const DeviceCapabilities> capabilities;  // never null once probed

  bool probed() const { return capabilities != nullptr; }
};

// Resolves `device` (as --device: "auto", "cpu", "cuda", "cuda:N"; see
// ResolveDevice) and probes what it computes (DeviceCapabilities::Probe: a
// tiny op per dtype). INVALID_ARGUMENT / FAILED_PRECONDITION as
// ResolveDevice; INTERNAL when LibTorch fails on the device.
absl::StatusOr<ProbedDevice> ProbeDevice(const std::string& device);

// A rank process of a data-parallel job: as ProbeDevice, but a CUDA device
// becomes cuda:<local_rank> (one GPU per rank), made the process's current
// device before anything touches another.
absl::StatusOr<ProbedDevice> ProbeRankDevice(const std::string& device, int local_rank);

}  // namespace mantissa

#endif  // MANTISSA_SERVER_RUNTIME_PROBED_DEVICE_H_
