#ifndef MANTISSA_SERVER_TRAINING_TRAINER_H_
#define MANTISSA_SERVER_TRAINING_TRAINER_H_

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "mantissa/v1/training.pb.h"
#include "server/artifacts/checkpoint.h"
#include "server/data/dataset.h"
#include "server/jobs/job_runner.h"
#include "server/models/model.h"
#include "server/precision/precision_plugin.h"
#include "server/training/gradient_monitor.h"
#include "server/training/memory_tracker.h"
#include "server/training/resolved_job.h"
#include "server/training/spec_limits.h"

namespace mantissa {

class CudaGraphStep;
class DataParallel;

// Trains one job: the loop that ties a model, a dataset, an optimizer and a
// precision plugin together, and measures what the precision did (scaler
// skips, memory against a 32-true baseline). Created and run on the job's
// worker thread.
class Trainer {
 public:
  struct Options {
    // The job, resolved and parsed (ResolveJobSpec).
    ResolvedJob job;
    torch::Device device = torch::kCPU;
    // False when other jobs may run on the device at the same time: the
    // memory figures then include theirs, and a CUDA graph is refused.
    bool memory_exact = true;
    // Where this job's checkpoints go; empty = none.
    std::string checkpoint_path;
    // A checkpoint to continue from (job.spec.resume_from's); empty = fresh start.
    std::string resume_path;
    // Benchmarks: both splits are copied to the device once, so batches are
    // sliced there and no host-to-device copy is timed.
    bool data_on_device = false;
    // Benchmarks: called after every step with its wall time. With
    // synchronize_steps the device is synchronised before the clock is read,
    // so on CUDA the time is the step's, not its launches'.
    std::function<void(int64_t step, double seconds)> on_step;
    bool synchronize_steps = false;
    // Admission limits checked once the dataset's size is known: the steps
    // of an epochs spec, parameters and estimated memory.
    SpecLimits limits;
    // One rank of a data-parallel job (not owned; outlives the trainer); null
    // = the only process. Each rank trains on its rank-strided share of every
    // global batch; rank 0 alone checkpoints, evaluates and reports (the
    // others' Update calls carry nothing new).
    DataParallel* data_parallel = nullptr;
  };

  struct Evaluation {
    double accuracy = 0;    // classifiers
    double loss = 0;        // mean per item (classifiers) or per token (language models)
    double perplexity = 0;  // language models: exp(loss)
  };

  // Loads the data, measures the 32-true baseline (memory_baseline_steps
  // steps of the same model and batch), builds the job's model under its
  // precision plugin and, when resuming, restores the checkpoint.
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(Options options);

  // Runs the remaining steps. CANCELLED as soon as the context is cancelled
  // (after writing a checkpoint if the job takes periodic ones); INTERNAL
  // naming the step when the loss turns non-finite in a mode without a grad
  // scaler, instead of training on NaN, with the first non-finite step's
  // record (PrecisionStats.last_non_finite).
  absl::StatusOr<v1::JobResult> Run(JobContext& context);

  // Accuracy (classifiers) or perplexity (language models) and mean loss on
  // the test split (up to eval.max_batches).
  Evaluation Evaluate(const JobContext* context);

  const ResolvedJob& job() const { return options_.job; }
  Model& model() { return *model_; }
  PrecisionPlugin& precision() { return *precision_; }
  const DatasetSplits& data() const { return data_; }
  int64_t total_steps() const { return total_steps_; }
  // The step the run starts after: 0, or the resumed checkpoint's.
  int64_t start_step() const { return start_.step; }
  int64_t baseline_peak_bytes() const { return baseline_peak_bytes_; }

 private:
  struct RunState;  // one Run's loader, schedule, graph and progress interval

  explicit Trainer(Options options) : options_(std::move(options)), memory_(options_.device) {}

  // Create, in order.
  absl::Status LoadData();
  // Batches and optimizer steps of the job, against the step limit.
  absl::Status CountWork();
  // The model's size by formula against the limits and the free memory.
  absl::Status CheckModelFits() const;
  absl::Status MeasureBaseline();
  // The job's precision plugin, grad scaler, model and optimizer.
  absl::Status BuildJob();
  absl::Status Resume();
  // Data parallel: rank 0's parameters and buffers to every rank.
  absl::Status SyncRanks();
  absl::StatusOr<std::unique_ptr<Model>> BuildModel(PrecisionPlugin* plugin) const;

