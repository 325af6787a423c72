#include "server/runtime/torch_runtime.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <malloc.h>

#include <thread>

#ifdef MANTISSA_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>
#endif

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/common/torch_compat.h"

namespace mantissa {

int ConfigureIntraOpThreads(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(threads);
  // Which OpenBLAS build is loaded (libblas.so.3 is a Debian alternative):
  // 0 sequential, 1 its own pthread pool, 2 OpenMP. Looked up at run time:
  // other BLAS libraries (MKL) lack these symbols and manage themselves.
  using GetParallel = int (*)();
  using SetThreads = void (*)(int);
  auto get = reinterpret_cast<GetParallel>(dlsym(RTLD_DEFAULT, "openblas_get_parallel"));
  auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (set == nullptr) return at::get_num_threads();
  if (get != nullptr && get() == 2) {
    // The OpenMP build shares LibTorch's OpenMP pool: a GEMM outside a
    // parallel region uses all intra-op threads, one inside it runs serially.
    set(threads);
  } else {
    // A pthread pool on top of LibTorch's OpenMP pool oversubscribes the
    // cores and spins between GEMMs (on two cores an MLP step took 15 ms
    // instead of 5.3 ms), so it stays at one thread.
    set(1);
  }
  return at::get_num_threads();
}

std::string BlasThreading() {
  using GetParallel = int (*)();
  using GetConfig = char* (*)();
  auto get = reinterpret_cast<GetParallel>(dlsym(RTLD_DEFAULT, "openblas_get_parallel"));
  if (get == nullptr) return "not OpenBLAS";
  auto config = reinterpret_cast<GetConfig>(dlsym(RTLD_DEFAULT, "openblas_get_config"));
  const char* kinds[] = {"sequential", "pthreads", "OpenMP"};
  const int kind = get();
  return absl::StrCat("OpenBLAS ", kind >= 0 && kind <= 2 ? kinds[kind] : "unknown",
                      config != nullptr ? absl::StrCat(" (", config(), ")") : "");
}

absl::StatusOr<std::string> ResolveDevice(const std::string& device) {
  const bool cuda_available = compat::CudaAvailable();
  if (device == "auto") return std::string(cuda_available ? "cuda:0" : "cpu");
  if (device == "cpu") return device;
  int index = 0;
  if (device == "cuda") {
    index = 0;
  } else if (!absl::StartsWith(device, "cuda:") || !absl::SimpleAtoi(device.substr(5), &index) ||
             index < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--device: '", device, "' is not one of auto, cpu, cuda, cuda:N"));
  }
  if (!cuda_available) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--device: ", device, " requested but no CUDA device is available to LibTorch ",
        compat::LibTorchVersion(), " in this process"));
  }
  if (index >= compat::CudaDeviceCount()) {
    return absl::FailedPreconditionError(absl::StrCat("--device: ", device, " requested but only ",
                                                      compat::CudaDeviceCount(),
                                                      " CUDA device(s) are present"));
  }
  return absl::StrCat("cuda:", index);
}

std::string LibTorchVersion() { return compat::LibTorchVersion(); }

namespace {

// "cuda:3" -> 3.
int CudaIndex(const std::string& device) {
  int index = 0;
  if (absl::StartsWith(device, "cuda:")) (void)absl::SimpleAtoi(device.substr(5), &index);
  return index;
}

}  // namespace

DeviceMemoryReader CudaMemoryReader(const std::string& device) {
  const int index = CudaIndex(device);
  return [device, index]() -> absl::StatusOr<DeviceMemory> {
#ifdef MANTISSA_WITH_CUDA
    // The scrape thread's current device is its own; the guard sets and
    // restores it.
    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(index));
    size_t free_bytes = 0;
    size_t total_bytes = 0;
    const cudaError_t err = cudaMemGetInfo(&free_bytes, &total_bytes);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();  // clear it, or the next CUDA call reports it again
      return absl::UnavailableError(
          absl::StrCat(device, ": cudaMemGetInfo failed: ", cudaGetErrorString(err)));
    }
    DeviceMemory memory;
    memory.total_bytes = static_cast<int64_t>(total_bytes);
    memory.used_bytes = static_cast<int64_t>(total_bytes - free_bytes);
    return memory;
#else
    (void)index;
    return absl::UnavailableError(absl::StrCat(device, ": this build has no CUDA"));
#endif
  };
}

void ReleaseCachedDeviceMemory(const std::string& device) {
#ifdef MANTISSA_WITH_CUDA
  if (!absl::StartsWith(device, "cuda")) return;
  // Best effort: this runs after a failure, outside any GuardTorch.
  try {
    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(CudaIndex(device)));
    c10::cuda::CUDACachingAllocator::emptyCache();
  } catch (const c10::Error&) {
  }
#else
  (void)device;
#endif
}

void ConfigureHostAllocator() {
  // LibTorch's CPU allocator is plain malloc. By default glibc serves every
  // buffer above ~128 KiB-32 MiB with its own mmap and returns freed heap
  // tops to the kernel, so each training step faults its activations in
  // again. Measured on 2 cores: a cnn epoch on Fashion-MNIST took 48 s (35 s
  // of it system time) and 13.8 s with these settings. The cost is that
  // freed memory stays in the process for reuse, as with a caching allocator.
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
  mallopt(M_TOP_PAD, 64 << 20);
}

}  // namespace mantissa
