#include "server/training/trainer.h"

#include <chrono>
#include <cmath>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "server/common/status_macros.h"
#include "server/common/torch_compat.h"
#include "server/data/device_resident_dataset.h"
#include "server/precision/fp32_precision.h"
#include "server/precision/precision_registry.h"
#include "server/training/applied_step_counter.h"
#include "server/training/batch_loader.h"
#include "server/training/cuda_graph_step.h"
#include "server/training/data_parallel.h"
#include "server/training/job_spec_resolver.h"
#include "server/training/memory_estimate.h"
#include "server/training/optimizer_registry.h"

namespace mantissa {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

std::string DtypeName(torch::Dtype dtype) {
  switch (dtype) {
    case torch::kFloat32:
      return "float32";
    case torch::kFloat64:
      return "float64";
    case torch::kBFloat16:
      return "bfloat16";
    case torch::kFloat16:
      return "float16";
    default:
      return c10::toString(dtype);
  }
}

// `attribution`: the non-finite step's description, or "".
absl::Status NonFiniteLoss(int64_t step, double loss, const ResolvedJob& job,
                           const std::string& attribution) {
  return absl::InternalError(absl::StrCat(
      "step ", step, ": the loss is ", loss, " under ", job.effective_precision,
      " without a grad scaler; training stopped instead of continuing on NaN. Likely cause: ",
      job.precision.true_half
          ? "overflow or underflow in the half-precision weights or optimizer state (for "
            "Adam/AdamW, an eps that rounds to 0); try 16-mixed or bf16-mixed, a larger eps or "
            "a lower learning rate"
          : "diverging training; lower the learning rate or set gradient_clip_norm",
      attribution.empty() ? "" : "; ", attribution));
}

// torch::nn::utils::clip_grad_norm_ (L2) with the total norm already
// computed (by the gradient monitor) and no read of it, so no host sync and
// a CUDA graph can hold it.
void ClipGradNorm(const std::vector<torch::Tensor>& parameters, const torch::Tensor& total,
                  double max_norm) {
  torch::NoGradGuard no_grad;
  const torch::Tensor coef = torch::clamp(max_norm / (total + 1e-6), c10::nullopt, 1.0);
  for (const torch::Tensor& parameter : parameters) {
    if (parameter.grad().defined()) parameter.grad().mul_(coef);
  }
}

}  // namespace

// One Run's state: what the steps share besides the model and the optimizer.
struct Trainer::RunState {
  RunState(LrSchedule schedule, int64_t applied, int64_t skipped)
      : schedule(std::move(schedule)), applied(applied, skipped) {}

  LrSchedule schedule;
  // Steps the optimizer applied; skipped ones do not advance the schedule.
  // A fused optimizer's skips are known only when the scaler is read, at
  // progress time (see AppliedStepCounter); checkpoints read it first.
  AppliedStepCounter applied;
  std::unique_ptr<BatchLoader> loader;
  std::unique_ptr<CudaGraphStep> graph;  // null: eager steps
  std::vector<torch::Tensor> parameters;
  bool has_test = false;
  // On the CPU reading the loss costs nothing, so every batch is checked; on
  // CUDA only at progress time, to keep the host off the hot path.
  bool check_every_batch = false;
  int64_t checkpoint_step = 0;  // the latest checkpoint's step
  double lr = 0;
  double last_loss = 0;
  // The interval's loss is summed on the device and read back only at
  // progress time, so steps do not wait on the host.
  torch::Tensor interval_loss;
  int64_t interval_batches = 0;
  int64_t interval_steps = 0;
  int64_t interval_items = 0;
  Clock::time_point train_start;
  Clock::time_point interval_start;
};

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(Options options) {
  if (options.job.model == nullptr || options.job.dataset == nullptr) {
    return absl::InvalidArgumentError("the job is not resolved (ResolveJobSpec)");
  }
  if (options.device.is_cpu()) MemoryTracker::InstallCpuCounting();
  std::unique_ptr<Trainer> t(new Trainer(std::move(options)));
  RETURN_IF_ERROR(t->LoadData());
  RETURN_IF_ERROR(t->CountWork());
  RETURN_IF_ERROR(t->CheckModelFits());
  RETURN_IF_ERROR(t->MeasureBaseline());
  // Everything the job allocates from here on counts towards its peak.
  t->memory_.Start();
  RETURN_IF_ERROR(t->BuildJob());
  RETURN_IF_ERROR(t->Resume());
  RETURN_IF_ERROR(t->SyncRanks());
  return t;
}

absl::Status Trainer::SyncRanks() {
  DataParallel* dp = options_.data_parallel;
  if (dp == nullptr) return absl::OkStatus();
  // Every rank built the same model from the same seed and resumed from the
  // same file; rank 0's copy makes sure they start from the same weights.
  // A rank that read another checkpoint (a node whose --state_dir is not
  // the shared one) would run other steps, and other collectives.
  const int64_t latest = dp->AgreeMax(start_.step);
  const int64_t earliest = -dp->AgreeMax(-start_.step);
  if (latest != earliest) {
    return absl::FailedPreconditionError(
        absl::StrCat("data parallel: the ranks resume from different steps (", earliest, " to ",
                     latest, "; this rank: ", start_.step,
                     "); every rank must read the job's checkpoint from one "
                     "shared --state_dir"));
  }
  std::vector<torch::Tensor> state;
  for (auto& [name, tensor] : model_->State()) state.push_back(tensor);
  dp->Broadcast(state);  // throws c10::Error when a rank left
  return absl::OkStatus();
}

