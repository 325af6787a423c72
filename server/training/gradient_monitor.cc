#include "server/training/gradient_monitor.h"

#include <unordered_map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "mantissa/v1/training.pb.h"
#include "server/common/torch_compat.h"

namespace mantissa {
namespace {

// state_ (float64 on the device): these fields, then one flag per parameter
// (1: its gradient norm was not finite in the interval's first non-finite
// step). All zeros is an empty interval, so Read resets with one fill. The
// order lets Observe update neighbours with one op.
enum Field : int64_t {
  kSteps,
  kFiniteSteps,  // steps whose total norm was finite
  kNonFiniteSteps,
  kLatestNorm,
  kMaxNorm,
  kFirstIndex,  // valid when kNonFiniteSteps > 0
  kFirstLossNonFinite,
  kFields,
};

// The per-parameter L2 norms of the gradients, [parameters], accumulated in
// float32, or float64 when a gradient is float64 or when `scaled`: the
// squares of gradients scaled by the grad scaler (up to float32's maximum)
// overflow float32 while the gradients are finite. 0 for a missing gradient.
torch::Tensor Norms(const std::vector<torch::Tensor>& parameters, const torch::Device& device,
                    bool scaled) {
  std::vector<torch::Tensor> grads;
  grads.reserve(parameters.size());
  bool float64 = scaled;
  for (const torch::Tensor& parameter : parameters) {
    const torch::Tensor& grad = parameter.grad();
    if (!grad.defined()) continue;
    grads.push_back(grad);
    float64 = float64 || grad.scalar_type() == torch::kFloat64;
  }
  const torch::ScalarType dtype = float64 ? torch::kFloat64 : torch::kFloat32;
  const auto options = torch::TensorOptions(dtype).device(device);
  // No gradient at all (and _foreach_norm refuses an empty list): all 0.
  if (grads.empty()) return torch::zeros({static_cast<int64_t>(parameters.size())}, options);
  std::vector<torch::Tensor> norms = compat::L2Norms(grads, dtype);
  if (norms.size() < parameters.size()) {
    // Zeros where a parameter has no gradient, in parameter order.
    std::vector<torch::Tensor> all;
    all.reserve(parameters.size());
    auto next = norms.begin();
    for (const torch::Tensor& parameter : parameters) {
      all.push_back(parameter.grad().defined() ? *next++ : torch::zeros({}, options));
    }
    norms = std::move(all);
  }
  return torch::stack(norms);
}

// The indices whose flag is set, last first (the order backward reaches
// the parameters).
std::vector<int> BackwardOrder(const torch::Tensor& flags) {
  const torch::Tensor host = flags.to(torch::kCPU, torch::kFloat64).contiguous();
  const double* data = host.data_ptr<double>();
  std::vector<int> indices;
  for (int64_t i = host.numel() - 1; i >= 0; --i) {
    if (data[i] != 0) indices.push_back(static_cast<int>(i));
  }
  return indices;
}

}  // namespace

GradientMonitor::GradientMonitor(Options options) : options_(std::move(options)) {
  const int64_t n = static_cast<int64_t>(options_.parameter_names.size());
  const auto float64 = torch::TensorOptions(torch::kFloat64).device(options_.device);
  state_ = torch::zeros({kFields + n}, float64);
  flags_ = state_.narrow(0, kFields, n);
  one_ = torch::ones({1}, float64);
}

torch::Tensor GradientMonitor::Observe(const std::vector<torch::Tensor>& parameters,
                                       const torch::Tensor& unscale, const torch::Tensor& loss) {
  torch::NoGradGuard no_grad;
  torch::Tensor norms = Norms(parameters, options_.device, /*scaled=*/unscale.defined());
  if (unscale.defined()) norms = norms * unscale.to(norms.scalar_type());
  const torch::Tensor total = norms.norm(2);
  const torch::Tensor step_loss = loss.defined()
                                      ? loss.detach().reshape({1}).to(norms.scalar_type())
                                      : torch::zeros({1}, norms.options());
  // Few ops, each in place and branch-free, so that a captured graph
  // replays them and a step costs little more than its norms.
  // [total, loss, each parameter's norm]: one finiteness test for them all.
  const int64_t n = norms.numel();
  const torch::Tensor non_finite =
      torch::cat({total.reshape({1}), step_loss, norms}).isfinite().logical_not();
  const torch::Tensor finite = non_finite.narrow(0, 0, 1).logical_not();
  const torch::Tensor bad = non_finite.narrow(0, 1, n + 1).any().reshape({1});
  // The interval's first non-finite step: its fields (index, loss flag,
  // parameter flags) are still zero, so adding writes them.
  const torch::Tensor first = bad.logical_and(state_.narrow(0, kNonFiniteSteps, 1) == 0);
  state_.narrow(0, kFirstIndex, n + 2)
      .add_(torch::cat({state_.narrow(0, kSteps, 1), non_finite.narrow(0, 1, n + 1)}) * first);
  // The latest and the largest finite norm.
  const torch::Tensor total64 = total.reshape({1}).to(torch::kFloat64);
  torch::Tensor norm_fields = state_.narrow(0, kLatestNorm, 2);
  norm_fields.copy_(torch::where(
      finite, torch::cat({total64, torch::maximum(total64, state_.narrow(0, kMaxNorm, 1))}),
      norm_fields));
  state_.narrow(0, kSteps, 3).add_(torch::cat({one_, finite, bad}));
  return total;
}

GradientMonitor::Interval GradientMonitor::Read(
    const std::function<void(const torch::Tensor&)>& reduce_max) {
  if (reduce_max) reduce_max(state_);
  const torch::Tensor host =
      state_.to(torch::kCPU, /*non_blocking=*/false, /*copy=*/true).contiguous();
  state_.zero_();
  const double* s = host.data_ptr<double>();
  Interval interval;
  interval.steps = static_cast<int64_t>(s[kSteps]);
  if (s[kFiniteSteps] > 0) {
    interval.grad_norm = s[kLatestNorm];
    interval.max_grad_norm = s[kMaxNorm];
  }
  interval.non_finite_steps = static_cast<int64_t>(s[kNonFiniteSteps]);
  if (interval.non_finite_steps > 0) {
    interval.first_non_finite_index = static_cast<int64_t>(s[kFirstIndex]);
    interval.loss_non_finite = s[kFirstLossNonFinite] != 0;
    interval.non_finite_parameters = BackwardOrder(host.narrow(0, kFields, flags_.numel()));
  }
  return interval;
}

std::vector<int> GradientMonitor::NonFiniteNow(const std::vector<torch::Tensor>& parameters) const {
  torch::NoGradGuard no_grad;
  return BackwardOrder(
      Norms(parameters, options_.device, /*scaled=*/true).isfinite().logical_not());
}

std::vector<std::string> ParameterNames(
    const std::vector<torch::Tensor>& model_parameters,
    const std::vector<std::pair<std::string, torch::Tensor>>& named) {
  std::unordered_map<const void*, const std::string*> by_tensor;
  for (const auto& [name, tensor] : named) by_tensor.emplace(tensor.unsafeGetTensorImpl(), &name);
  std::vector<std::string> names;
  names.reserve(model_parameters.size());
  for (size_t i = 0; i < model_parameters.size(); ++i) {
    auto it = by_tensor.find(model_parameters[i].unsafeGetTensorImpl());
    names.push_back(it != by_tensor.end() ? *it->second : absl::StrCat("parameter ", i));
  }
  return names;
}

std::string DescribeNonFiniteStep(const v1::NonFiniteStep& step, int64_t batches_per_epoch,
                                  int parameter_count) {
  const std::string batches = step.batches() > 1 ? absl::StrCat("batches ", step.batch(), "-",
                                                                step.batch() + step.batches() - 1)
                                                 : absl::StrCat("batch ", step.batch());
  std::string text = absl::StrCat("step ", step.step(), " (epoch ", step.epoch(), ", ", batches,
                                  " of ", batches_per_epoch, " in the seeded order, items ",
                                  step.first_item(), "-", step.first_item() + step.items() - 1,
                                  "): loss ", step.loss_non_finite() ? "not finite" : "finite");
  if (step.non_finite_parameters() > 0) {
    absl::StrAppend(&text, "; non-finite gradients in ", step.non_finite_parameters(), " of ",
                    parameter_count, " parameters: ", absl::StrJoin(step.parameters(), ", "),
                    step.non_finite_parameters() > step.parameters_size() ? ", ..." : "");
  } else {
    absl::StrAppend(&text, "; gradients finite");
  }
  if (step.skipped()) absl::StrAppend(&text, "; skipped by the grad scaler");
  if (step.steps_in_interval() > 1) {
    absl::StrAppend(&text, "; the first of ", step.steps_in_interval(),
                    " such steps since the previous report");
  }
  return text;
}

}  // namespace mantissa
