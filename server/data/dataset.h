#ifndef MANTISSA_SERVER_DATA_DATASET_H_
#define MANTISSA_SERVER_DATA_DATASET_H_

#include <torch/torch.h>

#include <memory>
#include <vector>

#include "server/models/model.h"

namespace mantissa {

// One batch on the CPU, laid out as DataSpec.task says.
struct Batch {
  torch::Tensor inputs;   // float32 [N, ...input_shape], or int64 token ids [N, seq_len]
  torch::Tensor targets;  // int64 [N], or int64 [N, seq_len]
};

// One split of a dataset: `size()` items, fetched by index. An epoch visits
// every index once in a seeded random order. Get() may be called from a
// background loader thread, never concurrently for one dataset.
class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  // Items at `indices` (int64, on the CPU).
  virtual Batch Get(const torch::Tensor& indices) const = 0;
};

// x = (stored * scale - mean) / stddev, applied per batch.
struct InputNormalization {
  float scale = 1.0f;
  float mean = 0.0f;
  float stddev = 1.0f;
};

// A split held in memory as two tensors. Inputs may be stored compactly
// (uint8 pixels) and are converted and normalised per batch:
// x = (stored * scale - mean) / stddev.
class TensorDataset final : public Dataset {
 public:
  using Normalization = InputNormalization;

  TensorDataset(torch::Tensor inputs, torch::Tensor targets, Normalization norm = {})
      : inputs_(std::move(inputs)), targets_(std::move(targets)), norm_(norm) {}

  int64_t size() const override { return targets_.size(0); }
  std::vector<int64_t> item_shape() const {
    return std::vector<int64_t>(inputs_.sizes().begin() + 1, inputs_.sizes().end());
  }

  // Inputs as float32.
  Batch Get(const torch::Tensor& indices) const override {
    torch::Tensor x = inputs_.index_select(0, indices).to(torch::kFloat32);
    if (norm_.scale != 1.0f || norm_.mean != 0.0f || norm_.stddev != 1.0f) {
      x = (x * norm_.scale - norm_.mean) / norm_.stddev;
    }
    return {x, targets_.index_select(0, indices)};
  }

 private:
  torch::Tensor inputs_;
  torch::Tensor targets_;
  Normalization norm_;
};

// A dataset as the trainer gets it: a train split, an optional test split,
// and what the model must accept and produce.
struct DatasetSplits {
  std::unique_ptr<Dataset> train;
  std::unique_ptr<Dataset> test;  // null when the dataset has none
  DataSpec spec;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_DATA_DATASET_H_