absl::Status Trainer::LoadData() {
  ASSIGN_OR_RETURN(data_, options_.job.dataset->Load(options_.job.spec.seed()));
  if (options_.data_on_device) {
    data_.train = DeviceResidentDataset::Create(*data_.train, options_.device);
    if (data_.test) data_.test = DeviceResidentDataset::Create(*data_.test, options_.device);
  }
  return absl::OkStatus();
}

absl::Status Trainer::CountWork() {
  const v1::JobSpec& spec = options_.job.spec;
  accumulate_ = std::max<int64_t>(1, spec.accumulate_grad_batches());
  batches_per_epoch_ =
      BatchLoader::BatchesPerEpoch(data_.train->size(), spec.batch_size(), world_size());
  const std::optional<int64_t> total_batches = spec.has_steps()
                                                   ? CheckedMul(spec.steps(), accumulate_)
                                                   : CheckedMul(spec.epochs(), batches_per_epoch_);
  if (!total_batches) {
    return absl::InvalidArgumentError(absl::StrCat(spec.has_steps() ? "steps" : "epochs",
                                                   ": the job's batch count overflows int64"));
  }
  total_batches_ = *total_batches;
  total_steps_ = (total_batches_ + accumulate_ - 1) / accumulate_;
  const SpecLimits& limits = options_.limits;
  if (total_steps_ > limits.max_job_steps) {
    return absl::InvalidArgumentError(absl::StrCat(
        spec.has_steps() ? "steps" : "epochs", ": the job comes to ", total_steps_, " steps (",
        batches_per_epoch_, " batches per epoch); must be <= ", limits.max_job_steps,
        " (--max_job_steps)"));
  }
  std::optional<int64_t> item = 1;
  for (int64_t d : data_.spec.input_shape) item = item ? CheckedMul(*item, d) : item;
  if (!item || !CheckedMul(*item, std::max(spec.batch_size(), spec.eval().batch_size()))) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch_size: batch_size x the dataset's item size overflows int64"));
  }
  return absl::OkStatus();
}

absl::Status Trainer::CheckModelFits() const {
  // Before anything is allocated for the model: its size by formula against
  // the limits and the device's free memory.
  const ResolvedJob& job = options_.job;
  const std::optional<ModelSizeEstimate> size = job.model->EstimateSize(data_.spec);
  if (!size) return absl::OkStatus();
  const absl::StatusOr<int64_t> free = FreeMemoryBytes(options_.device);
  return CheckModelSize(*size, job.spec.batch_size(), job.effective_precision, job.spec.optimizer(),
                        free.ok() ? *free : -1, options_.device.str(), options_.limits,
                        job.half_update.rounding == UpdateRounding::kKahan);
}

absl::Status Trainer::BuildJob() {
  const ResolvedJob& job = options_.job;
  ASSIGN_OR_RETURN(precision_, PrecisionRegistry::Create(job.effective_precision, options_.device,
                                                         job.fp8, job.half_update));
  ASSIGN_OR_RETURN(std::unique_ptr<GradScaler> scaler, GradScaler::Create(job.grad_scaler));
  if (DataParallel* dp = options_.data_parallel) {
    // Every rank skips a step, and backs its scale off, when any rank's
    // gradients overflowed; FP8 scales come from every rank's amaxes.
    auto max = [dp](const torch::Tensor& t) { dp->AllReduceMax(t); };
    scaler->set_found_inf_reducer(max);
    precision_->SetAmaxReducer(max);
  }
  precision_->set_grad_scaler(std::move(scaler));
  ASSIGN_OR_RETURN(model_, BuildModel(precision_.get()));
  precision_->ConvertModule(*model_);
  model_->ToDevice(options_.device);
  parameter_bytes_ = TensorBytes(model_->Parameters());
  ASSIGN_OR_RETURN(optimizer_, OptimizerRegistry::Create(job.optimizer, model_->Parameters()));
  gradients_ = std::make_unique<GradientMonitor>(GradientMonitor::Options{
      .parameter_names = ParameterNames(model_->Parameters(), model_->State()),
      .device = options_.device});
  return absl::OkStatus();
}

absl::Status Trainer::Resume() {
  if (options_.resume_path.empty()) return absl::OkStatus();
  ASSIGN_OR_RETURN(start_,
                   Checkpoint::Load(options_.resume_path, {model_.get(), optimizer_.get(),
                                                           precision_.get(), options_.device}));
  if (start_.step > total_steps_ || start_.next_batch > total_batches_) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint ", options_.resume_path, " is at step ", start_.step,
                     " but the job has only ", total_steps_, " steps"));
  }
  // A later attempt of the job resumes from its own newest checkpoint: the
  // one to keep as the previous when the next is written.
  if (options_.resume_path == options_.checkpoint_path) saved_step_ = start_.step;
  // The archive's copies of every tensor were freed again: not the job's.
  memory_.RestartPeak();
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Model>> Trainer::BuildModel(PrecisionPlugin* plugin) const {
  const v1::JobSpec& spec = options_.job.spec;
  // Parameter initialisation draws from LibTorch's global generator and the
  // init guard may set the process-wide default dtype: the lock makes a seed
  // give the same weights, and keeps concurrent jobs from seeing each
  // other's default dtype.
  static std::mutex init_mu;
  std::lock_guard<std::mutex> lock(init_mu);
  torch::manual_seed(spec.seed());
  std::unique_ptr<PrecisionGuard> init_guard = plugin->ModuleInitGuard();
  return options_.job.model->Build(data_.spec);
}

