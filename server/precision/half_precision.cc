#include "server/precision/half_precision.h"

#include "server/precision/precision_guards.h"

namespace mantissa {

void HalfPrecision::ConvertModule(Model& model) { model.ToDtype(dtype_); }

std::unique_ptr<PrecisionGuard> HalfPrecision::ModuleInitGuard() {
  return std::make_unique<DefaultDtypePrecisionGuard>(dtype_);
}

torch::Tensor HalfPrecision::ConvertInput(const torch::Tensor& input) {
  return ConvertFloatingTensor(input, dtype_);
}

torch::Tensor HalfPrecision::ConvertOutput(const torch::Tensor& output) {
  return ConvertFloatingTensor(output, torch::kFloat32);
}

OptimizerStepResult HalfPrecision::OptimizerStep(torch::optim::Optimizer& optimizer) {
  GradScaler* scaler = scaling() ? grad_scaler() : nullptr;
  const OptimizerStepResult result = update_.Step(optimizer, scaler, [&] {
    if (scaler == nullptr) {
      optimizer.step();
      return OptimizerStepResult();
    }
    return scaler->Step(optimizer);
  });
  // After the update, which reads this step's found-inf.
  if (scaler != nullptr) scaler->Update();
  return result;
}

void HalfPrecision::SaveState(torch::serialize::OutputArchive& archive) const {
  PrecisionPlugin::SaveState(archive);
  torch::serialize::OutputArchive update;
  update_.Save(update);
  archive.write("half_update", update);
}

void HalfPrecision::LoadState(torch::serialize::InputArchive& archive) {
  PrecisionPlugin::LoadState(archive);
  // Checkpoints written before the update had state have no such key.
  torch::serialize::InputArchive update;
  if (archive.try_read("half_update", update)) update_.Load(update);
}

}  // namespace mantissa
