#include "server/data/device_resident_dataset.h"

namespace mantissa {

std::unique_ptr<DeviceResidentDataset> DeviceResidentDataset::Create(const Dataset& source,
                                                                     torch::Device device) {
  Batch all = source.Get(torch::arange(source.size(), torch::kInt64));
  return std::unique_ptr<DeviceResidentDataset>(
      new DeviceResidentDataset(all.inputs.to(device), all.targets.to(device)));
}

Batch DeviceResidentDataset::Get(const torch::Tensor& indices) const {
  const torch::Tensor at = indices.to(inputs_.device());
  return {inputs_.index_select(0, at), targets_.index_select(0, at)};
}

}  // namespace mantissa