  // Run, in order.
  absl::StatusOr<std::unique_ptr<RunState>> SetUp(JobContext& context);
  void Announce(JobContext& context) const;
  // JobSpec.cuda_graph's step, or null (with a warning) where it cannot run.
  std::unique_ptr<CudaGraphStep> SetUpGraph(RunState& run, JobContext& context);
  absl::Status TrainStep(int64_t step, RunState& run, JobContext& context);
  absl::Status ReportProgress(int64_t step, RunState& run, JobContext& context);
  // Data parallel: the interval's loss and items summed over the ranks.
  void SumOverRanks(RunState& run);
  void SetMetrics(JobContext& context, double loss, double items_per_second,
                  const v1::PrecisionStats& precision, const v1::MemoryStats& memory,
                  const GradientMonitor::Interval& grads) const;
  // The gradient monitor's interval, agreed by every rank.
  GradientMonitor::Interval ReadGradients();
  // The interval's first non-finite step, whose last observed step was
  // `last_step`; none if every step was finite.
  std::optional<v1::NonFiniteStep> IntervalRecord(const GradientMonitor::Interval& grads,
                                                  int64_t last_step) const;
  // Why the loss of `step`'s batch is not finite, found on the host (the
  // CPU's every-batch check): the interval's first non-finite step, else
  // this one's gradients as they are now.
  v1::NonFiniteStep NonFiniteNow(int64_t step, const RunState& run);
  // How many parameter tensors the model has (not elements).
  int ParameterTensors() const { return static_cast<int>(gradients_->parameter_names().size()); }
  v1::NonFiniteStep NonFiniteRecord(int64_t step, bool loss_non_finite,
                                    const std::vector<int>& parameters,
                                    int64_t steps_in_interval) const;
  // INTERNAL for a non-finite loss without a grad scaler, after setting the
  // job's last_non_finite to `record`.
  absl::Status FailNonFinite(int64_t step, double loss,
                             const std::optional<v1::NonFiniteStep>& record, JobContext& context);
  absl::Status MaybeCheckpoint(int64_t step, RunState& run, JobContext& context);
  void MaybeEvaluate(int64_t step, const RunState& run, JobContext& context);
  // CANCELLED, after keeping the work done when the job takes checkpoints.
  absl::Status Cancel(int64_t done, StopReason reason, RunState& run, JobContext& context);
  // Data parallel: the stop reason of the step, agreed by every rank.
  StopReason AgreedStop(const JobContext& context);
  absl::StatusOr<v1::JobResult> Finish(RunState& run, JobContext& context);

  // The model's logits for inputs on the device, under the precision plugin:
  // the one forward of training and evaluation.
  torch::Tensor Forward(const torch::Tensor& inputs);
  torch::Tensor Loss(const torch::Tensor& logits, const torch::Tensor& targets) const;
  // One batch's forward, loss and backward (of loss / loss_divisor, for
  // accumulation); returns the undivided loss, detached. No host sync.
  torch::Tensor ForwardBackward(const torch::Tensor& inputs, const torch::Tensor& targets,
                                double loss_divisor);
  // Observes the gradients (their unscaled norm, and whether they or
  // `step_loss` are finite), clips the unscaled gradients with that norm
  // when the job asks, then steps the optimizer through the precision
  // plugin. No host sync with a fused optimizer.
  OptimizerStepResult ClipAndStep(const std::vector<torch::Tensor>& parameters,
                                  const torch::Tensor& step_loss);
  // The grad scaler's skipped_steps() (a device read), 0 without a scaler.
  int64_t SkippedSteps() const;
  bool scaling() const;
  // Data parallel: this rank, the ranks, and the items of global batch `b`
  // over all ranks; 0, 1 and the batch's items in one process.
  int rank() const;
  int world_size() const;
  int64_t GlobalBatchItems(int64_t b) const;
  bool language_model() const { return data_.spec.task == Task::kLanguageModel; }
  void SetEvaluation(const Evaluation& eval, v1::JobResult& result) const;
  std::string DescribeEvaluation(const Evaluation& eval) const;
  // Writes the checkpoint after `step` (the next batch to train on:
  // `next_batch`) and reports it on the job.
  absl::Status SaveCheckpoint(int64_t step, int64_t next_batch, RunState& run, JobContext& context);
  // Stats for the Job message, from device state: call at progress time.
  v1::PrecisionStats PrecisionStats(int64_t optimizer_steps) const;
  // Sets the job's precision stats, keeping its last_non_finite (of an
  // earlier interval or attempt) when `stats` has none.
  static void SetPrecisionStats(const v1::PrecisionStats& stats, v1::Job& job);
  v1::MemoryStats MemoryStats() const;

  Options options_;
  DatasetSplits data_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<PrecisionPlugin> precision_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::unique_ptr<GradientMonitor> gradients_;
  std::optional<v1::NonFiniteStep> last_non_finite_;  // this run's latest
  MemoryTracker memory_;
  CheckpointPosition start_;  // where the run begins
  int64_t baseline_peak_bytes_ = 0;
  int64_t parameter_bytes_ = 0;  // fixed once the model is built
  int64_t saved_step_ = 0;       // step of this run's newest checkpoint; 0 = none yet
  int64_t gradient_bytes_ = 0;
  int64_t optimizer_state_bytes_ = 0;
  int64_t compensation_bytes_ = 0;  // the precision plugin's StateBytes
  int64_t accumulate_ = 1;          // batches per optimizer step
  int64_t batches_per_epoch_ = 0;
  int64_t total_batches_ = 0;
  int64_t total_steps_ = 0;  // ceil(total_batches_ / accumulate_)
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_TRAINING_TRAINER_H_