absl::Status Trainer::MeasureBaseline() {
  const v1::JobSpec& spec = options_.job.spec;
  if (spec.memory_baseline_steps() <= 0) return absl::OkStatus();
  // The same model, optimizer and batch in 32-true, freed before the job's
  // own model is built. The batch is read first: like the job's batches,
  // which the loader thread prepares, it is the data's memory.
  const int64_t n = std::min(spec.batch_size(), data_.train->size());
  Batch batch = data_.train->Get(torch::arange(n, torch::kInt64));
  torch::Tensor x = batch.inputs.to(options_.device);
  torch::Tensor y = batch.targets.to(options_.device);
  MemoryTracker tracker(options_.device);
  tracker.Start();
  {
    Fp32Precision fp32;
    ASSIGN_OR_RETURN(std::unique_ptr<Model> model, BuildModel(&fp32));
    model->ToDevice(options_.device);
    ASSIGN_OR_RETURN(std::unique_ptr<torch::optim::Optimizer> optimizer,
                     OptimizerRegistry::Create(options_.job.optimizer, model->Parameters()));
    model->SetTraining(true);
    for (int64_t i = 0; i < spec.memory_baseline_steps(); ++i) {
      optimizer->zero_grad();
      Loss(model->Forward(x), y).backward();
      optimizer->step();
    }
  }
  baseline_peak_bytes_ = tracker.PeakBytes();
  return absl::OkStatus();
}

torch::Tensor Trainer::Loss(const torch::Tensor& logits, const torch::Tensor& targets) const {
  if (language_model()) {
    // Logits [N, T, vocab] against next tokens [N, T]: the mean per token.
    return torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}),
                                                targets.reshape({-1}));
  }
  return torch::nn::functional::cross_entropy(logits, targets);
}

torch::Tensor Trainer::Forward(const torch::Tensor& inputs) {
  torch::Tensor x = precision_->ConvertInput(inputs);
  torch::Tensor logits;
  {
    // One guard per batch: leaving it clears autocast's cast cache, so a
    // captured step casts the current weights instead of reusing old casts.
    std::unique_ptr<PrecisionGuard> guard = precision_->ForwardGuard();
    logits = model_->Forward(x);
  }
  return precision_->ConvertOutput(logits);
}

torch::Tensor Trainer::ForwardBackward(const torch::Tensor& inputs, const torch::Tensor& targets,
                                       double loss_divisor) {
  torch::Tensor loss = Loss(Forward(inputs), targets);
  precision_->Backward(loss_divisor == 1 ? loss : loss / loss_divisor);
  return loss.detach();
}

OptimizerStepResult Trainer::ClipAndStep(const std::vector<torch::Tensor>& parameters,
                                         const torch::Tensor& step_loss) {
  const bool clip = options_.job.spec.has_gradient_clip_norm();
  // Clip what the optimizer will apply: unscaled gradients. Otherwise they
  // are still scaled, and the monitor unscales their norm.
  if (clip) precision_->UnscaleGradients(*optimizer_);
  const torch::Tensor unscale =
      scaling() ? precision_->grad_scaler()->UnscaleFactor() : torch::Tensor();
  const torch::Tensor total = gradients_->Observe(parameters, unscale, step_loss);
  if (clip) ClipGradNorm(parameters, total, options_.job.spec.gradient_clip_norm());
  return precision_->OptimizerStep(*optimizer_);
}

bool Trainer::scaling() const {
  const GradScaler* scaler = precision_->grad_scaler();
  return scaler != nullptr && scaler->enabled();
}

int64_t Trainer::SkippedSteps() const {
  return scaling() ? precision_->grad_scaler()->skipped_steps() : 0;
}

