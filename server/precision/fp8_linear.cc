#include "server/precision/fp8_linear.h"

#include <vector>

namespace mantissa {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// _scaled_mm needs every GEMM dimension but the forward's M to be a multiple
// of 16, and the token count is the weight gradient's K: zero rows pad it
// (they add nothing to any product). The emulation needs no padding.
torch::Tensor PadRows(const torch::Tensor& x, Fp8Backend backend) {
  const int64_t pad = backend == Fp8Backend::kScaledMm ? (16 - x.size(0) % 16) % 16 : 0;
  return pad == 0 ? x : torch::constant_pad_nd(x, {0, 0, 0, pad});
}

// The first `rows` rows of y [R, N] reshaped to `shape`, as a tensor of its
// own rather than a view (autograd is stricter with views returned from
// custom functions).
torch::Tensor Unpad(const torch::Tensor& y, int64_t rows, torch::IntArrayRef shape) {
  return at::_unsafe_view(y.narrow(0, 0, rows), shape);
}

std::vector<int64_t> WithLastDim(torch::IntArrayRef shape, int64_t last) {
  std::vector<int64_t> out(shape.begin(), shape.end());
  out.back() = last;
  return out;
}

// The GEMMs of Fp8LinearImpl as one autograd function, so the backward sees
// the FP8 operands the forward made (TransformerEngine keeps them too)
// instead of quantizing the input and weight again.
class Fp8LinearFunction : public torch::autograd::Function<Fp8LinearFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& input,
                               const torch::Tensor& weight,
                               const c10::optional<torch::Tensor>& bias,
                               c10::intrusive_ptr<Fp8LinearState> state, bool record_amaxes) {
    // Autocast (the plugin's fallback for the other ops) must not recast
    // what this function computes.
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    const Fp8Backend backend = state->backend;
    const torch::Tensor x = PadRows(input.reshape({-1, weight.size(1)}), backend);
    const int64_t rows = input.numel() / weight.size(1);

    Fp8Tensor xq = QuantizeFp8(x, state->input.scale(), state->input.dtype(), backend);
    Fp8Tensor wq = QuantizeFp8(weight, state->weight.scale(), state->weight.dtype(), backend);
    if (record_amaxes) {
      state->input.Record(Amax(x));
      state->weight.Record(Amax(weight));
    }
    const torch::Tensor y = Fp8Mm(xq, wq.t(), bias.value_or(torch::Tensor()), weight.scalar_type(),
                                  /*use_fast_accum=*/true, backend);

    ctx->saved_data["x"] = xq.data;
    ctx->saved_data["x_scale_inv"] = xq.scale_inv;
    ctx->saved_data["w"] = wq.data;
    ctx->saved_data["w_scale_inv"] = wq.scale_inv;
    ctx->saved_data["input_shape"] = input.sizes().vec();
    ctx->saved_data["input_dtype"] = input.scalar_type();
    ctx->saved_data["has_bias"] = bias.has_value();
    ctx->saved_data["state"] = c10::IValue::make_capsule(state);
    return Unpad(y, rows, WithLastDim(input.sizes(), weight.size(0)));
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    auto state =
        c10::static_intrusive_pointer_cast<Fp8LinearState>(ctx->saved_data["state"].toCapsule());
    const Fp8Backend backend = state->backend;
    const Fp8Tensor xq{ctx->saved_data["x"].toTensor(), ctx->saved_data["x_scale_inv"].toTensor(),
                       state->input.dtype()};
    const Fp8Tensor wq{ctx->saved_data["w"].toTensor(), ctx->saved_data["w_scale_inv"].toTensor(),
                       state->weight.dtype()};
    const std::vector<int64_t> input_shape = ctx->saved_data["input_shape"].toIntVector();
    const int64_t rows = xq.data.size(0);  // padded like the forward's
    const int64_t out_features = wq.data.size(0);

    const torch::Tensor g_rows = grad_outputs[0].reshape({-1, out_features});
    const torch::Tensor g = PadRows(g_rows, backend);
    const Fp8Tensor gq =
        QuantizeFp8(g, state->grad_output.scale(), state->grad_output.dtype(), backend);
    state->grad_output.Record(Amax(g));
    TORCH_CHECK(g.size(0) == rows, "Fp8Linear backward: ", g.size(0), " gradient rows for ", rows,
                " input rows");

    torch::Tensor grad_input, grad_weight, grad_bias;
    if (ctx->needs_input_grad(0)) {
      // dX [M, in] = dY [M, out] @ W [out, in]
      const torch::Tensor dx =
          Fp8Mm(gq, wq, /*bias=*/{}, ctx->saved_data["input_dtype"].toScalarType(),
                /*use_fast_accum=*/false, backend);
      grad_input = Unpad(dx, g_rows.size(0), input_shape);
    }
    if (ctx->needs_input_grad(1)) {
      // dW [out, in] = dY^T [out, M] @ X [M, in]
      grad_weight = Fp8Mm(gq.t(), xq, /*bias=*/{}, grad_outputs[0].scalar_type(),
                          /*use_fast_accum=*/false, backend);
    }
    if (ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(2)) {
      grad_bias = g_rows.to(torch::kFloat32).sum(0).to(grad_outputs[0].scalar_type());
    }
    // One entry per forward argument; none for the state and the flag.
    return {grad_input, grad_weight, grad_bias, torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

Fp8LinearState::Fp8LinearState(const std::shared_ptr<Fp8ScalingGroup>& group, Fp8Backend backend)
    : backend(backend),
      input(group, group->recipe().forward_dtype()),
      weight(group, group->recipe().forward_dtype()),
      grad_output(group, group->recipe().backward_dtype()) {}

Fp8LinearImpl::Fp8LinearImpl(const torch::nn::LinearImpl& linear,
                             std::shared_ptr<Fp8ScalingGroup> group, Fp8Backend backend)
    : state_(c10::make_intrusive<Fp8LinearState>(group, backend)) {
  weight = register_parameter("weight", linear.weight);
  if (linear.bias.defined()) bias = register_parameter("bias", linear.bias);
}

torch::Tensor Fp8LinearImpl::forward(const torch::Tensor& input) {
  TORCH_CHECK(input.dim() >= 1 && input.size(-1) == in_features(), "Fp8Linear: input of shape ",
              input.sizes(), " for ", in_features(), " input features");
  state_->input.group().To(weight.device());
  // An optional, not an undefined tensor, for no bias: autograd functions
  // take no undefined tensor inputs.
  const c10::optional<torch::Tensor> maybe_bias =
      bias.defined() ? c10::optional<torch::Tensor>(bias) : c10::nullopt;
  return Fp8LinearFunction::apply(input, weight, maybe_bias, state_, is_training());
}

void Fp8LinearImpl::pretty_print(std::ostream& stream) const {
  stream << "mantissa::Fp8Linear(in_features=" << weight.size(1)
         << ", out_features=" << weight.size(0) << ", bias=" << (bias.defined() ? "true" : "false")
         << ")";
}

}  // namespace mantissa
