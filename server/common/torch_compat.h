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
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

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

// c10d's process groups, declared here so that this header needs none of
// c10d's (whose Gloo and NCCL parts need their libraries' headers).
namespace c10d {
class ProcessGroup;
class Backend;
}  // namespace c10d

namespace mantissa::compat {

inline std::string LibTorchVersion() {
  return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
         std::to_string(TORCH_VERSION_PATCH);
}

inline bool CudaAvailable() { return torch::cuda::is_available(); }

inline int CudaDeviceCount() { return static_cast<int>(torch::cuda::device_count()); }

// Waits for the device's queued work; nothing to wait for on the CPU.
inline void Synchronize(const c10::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.has_index() ? device.index() : -1);
}

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

// FP8: the float8 dtypes and at::_scaled_mm (per-tensor scales returning one
// tensor) exist from LibTorch 2.4, and _scaled_mm runs on CUDA sm_89+ only.
// Without them the FP8 plugin emulates the formats with float math.
#if MANTISSA_TORCH_AT_LEAST(2, 4)
inline constexpr bool kHasFp8 = true;
#else
inline constexpr bool kHasFp8 = false;
#endif

// Float8_e4m3fn (no infinities, max 448) or Float8_e5m2 (max 57344). Throws
// where !kHasFp8.
inline at::ScalarType Float8Dtype(bool e5m2) {
#if MANTISSA_TORCH_AT_LEAST(2, 4)
  return e5m2 ? at::ScalarType::Float8_e5m2 : at::ScalarType::Float8_e4m3fn;
#else
  TORCH_CHECK(false, "float8 dtypes need LibTorch >= 2.4; this is ", LibTorchVersion());
  return at::ScalarType::Undefined;
#endif
}

// out = (a * scale_a) @ (b * scale_b) [+ bias] in out_dtype, accumulated in
// float32: a [M, K] row-major and b [K, N] column-major float8 tensors, K and
// N multiples of 16; scale_a and scale_b one-element float32 tensors holding
// the dequantization (inverse) scales; bias [N] in out_dtype (bf16/fp16).
// Throws where !kHasFp8.
inline torch::Tensor ScaledMm(const torch::Tensor& a, const torch::Tensor& b,
                              const torch::Tensor& scale_a, const torch::Tensor& scale_b,
                              const torch::Tensor& bias, at::ScalarType out_dtype,
                              bool use_fast_accum) {
#if MANTISSA_TORCH_AT_LEAST(2, 4)
  c10::optional<torch::Tensor> maybe_bias;
  if (bias.defined()) maybe_bias = bias;
  return at::_scaled_mm(a, b, scale_a, scale_b, maybe_bias, /*scale_result=*/{}, out_dtype,
                        use_fast_accum);
#else
  TORCH_CHECK(false, "at::_scaled_mm needs LibTorch >= 2.4; this is ", LibTorchVersion());
  return {};
#endif
}

// Fused Adam/AdamW CUDA kernels taking the lr as a device tensor (so a CUDA
// graph replays the current lr) and the grad scaler's grad_scale/found_inf.
// 1.13 has _fused_adam_ with a double lr only and no _fused_adamw_; the
// Tensor-lr overloads are there from 2.2.
constexpr bool kHasFusedAdam = MANTISSA_TORCH_AT_LEAST(2, 2);

