#ifndef MANTISSA_SERVER_TRAINING_TORCH_RUNTIME_H_
#define MANTISSA_SERVER_TRAINING_TORCH_RUNTIME_H_

#include <string>

#include "absl/status/statusor.h"

namespace mantissa {

// Process-wide LibTorch set-up, callable from main.cc without torch headers.

// Sets LibTorch's intra-op thread pool size; `threads` <= 0 means one per
// core (Debian's LibTorch 1.13 otherwise starts with 1). Returns the size in
// effect.
int ConfigureIntraOpThreads(int threads);

// Resolves --device: "auto" (CUDA if present, else CPU), "cpu", "cuda",
// "cuda:N". Returns the canonical form ("cpu", "cuda:0").
absl::StatusOr<std::string> ResolveDevice(const std::string& device);

std::string LibTorchVersion();

// Keeps glibc malloc from handing large freed buffers back to the kernel
// after every step (see the .cc). Call once at start-up, before threads.
void ConfigureHostAllocator();

}  // namespace mantissa

#endif  // MANTISSA_SERVER_TRAINING_TORCH_RUNTIME_H_
