#ifndef MANTISSA_SERVER_PRECISION_FP8_TENSOR_H_
#define MANTISSA_SERVER_PRECISION_FP8_TENSOR_H_

#include <torch/torch.h>

#include <string>

namespace mantissa {

// The two FP8 formats of TransformerEngine's recipes (OCP FP8): E4M3 in its
// "fn" variant (no infinities, max 448) and E5M2 (max 57344).
enum class Fp8Dtype { kE4M3, kE5M2 };

std::string Fp8DtypeName(Fp8Dtype dtype);  // "E4M3", "E5M2"

// The largest finite value: 448 (E4M3), 57344 (E5M2).
double Fp8Max(Fp8Dtype dtype);

// Rounds every value to the nearest one `dtype` represents, ties to even (3
// mantissa bits for E4M3, 2 for E5M2, subnormals included), saturating at
// +-max; NaN stays NaN. Plain float math, float32 out: the emulation for the
// CPU and for LibTorch builds without float8 dtypes.
torch::Tensor RoundToFp8(const torch::Tensor& x, Fp8Dtype dtype);

// Where FP8 tensors live and their GEMMs run.
enum class Fp8Backend {
  // float8 tensors and at::_scaled_mm: CUDA sm_89+, LibTorch >= 2.4.
  kScaledMm,
  // FP8 values held in float32 and multiplied with float32 matmuls; the same
  // numbers up to accumulation order, anywhere (CPU, LibTorch 1.13, tests).
  kEmulated,
};

// A tensor quantized to FP8 with one scale: data * scale_inv approximates
// the original.
struct Fp8Tensor {
  torch::Tensor data;       // float8 (kScaledMm) or float32 on the FP8 grid (kEmulated)
  torch::Tensor scale_inv;  // float32 [], 1 / the scale `data` was quantized with
  Fp8Dtype dtype = Fp8Dtype::kE4M3;

  // The transpose (a view: the layout GEMMs need is made by Fp8Mm).
  Fp8Tensor t() const { return {data.t(), scale_inv, dtype}; }
};

// Casts x * scale to `dtype`, saturating at +-max as TransformerEngine's casts
// do (a plain float8 cast would turn E4M3 overflow into NaN). `scale`:
// float32 [] on x's device. Device ops only: no host sync.
Fp8Tensor QuantizeFp8(const torch::Tensor& x, const torch::Tensor& scale, Fp8Dtype dtype,
                      Fp8Backend backend);

// max |x| as a 0-dim tensor in x's dtype (exact: it is one of x's values),
// on x's device; NaN where x has one.
torch::Tensor Amax(const torch::Tensor& x);

// (a * a.scale_inv) @ (b * b.scale_inv) [+ bias] in out_dtype, accumulated in
// float32: a [M, K], b [K, N] in any layout (copied to the row-major a and
// column-major b that _scaled_mm needs where they are not). With kScaledMm, K
// and N must be multiples of 16. bias: optional, [N]; fused into the GEMM where
// _scaled_mm allows it (bf16/fp16 out of the same dtype), added after otherwise.
// use_fast_accum: _scaled_mm's faster, less precise accumulation
// (TransformerEngine uses it for the forward GEMM only).
torch::Tensor Fp8Mm(const Fp8Tensor& a, const Fp8Tensor& b, const torch::Tensor& bias,
                    torch::Dtype out_dtype, bool use_fast_accum, Fp8Backend backend);

}  // namespace mantissa

#endif  // MANTISSA_SERVER_PRECISION_FP8_TENSOR_H_