absl::Status Trainer::SaveCheckpoint(int64_t step, int64_t next_batch, RunState& run,
                                     JobContext& context) {
  if (rank() != 0) {
    // Rank 0 writes the job's checkpoint; the others hold the same state.
    saved_step_ = step;
    run.checkpoint_step = step;
    return absl::OkStatus();
  }
  // The job's files are shared by every attempt: once another worker may
  // own the job, this one writes none.
  if (context.stop_reason() == StopReason::kLeaseLost) {
    return absl::CancelledError("the job is no longer this worker's; no checkpoint written");
  }
  // The applied-step count is read from the device first: it must be exact.
  run.applied.Correct(SkippedSteps());
  const CheckpointPosition position{step, next_batch, run.applied.applied(), run.last_loss};
  std::string spec_json;
  (void)google::protobuf::util::MessageToJsonString(options_.job.spec, &spec_json);
  RETURN_IF_ERROR(
      Checkpoint::KeepPrevious(options_.checkpoint_path, saved_step_,
                               std::max<int64_t>(1, options_.job.spec.keep_checkpoints())));
  ASSIGN_OR_RETURN(
      const int64_t bytes,
      Checkpoint::Save(options_.checkpoint_path, position, spec_json,
                       {model_.get(), optimizer_.get(), precision_.get(), options_.device}));
  context.Update(
      v1::JobEvent::CHECKPOINT,
      [&](v1::Job& job) {
        v1::Checkpoint* c = job.mutable_checkpoint();
        c->set_step(position.step);
        c->set_path(options_.checkpoint_path);
        c->set_bytes(bytes);
        *c->mutable_time() = google::protobuf::util::TimeUtil::GetCurrentTime();
      },
      absl::StrCat("checkpoint at step ", position.step));
  saved_step_ = position.step;
  run.checkpoint_step = position.step;
  return absl::OkStatus();
}

v1::PrecisionStats Trainer::PrecisionStats(int64_t optimizer_steps) const {
  v1::PrecisionStats stats;
  const GradScaler* scaler = precision_->grad_scaler();
  stats.set_grad_scaler_enabled(scaler != nullptr && scaler->enabled());
  if (stats.grad_scaler_enabled()) {
    stats.set_skipped_steps(scaler->skipped_steps());
    stats.set_scale(scaler->scale());
  }
  stats.set_optimizer_steps(optimizer_steps);
  stats.set_parameter_dtype(DtypeName(precision_->parameter_dtype()));
  stats.set_compute_dtype(DtypeName(precision_->compute_dtype()));
  stats.set_bf16_update(precision_->update_rounding());
  if (last_non_finite_) *stats.mutable_last_non_finite() = *last_non_finite_;
  return stats;
}

void Trainer::SetPrecisionStats(const v1::PrecisionStats& stats, v1::Job& job) {
  v1::PrecisionStats* to = job.mutable_precision_stats();
  if (!stats.has_last_non_finite() && to->has_last_non_finite()) {
    v1::NonFiniteStep kept = std::move(*to->mutable_last_non_finite());
    *to = stats;
    *to->mutable_last_non_finite() = std::move(kept);
  } else {
    *to = stats;
  }
}

v1::MemoryStats Trainer::MemoryStats() const {
  v1::MemoryStats stats;
  stats.set_peak_bytes(memory_.PeakBytes());
  stats.set_baseline_fp32_peak_bytes(baseline_peak_bytes_);
  if (baseline_peak_bytes_ > 0) {
    stats.set_savings_ratio(1.0 - static_cast<double>(stats.peak_bytes()) /
                                      static_cast<double>(baseline_peak_bytes_));
  }
  stats.set_parameter_bytes(parameter_bytes_);
  stats.set_gradient_bytes(gradient_bytes_);
  stats.set_optimizer_state_bytes(optimizer_state_bytes_);
  stats.set_compensation_bytes(compensation_bytes_);
  stats.set_source(memory_.Source());
  stats.set_exact(options_.memory_exact);
  return stats;
}

Trainer::Evaluation Trainer::Evaluate(const JobContext* context) {
  Evaluation eval;
  if (!data_.test || data_.test->size() == 0) return eval;
  torch::NoGradGuard no_grad;
  model_->SetTraining(false);
  const v1::EvalSettings& settings = options_.job.spec.eval();
  const int64_t n = data_.test->size();
  const int64_t batch = settings.batch_size();
  // Items for classifiers, tokens for language models.
  int64_t seen = 0;
  const auto on_device = torch::TensorOptions().device(options_.device);
  torch::Tensor correct = torch::zeros({}, on_device.dtype(torch::kInt64));
  torch::Tensor loss_sum = torch::zeros({}, on_device.dtype(torch::kFloat64));
  for (int64_t start = 0, b = 0; start < n; start += batch, ++b) {
    if (settings.max_batches() > 0 && b >= settings.max_batches()) break;
    if (context != nullptr && context->cancelled()) break;
    const int64_t end = std::min(n, start + batch);
    Batch data = data_.test->Get(torch::arange(start, end, torch::kInt64));
    const torch::Tensor logits = Forward(data.inputs.to(options_.device));
    const torch::Tensor y = data.targets.to(options_.device);
    const int64_t count = y.numel();
    loss_sum += Loss(logits, y).to(torch::kFloat64) * count;
    if (!language_model()) correct += logits.argmax(1).eq(y).sum();
    seen += count;
  }
  model_->SetTraining(true);
  if (seen > 0) {
    eval.accuracy = static_cast<double>(correct.item<int64_t>()) / static_cast<double>(seen);
    eval.loss = loss_sum.item<double>() / static_cast<double>(seen);
    eval.perplexity = std::exp(eval.loss);
  }
  return eval;
}

