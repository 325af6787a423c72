#ifndef MANTISSA_SERVER_TRAINING_TRAINER_H_
#define MANTISSA_SERVER_TRAINING_TRAINER_H_

#include <torch/torch.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "mantissa/v1/training.pb.h"
#include "server/data/dataset.h"
#include "server/jobs/job_runner.h"
#include "server/models/model.h"
#include "server/precision/precision_plugin.h"

namespace mantissa {

// Trains one job: the loop that ties a model, a dataset, an optimizer and a
// precision plugin together. Created and run on the job's worker thread.
class Trainer {
 public:
  struct Options {
    v1::JobSpec spec;  // resolved (defaults filled in)
    std::string effective_precision;
    torch::Device device = torch::kCPU;
  };

  struct Evaluation {
    double accuracy = 0;
    double loss = 0;
  };

  // Loads the data and builds the model under the precision plugin.
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(Options options);

  // Runs every step; returns CANCELLED as soon as the context is cancelled.
  absl::StatusOr<v1::JobResult> Run(JobContext& context);

  // Accuracy and mean loss on the test split (up to eval.max_batches).
  Evaluation Evaluate(const JobContext* context);

  Model& model() { return *model_; }
  const DatasetSplits& data() const { return data_; }
  int64_t total_steps() const { return total_steps_; }

 private:
  Trainer() = default;
  torch::Tensor Loss(const torch::Tensor& logits, const torch::Tensor& targets) const;

  Options options_;
  DatasetSplits data_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<PrecisionPlugin> precision_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  int64_t steps_per_epoch_ = 0;
  int64_t total_steps_ = 0;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_TRAINING_TRAINER_H_
