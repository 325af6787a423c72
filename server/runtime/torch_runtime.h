#ifndef MANTISSA_SERVER_RUNTIME_TORCH_RUNTIME_H_
#define MANTISSA_SERVER_RUNTIME_TORCH_RUNTIME_H_

#include <string>

#include "absl/status/statusor.h"
#include "server/metrics/device_memory.h"

namespace mantissa {

// Process-wide LibTorch set-up, callable from main.cc without torch headers.

// Sets LibTorch's intra-op thread pool size; `threads` <= 0 means one per
// core (Debian's LibTorch 1.13 otherwise starts with 1). OpenBLAS's OpenMP
// build gets the same threads (it shares LibTorch's pool); its pthread build
// is held to one. Returns the size in effect.
int ConfigureIntraOpThreads(int threads);

// The BLAS threading in use, for the start-up log: e.g. "OpenBLAS OpenMP
// (OpenBLAS 0.3.21 ...)", or "not OpenBLAS".
std::string BlasThreading();

// Resolves --device: "auto" (CUDA if present, else CPU), "cpu", "cuda",
// "cuda:N". Returns the canonical form ("cpu", "cuda:0").
absl::StatusOr<std::string> ResolveDevice(const std::string& device);

std::string LibTorchVersion();

// Reads a CUDA device's memory from the driver (cudaMemGetInfo: total, and
// used = total - free, which includes other processes and the CUDA context).
// `device` is canonical ("cuda:0"). Safe to call from any thread; in a build
// without CUDA the reader answers UNAVAILABLE.
DeviceMemoryReader CudaMemoryReader(const std::string& device);

// Hands the CUDA caching allocator's unused blocks on `device` back to the
// driver, so that after an out-of-memory failure the next job starts from a
// clean device. Nothing to do on the CPU.
void ReleaseCachedDeviceMemory(const std::string& device);

// Keeps glibc malloc from handing large freed buffers back to the kernel
// after every step (see the .cc). Call once at start-up, before threads.
void ConfigureHostAllocator();

}  // namespace mantissa

#endif  // MANTISSA_SERVER_RUNTIME_TORCH_RUNTIME_H_