absl::StatusOr<v1::JobResult> Trainer::Run(JobContext& context) {
  ASSIGN_OR_RETURN(std::unique_ptr<RunState> run, SetUp(context));
  for (int64_t step = start_.step + 1; step <= total_steps_; ++step) {
    if (options_.data_parallel == nullptr) {
      if (context.cancelled()) return Cancel(step - 1, context.stop_reason(), *run, context);
    } else if (const StopReason stop = AgreedStop(context); stop != StopReason::kNone) {
      return Cancel(step - 1, stop, *run, context);
    }
    const Clock::time_point step_start = Clock::now();
    RETURN_IF_ERROR(TrainStep(step, *run, context));
    if (options_.synchronize_steps) compat::Synchronize(options_.device);
    const double step_seconds = Seconds(Clock::now() - step_start);
    context.metrics().ObserveStep(step_seconds);
    if (options_.on_step) options_.on_step(step, step_seconds);

    if (step % options_.job.spec.progress_every_n_steps() == 0 || step == total_steps_) {
      RETURN_IF_ERROR(ReportProgress(step, *run, context));
    }
    RETURN_IF_ERROR(MaybeCheckpoint(step, *run, context));
    MaybeEvaluate(step, *run, context);
  }
  return Finish(*run, context);
}

absl::StatusOr<std::unique_ptr<Trainer::RunState>> Trainer::SetUp(JobContext& context) {
  const v1::JobSpec& spec = options_.job.spec;
  LrSchedule::Options schedule_options = options_.job.lr_schedule;
  schedule_options.total_steps = total_steps_;
  ASSIGN_OR_RETURN(LrSchedule schedule, LrSchedule::Create(std::move(schedule_options)));
  auto run = std::make_unique<RunState>(std::move(schedule), start_.applied_steps, SkippedSteps());
  run->parameters = model_->Parameters();
  run->has_test = data_.test && data_.test->size() > 0 && !spec.eval().disabled();
  // Data parallel: a rank alone must not stop on its loss while the others
  // wait in a collective; the loss summed over the ranks decides, at
  // progress time.
  run->check_every_batch =
      options_.device.is_cpu() && !scaling() && options_.data_parallel == nullptr;
  run->checkpoint_step = start_.step;
  run->lr = run->schedule.LrAt(run->applied.applied());
  run->last_loss = start_.last_loss;
  ASSIGN_OR_RETURN(run->loader,
                   BatchLoader::Create({.dataset = data_.train.get(),
                                        .batch_size = spec.batch_size(),
                                        .seed = spec.seed(),
                                        .first_batch = start_.step * accumulate_,
                                        .end_batch = total_batches_,
                                        // Batches gathered on the device count in its
                                        // peak; one ahead is enough to overlap there.
                                        .queue_capacity = options_.data_on_device ? 1 : 4,
                                        .device = options_.device,
                                        .rank = rank(),
                                        .world_size = world_size()}));
  // What the plugin could not do as the mode asks (e.g. Linears FP8 cannot run).
  for (const std::string& warning : precision_->warnings()) context.Warn(warning);
  Announce(context);
  model_->SetTraining(true);
  run->graph = SetUpGraph(*run, context);
  run->interval_loss =
      torch::zeros({}, torch::TensorOptions(torch::kFloat64).device(options_.device));
  run->train_start = Clock::now();
  run->interval_start = run->train_start;
  return run;
}

void Trainer::Announce(JobContext& context) const {
  const int64_t start_step = start_.step;
  const int64_t total_epochs = (total_batches_ + batches_per_epoch_ - 1) / batches_per_epoch_;
  const int64_t batch_size = options_.job.spec.batch_size();
  const int64_t global_batch = batch_size * world_size() * accumulate_;
  std::string where =
      absl::StrCat(" on ", options_.device.str(), " in ", options_.job.effective_precision);
  if (options_.data_parallel != nullptr) {
    absl::StrAppend(&where, ", ", world_size(), " ranks x batch ", batch_size,
                    accumulate_ > 1 ? absl::StrCat(" x ", accumulate_, " accumulated") : "",
                    " = global batch ", global_batch);
  }
  context.Update(
      v1::JobEvent::STATE_CHANGED,
      [&](v1::Job& job) {
        job.set_parameter_count(model_->ParameterCount());
        job.set_world_size(world_size());
        job.set_global_batch_size(global_batch);
        job.set_start_step(start_step);
        if (job.attempts_size() > 0) {
          job.mutable_attempts(job.attempts_size() - 1)->set_start_step(start_step);
        }
        job.mutable_progress()->set_step(start_step);
        job.mutable_progress()->set_total_steps(total_steps_);
        job.mutable_progress()->set_total_epochs(total_epochs);
        SetPrecisionStats(PrecisionStats(0), job);
      },
      start_step > 0 ? absl::StrCat("resuming ", model_->ParameterCount(), " parameters at step ",
                                    start_step, " of ", total_steps_, where)
                     : absl::StrCat("training ", model_->ParameterCount(), " parameters for ",
                                    total_steps_, " steps", where));
}

