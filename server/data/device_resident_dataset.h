#ifndef MANTISSA_SERVER_DATA_DEVICE_RESIDENT_DATASET_H_
#define MANTISSA_SERVER_DATA_DEVICE_RESIDENT_DATASET_H_

#include <torch/torch.h>

#include <memory>

#include "server/data/dataset.h"

namespace mantissa {

// Every item of another split, converted once and kept on `device`; Get
// slices there. Used by benchmarks so that steps time the model, not the
// host-to-device copy of each batch.
class DeviceResidentDataset final : public Dataset {
 public:
  // Reads all of `source` (Get over every index) and moves it to `device`.
  static std::unique_ptr<DeviceResidentDataset> Create(const Dataset& source, torch::Device device);

  int64_t size() const override { return targets_.size(0); }
  // `indices` may be on the CPU; the batch is on the device.
  Batch Get(const torch::Tensor& indices) const override;

 private:
  DeviceResidentDataset(torch::Tensor inputs, torch::Tensor targets)
      : inputs_(std::move(inputs)), targets_(std::move(targets)) {}

  torch::Tensor inputs_;
  torch::Tensor targets_;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_DATA_DEVICE_RESIDENT_DATASET_H_
