#include "server/precision/half_update.h"

#include <ATen/CPUGeneratorImpl.h>

#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

#ifdef MANTISSA_WITH_CUDA
#include <ATen/cuda/CUDAGeneratorImpl.h>
#endif

namespace mantissa {
namespace {

constexpr UpdateRounding kRoundings[] = {UpdateRounding::kNearest, UpdateRounding::kStochastic,
                                         UpdateRounding::kKahan};

// splitmix64's finalizer: seeds that differ in one bit give unrelated streams.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// A fresh generator on `device`, so that a step's random bits depend on
// (seed, step) alone and not on whatever else drew from the default one.
at::Generator StepGenerator(const torch::Device& device, uint64_t seed) {
#ifdef MANTISSA_WITH_CUDA
  if (device.is_cuda()) {
    at::Generator generator = at::cuda::detail::createCUDAGenerator(device.index());
    generator.set_current_seed(seed);
    return generator;
  }
#endif
  TORCH_CHECK(device.is_cpu(), "bf16_update=stochastic: no generator for ", device.str(),
              " in this build");
  return at::detail::createCPUGenerator(seed);
}

enum class Decay { kNone, kCoupled, kDecoupled };

// One param group's weight decay, as its optimizer would apply it.
struct GroupDecay {
  Decay kind = Decay::kNone;
  double weight_decay = 0;
  double lr = 0;
  std::function<void(double)> set;  // writes the group's weight_decay option
};

template <typename T>
bool TakeDecay(torch::optim::OptimizerOptions& options, Decay kind, GroupDecay& out) {
  auto* typed = dynamic_cast<T*>(&options);
  if (typed == nullptr) return false;
  out.weight_decay = typed->weight_decay();
  out.kind = out.weight_decay != 0 ? kind : Decay::kNone;
  out.lr = typed->lr();
  out.set = [typed](double weight_decay) { typed->weight_decay(weight_decay); };
  return true;
}

// Weight decay reads the weight, which the optimizer does not see during
// the step (it steps a scratch tensor): it is taken out of every group's
// options, applied by HalfUpdate instead, and put back when this is
// destroyed, also when the step throws. The fused Adam/AdamW read the same
// AdamOptions/AdamWOptions.
class DecayOverride {
 public:
  explicit DecayOverride(torch::optim::Optimizer& optimizer) {
    using namespace torch::optim;  // NOLINT(build/namespaces)
    for (auto& group : optimizer.param_groups()) {
      GroupDecay decay;
      OptimizerOptions& options = group.options();
      // AdamW decays the weight itself; the others add decay * weight to the gradient.
      TakeDecay<AdamWOptions>(options, Decay::kDecoupled, decay) ||
          TakeDecay<AdamOptions>(options, Decay::kCoupled, decay) ||
          TakeDecay<SGDOptions>(options, Decay::kCoupled, decay) ||
          TakeDecay<RMSpropOptions>(options, Decay::kCoupled, decay) ||
          TakeDecay<AdagradOptions>(options, Decay::kCoupled, decay);
      if (decay.kind != Decay::kNone) decay.set(0);
      groups_.push_back(std::move(decay));
    }
  }
  ~DecayOverride() { Restore(); }
  DecayOverride(const DecayOverride&) = delete;
  DecayOverride& operator=(const DecayOverride&) = delete;

  void Restore() {
    for (GroupDecay& decay : groups_) {
      if (decay.kind != Decay::kNone && decay.set) decay.set(decay.weight_decay);
      decay.set = nullptr;
    }
  }
  const GroupDecay& group(size_t g) const { return groups_[g]; }
  bool any_coupled() const {
    for (const GroupDecay& decay : groups_) {
      if (decay.kind == Decay::kCoupled) return true;
    }
    return false;
  }

 private:
  std::vector<GroupDecay> groups_;
};

// One parameter with a gradient: the optimizer steps `scratch` in place of
// `weight`.
struct Slot {
  torch::Tensor param;    // the optimizer's own tensor
  torch::Tensor weight;   // the weight's data, which the optimizer does not see
  torch::Tensor scratch;  // kahan: the compensation buffer; stochastic: zeros
  size_t group = 0;
};

// Points each optimizer parameter at its scratch tensor for the step and back
// at its weight afterwards (also when the step throws). set_data swaps the
// TensorImpl's storage and keeps the TensorImpl itself, and with it the
// autograd meta (.grad; only the gradient accumulator is reset, and only when
// dtype or device change) and the optimizer's state, keyed by the
// TensorImpl's address; module.to(dtype) relies on the same. half_update_test
// checks both on LibTorch 1.13; the fused Adam/AdamW read the same tensors.
class ScratchSwap {
 public:
  explicit ScratchSwap(std::vector<Slot>& slots) : slots_(slots) {
    for (Slot& slot : slots_) {
      slot.param.set_data(slot.scratch);
      ++swapped_;
    }
  }
  ~ScratchSwap() { Restore(); }
  ScratchSwap(const ScratchSwap&) = delete;
  ScratchSwap& operator=(const ScratchSwap&) = delete;