std::unique_ptr<CudaGraphStep> Trainer::SetUpGraph(RunState& run, JobContext& context) {
  // JobSpec.cuda_graph: the whole step replayed as one CUDA graph, where the
  // job allows it; otherwise a warning says why the job trains eagerly. A
  // capture that fails fails the job.
  if (!options_.job.spec.cuda_graph()) return nullptr;
  if (options_.data_parallel != nullptr) {
    context.Warn(
        "cuda_graph: not with data-parallel training (devices x num_nodes > 1); training eagerly");
    return nullptr;
  }
  if (options_.job.half_update.rounding != UpdateRounding::kNearest) {
    // The rounded update draws random bits or keeps buffers outside the
    // fused optimizer's capture.
    context.Warn(absl::StrCat(
        "cuda_graph: not with bf16_update=", UpdateRoundingName(options_.job.half_update.rounding),
        "; training eagerly"));
    return nullptr;
  }
  std::vector<torch::Tensor>* parameters = &run.parameters;
  absl::StatusOr<std::unique_ptr<CudaGraphStep>> created = CudaGraphStep::Create(
      {.device = options_.device,
       .accumulate_grad_batches = accumulate_,
       .optimizer_name = options_.job.spec.optimizer(),
       .optimizer = optimizer_.get(),
       .scaler = scaling() ? precision_->grad_scaler() : nullptr,
       .device_shared = !options_.memory_exact},
      [this, parameters](const torch::Tensor& inputs, const torch::Tensor& targets) {
        torch::Tensor loss = ForwardBackward(inputs, targets, /*loss_divisor=*/1);
        return CudaGraphStep::Output{loss, ClipAndStep(*parameters, loss)};
      });
  if (created.ok()) return std::move(*created);
  context.Warn(std::string(created.status().message()));
  return nullptr;
}

absl::Status Trainer::TrainStep(int64_t step, RunState& run, JobContext& context) {
  run.lr = run.schedule.LrAt(run.applied.applied());
  for (auto& group : optimizer_->param_groups()) group.options().set_lr(run.lr);
  if (run.graph != nullptr) {
    // One batch per step (accumulation refuses a graph).
    ASSIGN_OR_RETURN(Batch batch, run.loader->Next());
    ASSIGN_OR_RETURN(const CudaGraphStep::Output out, run.graph->Run(batch.inputs, batch.targets));
    run.interval_loss += out.loss.to(torch::kFloat64);
    ++run.interval_batches;
    run.interval_items += batch.targets.size(0);
    run.applied.Add(out.step);
  } else {
    const int64_t first_batch = (step - 1) * accumulate_;
    const int64_t end_batch = std::min(step * accumulate_, total_batches_);
    // The loss of each batch is divided by the batch count, so that the
    // summed gradients are those of their mean.
    const double loss_divisor = static_cast<double>(end_batch - first_batch);
    optimizer_->zero_grad();
    torch::Tensor step_loss;  // summed over the step's batches, for the monitor
    for (int64_t b = first_batch; b < end_batch; ++b) {
      ASSIGN_OR_RETURN(Batch batch, run.loader->Next());
      const int64_t items = batch.targets.size(0);
      ++run.interval_batches;
      run.interval_items += items;
      if (items == 0) continue;  // this rank's share of a short last batch
      // Data parallel: this rank's loss weighted by its share of the global
      // batch, so that the gradients summed over the ranks are those of the
      // global batch's mean loss.
      const double share = options_.data_parallel == nullptr
                               ? 1.0
                               : static_cast<double>(items) / GlobalBatchItems(b);
      const torch::Tensor loss = ForwardBackward(batch.inputs, batch.targets, loss_divisor / share);
      if (run.check_every_batch) {
        const double value = loss.item<double>();
        if (!std::isfinite(value)) {
          return FailNonFinite(step, value, NonFiniteNow(step, run), context);
        }
      }
      step_loss = step_loss.defined() ? step_loss + loss : loss;
      run.interval_loss +=
          share == 1.0 ? loss.to(torch::kFloat64) : loss.to(torch::kFloat64) * share;
    }
    if (options_.data_parallel != nullptr) {
      // Summed before the scaler unscales them and before clipping.
      options_.data_parallel->AllReduceGradients(run.parameters);
    }
    run.applied.Add(ClipAndStep(run.parameters, step_loss));
  }
  if (step == start_.step + 1) {
    gradient_bytes_ = GradientBytes(run.parameters);
    optimizer_state_bytes_ = OptimizerStateBytes(*optimizer_);
    compensation_bytes_ = precision_->StateBytes();
  }
  ++run.interval_steps;
  return absl::OkStatus();
}

