#include "server/training/fused_adam.h"

#include <cmath>
#include <map>
#include <memory>
#include <type_traits>

#include "server/common/torch_compat.h"

namespace mantissa {
namespace {

// The tensors of one kernel launch: one device, one dtype.
struct Launch {
  std::vector<torch::Tensor> params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps;
};

}  // namespace

bool FusedOptimizer::Supported(const std::vector<torch::Tensor>& parameters) {
  if (!compat::kHasFusedAdam || parameters.empty()) return false;
  for (const torch::Tensor& p : parameters) {
    if (!p.is_cuda() || !p.is_floating_point()) return false;
  }
  return true;
}

template <typename Base, typename BaseOptions, typename ParamState>
torch::Tensor FusedAdamImpl<Base, BaseOptions, ParamState>::step(
    torch::optim::Optimizer::LossClosure closure) {
  torch::Tensor loss;
  if (closure) {
    torch::AutoGradMode enable_grad(true);
    loss = closure();
  }
  FusedStep(torch::Tensor(), torch::Tensor());
  return loss;
}

template <typename Base, typename BaseOptions, typename ParamState>
void FusedAdamImpl<Base, BaseOptions, ParamState>::StepScaled(const torch::Tensor& grad_scale,
                                                              const torch::Tensor& found_inf) {
  FusedStep(grad_scale, found_inf);
}

template <typename Base, typename BaseOptions, typename ParamState>
void FusedAdamImpl<Base, BaseOptions, ParamState>::SyncLr() {
  auto& groups = this->param_groups();
  lrs_.resize(groups.size());
  lr_values_.resize(groups.size());
  for (size_t g = 0; g < groups.size(); ++g) {
    if (groups[g].params().empty()) continue;
    const double lr = groups[g].options().get_lr();
    if (!lrs_[g].defined()) {
      lrs_[g] = torch::full({}, lr,
                            torch::TensorOptions()
                                .dtype(torch::kFloat32)
                                .device(groups[g].params().front().device()));
    } else if (lr != lr_values_[g]) {
      lrs_[g].fill_(lr);
    }
    lr_values_[g] = lr;
  }
}

template <typename Base, typename BaseOptions, typename ParamState>
ParamState& FusedAdamImpl<Base, BaseOptions, ParamState>::StateFor(const torch::Tensor& param,
                                                                   bool amsgrad) {
  auto& states = this->state_;
  const auto key = compat::OptimizerStateKey<std::decay_t<decltype(states)>>(param);
  auto it = states.find(key);
  if (it == states.end()) {
    auto state = std::make_unique<ParamState>();
    state->step(0);
    state->exp_avg(torch::zeros_like(param, torch::MemoryFormat::Preserve));
    state->exp_avg_sq(torch::zeros_like(param, torch::MemoryFormat::Preserve));
    if (amsgrad) state->max_exp_avg_sq(torch::zeros_like(param, torch::MemoryFormat::Preserve));
    states[key] = std::move(state);
    it = states.find(key);
  }
  auto& state = static_cast<ParamState&>(*it->second);
  torch::Tensor& step = steps_[&state];
  if (!step.defined()) {
    step = torch::full({}, static_cast<double>(state.step()),
                       torch::TensorOptions().dtype(torch::kFloat32).device(param.device()));
  }
  return state;
}

template <typename Base, typename BaseOptions, typename ParamState>
void FusedAdamImpl<Base, BaseOptions, ParamState>::FusedStep(const torch::Tensor& grad_scale,
                                                             const torch::Tensor& found_inf) {
  constexpr bool kAdamW = std::is_same_v<Base, torch::optim::AdamW>;
  torch::NoGradGuard no_grad;
  SyncLr();
  auto& groups = this->param_groups();
  for (size_t g = 0; g < groups.size(); ++g) {
    auto& options = static_cast<BaseOptions&>(groups[g].options());
    std::map<c10::ScalarType, Launch> launches;
    for (const torch::Tensor& param : groups[g].params()) {
      const torch::Tensor& grad = param.grad();
      if (!grad.defined()) continue;
      TORCH_CHECK(!grad.is_sparse(), "fused Adam/AdamW: sparse gradients are not supported");
      ParamState& state = StateFor(param, options.amsgrad());
      if (param.numel() == 0) continue;  // the kernel refuses empty tensors
      Launch& launch = launches[param.scalar_type()];
      launch.params.push_back(param);
      launch.grads.push_back(grad);
      launch.exp_avgs.push_back(state.exp_avg());
      launch.exp_avg_sqs.push_back(state.exp_avg_sq());
      if (options.amsgrad()) launch.max_exp_avg_sqs.push_back(state.max_exp_avg_sq());
      launch.steps.push_back(steps_.at(&state));
    }
    for (auto& [dtype, launch] : launches) {
      // The kernel reads the step count; counting is the caller's, as in
      // torch.optim's _fused_adam: +1, and -found_inf for a skipped step.
      at::_foreach_add_(launch.steps, 1);
      compat::FusedAdamStep(kAdamW, launch.params, launch.grads, launch.exp_avgs,
                            launch.exp_avg_sqs, launch.max_exp_avg_sqs, launch.steps, lrs_[g],
                            std::get<0>(options.betas()), std::get<1>(options.betas()),
                            options.weight_decay(), options.eps(), options.amsgrad(), grad_scale,
                            found_inf);
      if (found_inf.defined()) {
        // found_inf is [1], the steps 0-dim: a 0-dim view of it for each.
        at::_foreach_sub_(launch.steps,
                          std::vector<torch::Tensor>(launch.steps.size(), found_inf.reshape({})));
      }
    }
  }
}

template <typename Base, typename BaseOptions, typename ParamState>
void FusedAdamImpl<Base, BaseOptions, ParamState>::save(
    torch::serialize::OutputArchive& archive) const {
  // The pointers are the base state's own objects, so this writes through
  // them; one device read per parameter, at checkpoint time only.
  for (const auto& entry : steps_) {
    const torch::Tensor& count = entry.second;
    entry.first->step(static_cast<int64_t>(std::llround(count.item<double>())));
  }
  Base::save(archive);
}

template <typename Base, typename BaseOptions, typename ParamState>
void FusedAdamImpl<Base, BaseOptions, ParamState>::load(torch::serialize::InputArchive& archive) {
  Base::load(archive);
  // load() replaced the state objects; the device counts are rebuilt from
  // their steps on the next step.
  steps_.clear();
}

template class FusedAdamImpl<torch::optim::Adam, torch::optim::AdamOptions,
                             torch::optim::AdamParamState>;
template class FusedAdamImpl<torch::optim::AdamW, torch::optim::AdamWOptions,
                             torch::optim::AdamWParamState>;

}  // namespace mantissa