  void Restore() {
    for (size_t i = 0; i < swapped_; ++i) slots_[i].param.set_data(slots_[i].weight);
    swapped_ = 0;
  }

 private:
  std::vector<Slot>& slots_;
  size_t swapped_ = 0;
};

// The parameters the optimizer will step, with their scratch tensors;
// creates kahan's buffers at the first step.
std::vector<Slot> CollectSlots(torch::optim::Optimizer& optimizer, bool kahan,
                               std::vector<torch::Tensor>& compensation) {
  auto& groups = optimizer.param_groups();
  size_t count = 0;
  for (auto& group : groups) count += group.params().size();
  if (kahan && compensation.empty()) {
    for (auto& group : groups) {
      for (const torch::Tensor& param : group.params()) {
        compensation.push_back(torch::zeros_like(param));
      }
    }
  }
  TORCH_CHECK(!kahan || compensation.size() == count, "bf16_update=kahan: ", compensation.size(),
              " compensation buffers for ", count, " parameters");
  std::vector<Slot> slots;
  size_t k = 0;
  for (size_t g = 0; g < groups.size(); ++g) {
    for (const torch::Tensor& param : groups[g].params()) {
      const size_t index = k++;
      // The optimizer leaves a parameter without a gradient alone; so does this.
      if (!param.grad().defined()) continue;
      Slot slot{param, param.variable_data(), torch::Tensor(), g};
      if (kahan) {
        torch::Tensor& c = compensation[index];
        TORCH_CHECK(c.sizes() == param.sizes(), "bf16_update=kahan: compensation buffer ", index,
                    " has shape ", c.sizes(), ", its parameter ", param.sizes());
        // Restored buffers may come from another device or dtype.
        if (c.device() != param.device() || c.scalar_type() != param.scalar_type()) {
          c = c.to(param.device(), param.scalar_type());
        }
        slot.scratch = c;
      } else {
        slot.scratch = torch::zeros_like(param);
      }
      slots.push_back(std::move(slot));
    }
  }
  return slots;
}

// Adds the update the optimizer left in the scratch tensor (and the
// decoupled decay, `decoupled_decay` * weight) to the weight in float32 and
// rounds: stochastically with `generator`, else to nearest keeping the
// remainder in the compensation buffer. Where `skip` is true nothing changes.
void ApplyUpdate(Slot& slot, double decoupled_decay, const torch::Tensor& skip,
                 at::Generator* generator) {
  const torch::Dtype dtype = slot.weight.scalar_type();
  const torch::Tensor weight = slot.weight.to(torch::kFloat32);
  // The weight plus the optimizer's update, summed in float32.
  torch::Tensor sum = weight + slot.scratch.to(torch::kFloat32);
  if (decoupled_decay != 0) sum.sub_(weight, decoupled_decay);
  torch::Tensor rounded;
  torch::Tensor compensation;
  if (generator != nullptr) {
    rounded = StochasticRound(sum, dtype, *generator);
  } else {
    rounded = sum.to(dtype);
    // What rounding dropped, added back at the next step.
    compensation = (sum - rounded.to(torch::kFloat32)).to(dtype);
  }
  if (skip.defined()) {
    rounded = torch::where(skip, slot.weight, rounded);
    if (compensation.defined()) compensation = torch::where(skip, slot.scratch, compensation);
  }
  slot.weight.copy_(rounded);
  if (compensation.defined()) slot.scratch.copy_(compensation);
}

}  // namespace

const char* UpdateRoundingName(UpdateRounding rounding) {
  switch (rounding) {
    case UpdateRounding::kNearest:
      return "nearest";
    case UpdateRounding::kStochastic:
      return "stochastic";
    case UpdateRounding::kKahan:
      return "kahan";
  }
  return "nearest";
}

std::vector<std::string> UpdateRoundingNames() {
  std::vector<std::string> names;
  for (UpdateRounding rounding : kRoundings) names.push_back(UpdateRoundingName(rounding));
  return names;
}

absl::StatusOr<UpdateRounding> ParseUpdateRounding(absl::string_view name) {
  if (name.empty()) return UpdateRounding::kNearest;
  const std::string lower = absl::AsciiStrToLower(name);
  for (UpdateRounding rounding : kRoundings) {
    if (lower == UpdateRoundingName(rounding)) return rounding;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("bf16_update: unknown value '", name,
                   "'; valid values: ", absl::StrJoin(UpdateRoundingNames(), ", ")));
}

torch::Tensor StochasticRound(const torch::Tensor& x, torch::Dtype dtype,
                              at::Generator& generator) {
  TORCH_CHECK(x.scalar_type() == torch::kFloat32, "StochasticRound: float32 input expected, got ",
              x.scalar_type());
  TORCH_CHECK(dtype == torch::kBFloat16 || dtype == torch::kFloat16,
              "StochasticRound: bfloat16 or float16 expected, got ", dtype);
  // The bits float32 has beyond the target's mantissa: 16 for bfloat16 (7
  // bits of mantissa against 23), 13 for float16 (10). Adding uniform random
  // bits there and truncating rounds the magnitude up with probability equal
  // to the dropped fraction, which is unbiased. bfloat16 is then exact;
  // float16 too in its normal range.
  const int dropped = dtype == torch::kBFloat16 ? 16 : 13;
  // float16's subnormals (below 2^-14) are 2^-24 apart, as its normals in
  // [2^-14, 2^-13) are: shifted there and back, they are rounded once at
  // their own spacing, not to 10 bits and then to nearest by the conversion.
  // The shift itself rounds float32 at 2^-37: a bias of at most 2^-14 unit.
  torch::Tensor shift;
  if (dtype == torch::kFloat16) {
    constexpr double kSmallestNormal = 6.103515625e-05;  // 2^-14
    shift =
        torch::where(x.abs() < kSmallestNormal, x.sign() * kSmallestNormal, torch::zeros_like(x));
  }
  const torch::Tensor shifted = shift.defined() ? x + shift : x;
  const int64_t keep_mask = ~((int64_t{1} << dropped) - 1);
  const torch::Tensor noise =
      torch::randint(0, int64_t{1} << dropped, x.sizes(), generator,
                     torch::TensorOptions().dtype(torch::kInt32).device(x.device()));
  torch::Tensor rounded =
      shifted.view(torch::kInt32).add(noise).bitwise_and_(keep_mask).view(torch::kFloat32);
  if (shift.defined()) rounded.sub_(shift);  // exact: both are multiples of 2^-24
  // A NaN's pattern could carry into the sign bit; infinities and NaN pass.
  return torch::where(torch::isfinite(x), rounded, x).to(dtype);
}

OptimizerStepResult HalfUpdate::Step(torch::optim::Optimizer& optimizer, GradScaler* scaler,
                                     const std::function<OptimizerStepResult()>& step) {
  if (options_.rounding == UpdateRounding::kNearest) return step();
  torch::NoGradGuard no_grad;
  std::vector<Slot> slots =
      CollectSlots(optimizer, options_.rounding == UpdateRounding::kKahan, compensation_);
  const uint64_t step_seed = Mix(options_.seed ^ Mix(static_cast<uint64_t>(steps_)));
  ++steps_;

  DecayOverride decay(optimizer);
  if (decay.any_coupled()) {
    // What the optimizer would add to the gradient, added to the unscaled one.
    if (scaler != nullptr) scaler->Unscale(optimizer);
    for (Slot& slot : slots) {
      const GroupDecay& d = decay.group(slot.group);
      if (d.kind == Decay::kCoupled) slot.param.mutable_grad().add_(slot.weight, d.weight_decay);
    }
  }
  OptimizerStepResult result;
  {
    ScratchSwap swap(slots);
    result = step();
  }
  decay.Restore();
  if (result.skip_known && result.skipped) return result;  // nothing was stepped

  // A skip decided on the device: the optimizer left the scratch alone, and
  // the decoupled decay and the rounding must change nothing either.
  torch::Tensor skip;
  if (!result.skip_known && scaler != nullptr && scaler->found_inf().defined()) {
    skip = scaler->found_inf().reshape({}) != 0;
  }
  std::optional<at::Generator> generator;
  if (options_.rounding == UpdateRounding::kStochastic && !slots.empty()) {
    generator = StepGenerator(slots.front().weight.device(), step_seed);
  }
  for (Slot& slot : slots) {
    const GroupDecay& d = decay.group(slot.group);
    ApplyUpdate(slot, d.kind == Decay::kDecoupled ? d.lr * d.weight_decay : 0.0, skip,
                generator ? &*generator : nullptr);
  }
  return result;
}

int64_t HalfUpdate::StateBytes() const {
  if (options_.rounding != UpdateRounding::kKahan) return 0;
  int64_t bytes = 0;
  for (const torch::Tensor& c : compensation_) bytes += static_cast<int64_t>(c.nbytes());
  return bytes;
}

void HalfUpdate::Save(torch::serialize::OutputArchive& archive) const {
  archive.write("steps", c10::IValue(steps_));
  if (options_.rounding != UpdateRounding::kKahan) return;
  for (size_t k = 0; k < compensation_.size(); ++k) {
    archive.write(absl::StrCat("compensation_", k), compensation_[k], /*is_buffer=*/true);
  }
}

void HalfUpdate::Load(torch::serialize::InputArchive& archive) {
  c10::IValue steps;
  steps_ = archive.try_read("steps", steps) ? steps.toInt() : 0;
  compensation_.clear();
  if (options_.rounding != UpdateRounding::kKahan) return;
  // A checkpoint of another rounding has none: the buffers start at zero.
  for (size_t k = 0;; ++k) {
    torch::Tensor c;
    if (!archive.try_read(absl::StrCat("compensation_", k), c, /*is_buffer=*/true)) break;
    compensation_.push_back(std::move(c));
  }
}

}  // namespace mantissa