absl::Status Trainer::ReportProgress(int64_t step, RunState& run, JobContext& context) {
  const double elapsed = Seconds(Clock::now() - run.interval_start);
  SumOverRanks(run);
  run.last_loss = run.interval_loss.item<double>() / static_cast<double>(run.interval_batches);
  const GradientMonitor::Interval grads = ReadGradients();
  const std::optional<v1::NonFiniteStep> record = IntervalRecord(grads, step);
  if (!scaling() && !std::isfinite(run.last_loss)) {
    return FailNonFinite(step, run.last_loss, record, context);
  }
  if (record) last_non_finite_ = *record;
  const double items_per_second = elapsed > 0 ? run.interval_items / elapsed : 0;
  const v1::PrecisionStats precision_stats = PrecisionStats(step);
  run.applied.Correct(precision_stats.skipped_steps());
  const v1::MemoryStats memory = MemoryStats();
  SetMetrics(context, run.last_loss, items_per_second, precision_stats, memory, grads);
  context.Update(v1::JobEvent::PROGRESS, [&](v1::Job& job) {
    v1::Progress* p = job.mutable_progress();
    p->set_step(step);
    p->set_epoch((step - 1) * accumulate_ / batches_per_epoch_ + 1);
    p->set_loss(run.last_loss);
    p->set_items_per_second(items_per_second);
    p->set_step_seconds(elapsed / static_cast<double>(run.interval_steps));
    p->set_lr(run.lr);
    // The latest finite norm stays until a later interval has one; the
    // largest is this interval's, none if no step of it had a finite norm.
    if (grads.grad_norm) p->set_grad_norm(*grads.grad_norm);
    if (grads.max_grad_norm) {
      p->set_max_grad_norm(*grads.max_grad_norm);
    } else {
      p->clear_max_grad_norm();
    }
    SetPrecisionStats(precision_stats, job);
    *job.mutable_memory() = memory;
  });
  if (record) {
    context.Warn(DescribeNonFiniteStep(*record, batches_per_epoch_, ParameterTensors()));
  }
  run.interval_loss.zero_();
  run.interval_batches = 0;
  run.interval_steps = 0;
  run.interval_items = 0;
  run.interval_start = Clock::now();
  return absl::OkStatus();
}

void Trainer::SumOverRanks(RunState& run) {
  if (options_.data_parallel == nullptr) return;
  // The global batches' loss and items: every rank sees the same loss and
  // makes the same decision on it.
  torch::Tensor sums =
      torch::stack({run.interval_loss, torch::full({}, static_cast<double>(run.interval_items),
                                                   run.interval_loss.options())});
  options_.data_parallel->AllReduceSum(sums);
  sums = sums.cpu();
  run.interval_loss.fill_(sums[0].item<double>());
  run.interval_items = std::llround(sums[1].item<double>());
}

void Trainer::SetMetrics(JobContext& context, double loss, double items_per_second,
                         const v1::PrecisionStats& precision, const v1::MemoryStats& memory,
                         const GradientMonitor::Interval& grads) const {
  JobMetrics& metrics = context.metrics();
  metrics.SetLoss(loss);
  metrics.SetItemsPerSecond(items_per_second);
  if (grads.max_grad_norm) metrics.SetGradNorm(*grads.max_grad_norm);
  if (precision.grad_scaler_enabled()) {
    metrics.SetGradScaler(precision.skipped_steps(), precision.scale());
  }
  metrics.SetMemory(memory.peak_bytes(), memory.baseline_fp32_peak_bytes(), memory.savings_ratio());
}

GradientMonitor::Interval Trainer::ReadGradients() {
  DataParallel* dp = options_.data_parallel;
  if (dp == nullptr) return gradients_->Read();
  return gradients_->Read([dp](const torch::Tensor& t) { dp->AllReduceMax(t); });
}

std::optional<v1::NonFiniteStep> Trainer::IntervalRecord(const GradientMonitor::Interval& grads,
                                                         int64_t last_step) const {
  if (grads.non_finite_steps == 0) return std::nullopt;
  const int64_t step = last_step - grads.steps + 1 + grads.first_non_finite_index;
  return NonFiniteRecord(step, grads.loss_non_finite, grads.non_finite_parameters,
                         grads.non_finite_steps);
}

v1::NonFiniteStep Trainer::NonFiniteNow(int64_t step, const RunState& run) {
  // A gradient that overflowed in an earlier step of the interval is what
  // turned the weights, and then this loss, into NaN.
  if (std::optional<v1::NonFiniteStep> earlier = IntervalRecord(gradients_->Read(), step - 1)) {
    return *earlier;
  }
  return NonFiniteRecord(step, /*loss_non_finite=*/true, gradients_->NonFiniteNow(run.parameters),
                         /*steps_in_interval=*/1);
}

v1::NonFiniteStep Trainer::NonFiniteRecord(int64_t step, bool loss_non_finite,
                                           const std::vector<int>& parameters,
                                           int64_t steps_in_interval) const {
  constexpr size_t kNamed = 8;
  const int64_t first_batch = (step - 1) * accumulate_;
  const int64_t end_batch = std::min(step * accumulate_, total_batches_);
  v1::NonFiniteStep record;
  record.set_step(step);
  record.set_epoch(first_batch / batches_per_epoch_ + 1);
  record.set_batch(first_batch % batches_per_epoch_);
  record.set_batches(end_batch - first_batch);
  record.set_first_item(record.batch() * options_.job.spec.batch_size() * world_size());
  int64_t items = 0;
  for (int64_t b = first_batch; b < end_batch; ++b) items += GlobalBatchItems(b);
  record.set_items(items);
  record.set_loss_non_finite(loss_non_finite);
  const std::vector<std::string>& names = gradients_->parameter_names();
  for (size_t i = 0; i < parameters.size() && i < kNamed; ++i) {
    record.add_parameters(names[parameters[i]]);
  }
  record.set_non_finite_parameters(static_cast<int32_t>(parameters.size()));
  record.set_skipped(scaling());
  record.set_steps_in_interval(steps_in_interval);
  return record;
}