// One fused step over same-device, same-dtype lists. `grad_scale` undefined:
// the gradients are already unscaled; `found_inf` undefined: never skip.
// The kernels read `steps` (float32) but do not advance them.
inline void FusedAdamStep(bool adamw, at::TensorList params, at::TensorList grads,
                          at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
                          at::TensorList max_exp_avg_sqs, at::TensorList steps,
                          const at::Tensor& lr, double beta1, double beta2, double weight_decay,
                          double eps, bool amsgrad, const at::Tensor& grad_scale,
                          const at::Tensor& found_inf) {
#if MANTISSA_TORCH_AT_LEAST(2, 2)
  const c10::optional<at::Tensor> scale =
      grad_scale.defined() ? c10::optional<at::Tensor>(grad_scale) : c10::nullopt;
  const c10::optional<at::Tensor> inf =
      found_inf.defined() ? c10::optional<at::Tensor>(found_inf) : c10::nullopt;
  if (adamw) {
    at::_fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, lr, beta1,
                      beta2, weight_decay, eps, amsgrad, /*maximize=*/false, scale, inf);
  } else {
    at::_fused_adam_(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, lr, beta1, beta2,
                     weight_decay, eps, amsgrad, /*maximize=*/false, scale, inf);
  }
#else
  TORCH_CHECK(false, "fused Adam/AdamW needs LibTorch >= 2.2, this is ", LibTorchVersion());
#endif
}

// The L2 norm of each tensor, accumulated and returned in `dtype` (a bf16
// gradient's norm in float32): one fused kernel for the list where
// _foreach_norm takes a dtype (from 2.5), one reduction per tensor before.
inline std::vector<at::Tensor> L2Norms(at::TensorList tensors, at::ScalarType dtype) {
#if MANTISSA_TORCH_AT_LEAST(2, 5)
  return at::_foreach_norm(tensors, 2, dtype);
#else
  std::vector<at::Tensor> norms;
  norms.reserve(tensors.size());
  for (const at::Tensor& t : tensors) {
    norms.push_back(at::linalg_vector_norm(t, 2, c10::nullopt, /*keepdim=*/false, dtype));
  }
  return norms;
#endif
}

// c10d: LibTorch 1.13's ProcessGroupGloo and ProcessGroupNCCL derive
// c10d::ProcessGroup; from 2.0 a ProcessGroup dispatches to c10d::Backends,
// which they derive instead. Either has broadcast/allreduce returning a
// c10d::Work, and is usable on its own.
#if MANTISSA_TORCH_AT_LEAST(2, 0)
using C10dBackend = c10d::Backend;
#else
using C10dBackend = c10d::ProcessGroup;
#endif

// torch::optim::Optimizer::state_ is keyed by the parameter's TensorImpl:
// its address printed as a string in 1.13, the pointer itself in 2.x.
template <typename StateMap>
typename StateMap::key_type OptimizerStateKey(const at::Tensor& param) {
  if constexpr (std::is_same_v<typename StateMap::key_type, std::string>) {
    std::ostringstream key;  // what c10::guts::to_string does in 1.13
    key << param.unsafeGetTensorImpl();
    return key.str();
  } else {
    return param.unsafeGetTensorImpl();
  }
}

// Profiler events (torch::autograd::profiler::KinetoEvent) give their times
// in microseconds in 1.13 (startUs, durationUs) and in nanoseconds in later
// 2.x (startNs, durationNs; 2.11 has only these). Detected rather than keyed
// to a version, so this header needs no profiler header.
template <typename Event, typename = void>
struct EventHasNanoseconds : std::false_type {};
template <typename Event>
struct EventHasNanoseconds<Event, std::void_t<decltype(std::declval<const Event&>().durationNs())>>
    : std::true_type {};

template <typename Event>
int64_t EventStartNanos(const Event& e) {
  if constexpr (EventHasNanoseconds<Event>::value) {
    return static_cast<int64_t>(e.startNs());
  } else {
    return static_cast<int64_t>(e.startUs()) * 1000;
  }
}

template <typename Event>
int64_t EventDurationNanos(const Event& e) {
  if constexpr (EventHasNanoseconds<Event>::value) {
    return static_cast<int64_t>(e.durationNs());
  } else {
    return static_cast<int64_t>(e.durationUs()) * 1000;
  }
}

}  // namespace mantissa::compat

#endif  // MANTISSA_SERVER_COMMON_TORCH_COMPAT_H_
