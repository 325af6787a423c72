#ifndef MANTISSA_SERVER_COMMON_TORCH_COMPAT_H_
#define MANTISSA_SERVER_COMMON_TORCH_COMPAT_H_

// The only place that looks at TORCH_VERSION. Mantissa builds against
// Debian's LibTorch 1.13 (CPU) and against LibTorch 2.x with CUDA; every API
// difference between them is wrapped here.

#include <ATen/autocast_mode.h>
#include <c10/core/DefaultDtype.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <cmath>
#include <limits>
#include <string>

#define MANTISSA_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) ||           \
   (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

// c10::Allocator: LibTorch 2.3 made allocate() non-const and requires every
// allocator to implement copy_data().
#if MANTISSA_TORCH_AT_LEAST(2, 3)
#define MANTISSA_ALLOCATOR_ALLOCATE_CONST
#define MANTISSA_ALLOCATOR_HAS_COPY_DATA 1
#else
#define MANTISSA_ALLOCATOR_ALLOCATE_CONST const
#define MANTISSA_ALLOCATOR_HAS_COPY_DATA 0
#endif

namespace mantissa::compat {

inline std::string LibTorchVersion() {
  return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
         std::to_string(TORCH_VERSION_PATCH);
}

inline bool CudaAvailable() { return torch::cuda::is_available(); }

inline int CudaDeviceCount() { return static_cast<int>(torch::cuda::device_count()); }

// Autocast state is thread-local. LibTorch 1.13 has one setter per device
// kind (set_enabled = CUDA, set_cpu_enabled); 2.4+ takes the device type.
inline bool AutocastEnabled(c10::DeviceType device_type) {
#if MANTISSA_TORCH_AT_LEAST(2, 4)
  return at::autocast::is_autocast_enabled(device_type);
#else
  return device_type == c10::DeviceType::CUDA ? at::autocast::is_enabled()
                                              : at::autocast::is_cpu_enabled();
#endif
}

inline void SetAutocastEnabled(c10::DeviceType device_type, bool enabled) {
#if MANTISSA_TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_enabled(device_type, enabled);
#else
  if (device_type == c10::DeviceType::CUDA) {
    at::autocast::set_enabled(enabled);
  } else {
    at::autocast::set_cpu_enabled(enabled);
  }
#endif
}

inline at::ScalarType AutocastDtype(c10::DeviceType device_type) {
#if MANTISSA_TORCH_AT_LEAST(2, 4)
  return at::autocast::get_autocast_dtype(device_type);
#else
  return device_type == c10::DeviceType::CUDA ? at::autocast::get_autocast_gpu_dtype()
                                              : at::autocast::get_autocast_cpu_dtype();
#endif
}

inline void SetAutocastDtype(c10::DeviceType device_type, at::ScalarType dtype) {
#if MANTISSA_TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_dtype(device_type, dtype);
#else
  if (device_type == c10::DeviceType::CUDA) {
    at::autocast::set_autocast_gpu_dtype(dtype);
  } else {
    at::autocast::set_autocast_cpu_dtype(dtype);
  }
#endif
}

// torch.autocast(device_type, dtype) as an RAII scope on the calling thread:
// sets enabled + dtype, counts nesting, and on exit restores both and clears
// the cast cache when the outermost scope ends (as torch.autocast.__exit__).
class AutocastGuard {
 public:
  AutocastGuard(c10::DeviceType device_type, at::ScalarType dtype)
      : device_type_(device_type),
        prev_enabled_(AutocastEnabled(device_type)),
        prev_dtype_(AutocastDtype(device_type)) {
    SetAutocastDtype(device_type, dtype);
    SetAutocastEnabled(device_type, true);
    at::autocast::increment_nesting();
  }
  ~AutocastGuard() {
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    SetAutocastEnabled(device_type_, prev_enabled_);
    SetAutocastDtype(device_type_, prev_dtype_);
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  const c10::DeviceType device_type_;
  const bool prev_enabled_;
  const at::ScalarType prev_dtype_;
};

// torch.set_default_dtype as an RAII scope. Process-wide, not thread-local:
// callers serialise model construction around it.
class DefaultDtypeGuard {
 public:
  explicit DefaultDtypeGuard(at::ScalarType dtype) : prev_(c10::get_default_dtype()) {
    c10::set_default_dtype(c10::scalarTypeToTypeMeta(dtype));
  }
  ~DefaultDtypeGuard() { c10::set_default_dtype(prev_); }
  DefaultDtypeGuard(const DefaultDtypeGuard&) = delete;
  DefaultDtypeGuard& operator=(const DefaultDtypeGuard&) = delete;

 private:
  const caffe2::TypeMeta prev_;
};

// Causal scaled dot-product attention over q, k, v [N, heads, T, head_dim]:
// position t attends to positions <= t. LibTorch 2.x has a fused kernel
// (flash / memory-efficient on CUDA); 1.13 gets the explicit equivalent, with
// the softmax in float32 so bf16 weights or autocast do not lose the mask's
// -inf or the normalisation.
inline torch::Tensor CausalSelfAttention(const torch::Tensor& q, const torch::Tensor& k,
                                         const torch::Tensor& v, double dropout_p, bool training) {
#if MANTISSA_TORCH_AT_LEAST(2, 0)
  return at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, training ? dropout_p : 0.0,
                                          /*is_causal=*/true);
#else
  const int64_t t = q.size(-2);
  torch::Tensor scores =
      torch::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(static_cast<double>(q.size(-1))));
  const torch::Tensor future =
      torch::ones({t, t}, torch::TensorOptions().dtype(torch::kBool).device(q.device())).triu(1);
  torch::Tensor weights = scores.to(torch::kFloat32)
                              .masked_fill(future, -std::numeric_limits<float>::infinity())
                              .softmax(-1)
                              .to(q.scalar_type());
  if (training && dropout_p > 0.0) weights = torch::dropout(weights, dropout_p, /*train=*/true);
  return torch::matmul(weights, v);
#endif
}

}  // namespace mantissa::compat

#endif  // MANTISSA_SERVER_COMMON_TORCH_COMPAT_H_