absl::Status Trainer::FailNonFinite(int64_t step, double loss,
                                    const std::optional<v1::NonFiniteStep>& record,
                                    JobContext& context) {
  if (!record) return NonFiniteLoss(step, loss, options_.job, "");
  last_non_finite_ = *record;
  const std::string text = DescribeNonFiniteStep(*record, batches_per_epoch_, ParameterTensors());
  // A warning, as at progress time, that also carries the record to the job.
  context.Update(
      v1::JobEvent::WARNING,
      [&](v1::Job& job) {
        job.add_warnings(text);
        *job.mutable_precision_stats()->mutable_last_non_finite() = *record;
      },
      text);
  return NonFiniteLoss(step, loss, options_.job, text);
}

absl::Status Trainer::MaybeCheckpoint(int64_t step, RunState& run, JobContext& context) {
  const int64_t every = options_.job.spec.checkpoint_every_n_steps();
  if (options_.checkpoint_path.empty() || every <= 0 || step % every != 0 || step == total_steps_) {
    return absl::OkStatus();
  }
  return SaveCheckpoint(step, step * accumulate_, run, context);
}

void Trainer::MaybeEvaluate(int64_t step, const RunState& run, JobContext& context) {
  const int64_t every = options_.job.spec.eval().every_n_steps();
  if (!run.has_test || every <= 0 || step % every != 0 || step == total_steps_) return;
  if (rank() != 0) return;  // rank 0 evaluates for the job
  const Evaluation eval = Evaluate(&context);
  context.Update(
      v1::JobEvent::EVALUATION, [&](v1::Job& job) { SetEvaluation(eval, *job.mutable_result()); },
      absl::StrCat("step ", step, ": ", DescribeEvaluation(eval)));
}

absl::Status Trainer::Cancel(int64_t done, StopReason reason, RunState& run, JobContext& context) {
  // The work done so far is kept when the job asked for periodic
  // checkpoints, and always when the worker is shutting down (the next
  // attempt resumes from it); never once the job is another worker's.
  const bool keep =
      reason == StopReason::kPreempted ||
      (reason != StopReason::kLeaseLost && options_.job.spec.checkpoint_every_n_steps() > 0);
  if (!options_.checkpoint_path.empty() && keep && done > run.checkpoint_step) {
    RETURN_IF_ERROR(SaveCheckpoint(done, done * accumulate_, run, context));
  }
  if (reason == StopReason::kPreempted && context.stop_reason() != StopReason::kPreempted) {
    // The shutdown was another node's: this worker's job is released to
    // the queue, not cancelled (ABORTED tells the two apart).
    return absl::AbortedError(
        absl::StrCat("stopped at step ", done,
                     " with a checkpoint: a worker running another node of the job "
                     "shuts down"));
  }
  return absl::CancelledError(absl::StrCat("cancelled at step ", done));
}

StopReason Trainer::AgreedStop(const JobContext& context) {
  // kNone < kCancelled < kPreempted < kLeaseLost: the strongest reason any
  // rank was given wins, and every rank stops at this step.
  const int64_t agreed =
      options_.data_parallel->AgreeMax(static_cast<int64_t>(context.stop_reason()));
  return static_cast<StopReason>(agreed);
}

int64_t Trainer::GlobalBatchItems(int64_t b) const {
  return BatchLoader::GlobalBatchItems(data_.train->size(), options_.job.spec.batch_size(),
                                       world_size(), b);
}

int Trainer::rank() const {
  return options_.data_parallel != nullptr ? options_.data_parallel->rank() : 0;
}

int Trainer::world_size() const {
  return options_.data_parallel != nullptr ? options_.data_parallel->world_size() : 1;
}

absl::StatusOr<v1::JobResult> Trainer::Finish(RunState& run, JobContext& context) {
  // The final weights are kept before the final evaluation, which a
  // cancellation may cut short.
  if (context.stop_reason() == StopReason::kLeaseLost) {
    return absl::CancelledError("the job is no longer this worker's");
  }
  if (!options_.checkpoint_path.empty() && total_steps_ > run.checkpoint_step) {
    RETURN_IF_ERROR(SaveCheckpoint(total_steps_, total_batches_, run, context));
  }
  v1::JobResult result;
  result.set_final_loss(run.last_loss);
  result.set_steps_completed(total_steps_);
  result.set_train_seconds(Seconds(Clock::now() - run.train_start));
  if (run.has_test && rank() == 0) {
    const Evaluation eval = Evaluate(&context);
    if (context.cancelled()) return absl::CancelledError("cancelled during final evaluation");
    SetEvaluation(eval, result);
  }
  return result;
}

void Trainer::SetEvaluation(const Evaluation& eval, v1::JobResult& result) const {
  result.set_eval_loss(eval.loss);
  if (language_model()) {
    result.set_eval_perplexity(eval.perplexity);
  } else {
    result.set_eval_accuracy(eval.accuracy);
  }
}

std::string Trainer::DescribeEvaluation(const Evaluation& eval) const {
  return language_model()
             ? absl::StrFormat("eval loss %.4f, perplexity %.3f", eval.loss, eval.perplexity)
             : absl::StrFormat("eval accuracy %.4f, loss %.4f", eval.accuracy, eval.loss);
}

}  // namespace mantissa
