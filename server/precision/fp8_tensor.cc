#include "server/precision/fp8_tensor.h"

#include <cmath>

#include "server/common/torch_compat.h"

namespace mantissa {
namespace {

struct Fp8Spec {
  int64_t mantissa_bits;
  int64_t min_normal_exponent;  // of the smallest normal value, 2^-6 or 2^-14
  double max;
};

Fp8Spec SpecOf(Fp8Dtype dtype) {
  return dtype == Fp8Dtype::kE4M3 ? Fp8Spec{3, -6, 448.0} : Fp8Spec{2, -14, 57344.0};
}

}  // namespace

std::string Fp8DtypeName(Fp8Dtype dtype) { return dtype == Fp8Dtype::kE4M3 ? "E4M3" : "E5M2"; }

double Fp8Max(Fp8Dtype dtype) { return SpecOf(dtype).max; }

torch::Tensor RoundToFp8(const torch::Tensor& x, Fp8Dtype dtype) {
  const Fp8Spec spec = SpecOf(dtype);
  const torch::Tensor value = x.to(torch::kFloat32);
  // In place on the function's own temporaries: fresh tensors cost page
  // faults on the CPU, and this runs on every GEMM operand.
  torch::Tensor magnitude = value.abs().clamp_max_(spec.max).contiguous();
  // The binade 2^e of each value, read from the float32 exponent bits
  // (frexp and exp2 are an order of magnitude slower on the CPU). Below the
  // smallest normal binade the spacing stays that of the subnormals. Then
  // the spacing of representable values there, 2^(e - mantissa_bits), built
  // from its bits: a power of two, so the division below is exact and
  // round_ (ties to even) does the rounding.
  torch::Tensor spacing = at::__rshift__(magnitude.view(torch::kInt32), 23);
  spacing.clamp_min_(spec.min_normal_exponent + 127).sub_(spec.mantissa_bits).__ilshift__(23);
  const torch::Tensor spacing_f = spacing.view(torch::kFloat32);
  return magnitude.div_(spacing_f).round_().mul_(spacing_f).clamp_max_(spec.max).copysign_(value);
}

Fp8Tensor QuantizeFp8(const torch::Tensor& x, const torch::Tensor& scale, Fp8Dtype dtype,
                      Fp8Backend backend) {
  const double max = Fp8Max(dtype);
  // A float32 copy first: a bf16 x times a 0-dim float32 scale would stay
  // bf16, and the copy is ours to scale in place.
  torch::Tensor scaled = x.to(torch::kFloat32, /*non_blocking=*/false, /*copy=*/true);
  scaled.mul_(scale).clamp_(-max, max);
  Fp8Tensor out;
  out.dtype = dtype;
  out.scale_inv = scale.reciprocal();
  out.data = backend == Fp8Backend::kScaledMm
                 ? scaled.to(compat::Float8Dtype(dtype == Fp8Dtype::kE5M2))
                 : RoundToFp8(scaled, dtype);
  return out;
}

torch::Tensor Amax(const torch::Tensor& x) {
  // max() of an empty tensor throws; numel() is metadata, not a sync.
  if (x.numel() == 0) return torch::zeros({}, x.options());
  // On CUDA the infinity norm is one reduction kernel (abs-max), where the
  // min/max pair below takes three; on the CPU it is ~30x slower than
  // aminmax for bf16.
  if (x.is_cuda()) return at::linalg_vector_norm(x, INFINITY);
  const auto [min, max] = torch::aminmax(x);
  return torch::maximum(max, min.neg());
}

torch::Tensor Fp8Mm(const Fp8Tensor& a, const Fp8Tensor& b, const torch::Tensor& bias,
                    torch::Dtype out_dtype, bool use_fast_accum, Fp8Backend backend) {
  if (backend == Fp8Backend::kEmulated) {
    torch::Tensor out = torch::mm(a.data, b.data);
    out.mul_(a.scale_inv * b.scale_inv);
    if (bias.defined()) out.add_(bias.to(torch::kFloat32));
    return out.to(out_dtype);
  }
  // cuBLASLt's FP8 GEMM wants A row-major and B column-major.
  const torch::Tensor a_rows = a.data.is_contiguous() ? a.data : a.data.contiguous();
  const torch::Tensor b_cols = b.data.t().is_contiguous() ? b.data : b.data.t().contiguous().t();
  // _scaled_mm adds a bias only in a half-precision out_dtype of its own dtype.
  const bool fused_bias =
      bias.defined() && bias.scalar_type() == out_dtype && out_dtype != torch::kFloat32;
  torch::Tensor out =
      compat::ScaledMm(a_rows, b_cols, a.scale_inv, b.scale_inv,
                       fused_bias ? bias : torch::Tensor(), out_dtype, use_fast_accum);
  if (bias.defined() && !fused_bias) out.add_(bias);
  return out;
}

}  // namespace mantissa
