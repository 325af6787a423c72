#include "server/training/trainer.h"

#include <chrono>
#include <cmath>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "server/common/option_reader.h"
#include "server/common/status_macros.h"
#include "server/common/torch_compat.h"
#include "server/data/dataset_factory.h"
#include "server/data/device_resident_dataset.h"
#include "server/models/model_factory.h"
#include "server/precision/fp32_precision.h"
#include "server/precision/precision_factory.h"
#include "server/training/applied_step_counter.h"
#include "server/training/batch_loader.h"
#include "server/training/cuda_graph_step.h"
#include "server/training/job_spec_resolver.h"
#include "server/training/memory_estimate.h"
#include "server/training/optimizer_factory.h"

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

absl::Status NonFiniteLoss(int64_t step, double loss, const std::string& precision) {
  const bool half = precision == "16-true" || precision == "bf16-true";
  return absl::InternalError(absl::StrCat(
      "step ", step, ": the loss is ", loss, " under ", precision,
      " without a grad scaler; training stopped instead of continuing on NaN. Likely cause: ",
      half ? "overflow or underflow in the half-precision weights or optimizer state (for "
             "Adam/AdamW, an eps that rounds to 0); try 16-mixed or bf16-mixed, a larger eps or "
             "a lower learning rate"
           : "diverging training; lower the learning rate or set gradient_clip_norm"));
}

// torch::nn::utils::clip_grad_norm_ (L2) without its final read of the norm:
// the same ops and results, but no host sync, so a CUDA graph can hold it.
void ClipGradNorm(const std::vector<torch::Tensor>& parameters, double max_norm) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> grads;
  std::vector<torch::Tensor> norms;
  for (const torch::Tensor& parameter : parameters) {
    if (!parameter.grad().defined()) continue;
    grads.push_back(parameter.grad());
    norms.push_back(parameter.grad().norm(2));
  }
  if (grads.empty()) return;
  const torch::Tensor total = norms.size() == 1 ? norms[0] : torch::stack(norms).norm(2);
  const torch::Tensor coef = torch::clamp(max_norm / (total + 1e-6), c10::nullopt, 1.0);
  for (torch::Tensor& grad : grads) grad.mul_(coef);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(Options options) {
  if (options.device.is_cpu()) MemoryTracker::InstallCpuCounting();
  std::unique_ptr<Trainer> t(new Trainer(std::move(options)));
  const v1::JobSpec& spec = t->options_.spec;

  ASSIGN_OR_RETURN(t->data_, DatasetFactory::Load(
                                 spec.dataset(), ToOptionMap(spec.dataset_options()), spec.seed()));
  if (t->options_.data_on_device) {
    t->data_.train = DeviceResidentDataset::Create(*t->data_.train, t->options_.device);
    if (t->data_.test) {
      t->data_.test = DeviceResidentDataset::Create(*t->data_.test, t->options_.device);
    }
  }
  t->accumulate_ = std::max<int64_t>(1, spec.accumulate_grad_batches());
  t->batches_per_epoch_ = (t->data_.train->size() + spec.batch_size() - 1) / spec.batch_size();
  const std::optional<int64_t> total_batches =
      spec.has_steps() ? CheckedMul(spec.steps(), t->accumulate_)
                       : CheckedMul(spec.epochs(), t->batches_per_epoch_);
  if (!total_batches) {
    return absl::InvalidArgumentError(absl::StrCat(spec.has_steps() ? "steps" : "epochs",
                                                   ": the job's batch count overflows int64"));
  }
  t->total_batches_ = *total_batches;
  t->total_steps_ = (t->total_batches_ + t->accumulate_ - 1) / t->accumulate_;
  const SpecLimits& limits = t->options_.limits;
  if (t->total_steps_ > limits.max_job_steps) {
    return absl::InvalidArgumentError(absl::StrCat(
        spec.has_steps() ? "steps" : "epochs", ": the job comes to ", t->total_steps_, " steps (",
        t->batches_per_epoch_, " batches per epoch); must be <= ", limits.max_job_steps,
        " (--max_job_steps)"));
  }
  std::optional<int64_t> item = 1;
  for (int64_t d : t->data_.spec.input_shape) item = item ? CheckedMul(*item, d) : item;
  if (!item || !CheckedMul(*item, std::max(spec.batch_size(), spec.eval().batch_size()))) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch_size: batch_size x the dataset's item size overflows int64"));
  }
  // Before anything is allocated for the model: its size by formula against
  // the limits and the device's free memory.
  ASSIGN_OR_RETURN(
      const std::optional<ModelFactory::SizeEstimate> size,
      ModelFactory::EstimateSize(spec.model(), ToOptionMap(spec.model_options()), t->data_.spec));
  if (size) {
    const absl::StatusOr<int64_t> free = FreeMemoryBytes(t->options_.device);
    RETURN_IF_ERROR(CheckModelSize(*size, spec.batch_size(), t->options_.effective_precision,
                                   spec.optimizer(), free.ok() ? *free : -1,
                                   t->options_.device.str(), limits));
  }

  RETURN_IF_ERROR(t->MeasureBaseline());

  // Everything the job allocates from here on counts towards its peak.
  t->memory_.Start();
  ASSIGN_OR_RETURN(t->precision_, PrecisionFactory::Create(t->options_.effective_precision,
                                                           t->options_.device, spec.fp8()));
  ASSIGN_OR_RETURN(std::unique_ptr<GradScaler> scaler,
                   GradScaler::Create(GradScalerOptions(spec.grad_scaler())));
  t->precision_->set_grad_scaler(std::move(scaler));
  ASSIGN_OR_RETURN(t->model_, t->BuildModel(t->precision_.get()));
  t->precision_->ConvertModule(*t->model_);
  t->model_->ToDevice(t->options_.device);
  t->parameter_bytes_ = TensorBytes(t->model_->Parameters());
  ASSIGN_OR_RETURN(t->optimizer_, OptimizerFactory::Create(spec, t->model_->Parameters()));

  if (!t->options_.resume_path.empty()) {
    ASSIGN_OR_RETURN(t->start_, Checkpoint::Load(t->options_.resume_path,
                                                 {t->model_.get(), t->optimizer_.get(),
                                                  t->precision_.get(), t->options_.device}));
    if (t->start_.step > t->total_steps_ || t->start_.next_batch > t->total_batches_) {
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint ", t->options_.resume_path, " is at step ", t->start_.step,
                       " but the job has only ", t->total_steps_, " steps"));
    }
    // The archive's copies of every tensor were freed again: not the job's.
    t->memory_.RestartPeak();
  }
  return t;
}

absl::StatusOr<std::unique_ptr<Model>> Trainer::BuildModel(PrecisionPlugin* plugin) const {
  const v1::JobSpec& spec = options_.spec;
  // Parameter initialisation draws from LibTorch's global generator and the
  // init guard may set the process-wide default dtype: the lock makes a seed
  // give the same weights, and keeps concurrent jobs from seeing each
  // other's default dtype.
  static std::mutex init_mu;
  std::lock_guard<std::mutex> lock(init_mu);
  torch::manual_seed(spec.seed());
  std::unique_ptr<PrecisionGuard> init_guard = plugin->ModuleInitGuard();
  return ModelFactory::Build(spec.model(), ToOptionMap(spec.model_options()), data_.spec);
}

absl::Status Trainer::MeasureBaseline() {
  const v1::JobSpec& spec = options_.spec;
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
                     OptimizerFactory::Create(spec, model->Parameters()));
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

torch::Tensor Trainer::ForwardBackward(const torch::Tensor& inputs, const torch::Tensor& targets,
                                       double loss_divisor) {
  torch::Tensor x = precision_->ConvertInput(inputs);
  torch::Tensor logits;
  {
    // One guard per batch: leaving it clears autocast's cast cache, so a
    // captured step casts the current weights instead of reusing old casts.
    std::unique_ptr<PrecisionGuard> guard = precision_->ForwardGuard();
    logits = model_->Forward(x);
  }
  logits = precision_->ConvertOutput(logits);
  torch::Tensor loss = Loss(logits, targets);
  precision_->Backward(loss_divisor == 1 ? loss : loss / loss_divisor);
  return loss.detach();
}

OptimizerStepResult Trainer::ClipAndStep(const std::vector<torch::Tensor>& parameters) {
  if (options_.spec.has_gradient_clip_norm()) {
    // Clip what the optimizer will apply: unscaled gradients.
    precision_->UnscaleGradients(*optimizer_);
    ClipGradNorm(parameters, options_.spec.gradient_clip_norm());
  }
  return precision_->OptimizerStep(*optimizer_);
}

int64_t Trainer::SkippedSteps() const {
  const GradScaler* scaler = precision_->grad_scaler();
  return scaler != nullptr && scaler->enabled() ? scaler->skipped_steps() : 0;
}

absl::Status Trainer::SaveCheckpoint(const CheckpointPosition& position, JobContext& context) {
  std::string spec_json;
  (void)google::protobuf::util::MessageToJsonString(options_.spec, &spec_json);
  RETURN_IF_ERROR(Checkpoint::KeepPrevious(options_.checkpoint_path, saved_step_,
                                           std::max<int64_t>(1, options_.spec.keep_checkpoints())));
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
  return stats;
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
  stats.set_source(memory_.Source());
  stats.set_exact(options_.memory_exact);
  return stats;
}

Trainer::Evaluation Trainer::Evaluate(const JobContext* context) {
  Evaluation eval;
  if (!data_.test || data_.test->size() == 0) return eval;
  torch::NoGradGuard no_grad;
  model_->SetTraining(false);
  const v1::EvalSettings& settings = options_.spec.eval();
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
    torch::Tensor x = precision_->ConvertInput(data.inputs.to(options_.device));
    torch::Tensor y = data.targets.to(options_.device);
    torch::Tensor logits;
    {
      std::unique_ptr<PrecisionGuard> guard = precision_->ForwardGuard();
      logits = model_->Forward(x);
    }
    logits = precision_->ConvertOutput(logits);
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
  const v1::JobSpec& spec = options_.spec;
  const torch::Device device = options_.device;
  const std::string& precision = options_.effective_precision;
  const int64_t total_epochs = (total_batches_ + batches_per_epoch_ - 1) / batches_per_epoch_;
  const bool has_test = data_.test && data_.test->size() > 0 && !spec.eval().disabled();
  const bool scaling = precision_->grad_scaler() != nullptr && precision_->grad_scaler()->enabled();
  const bool checkpoints = !options_.checkpoint_path.empty();
  const int64_t checkpoint_every = spec.checkpoint_every_n_steps();
  // On the CPU reading the loss costs nothing, so every batch is checked; on
  // CUDA only at progress time, to keep the host off the hot path.
  const bool check_every_batch = device.is_cpu() && !scaling;
  std::vector<torch::Tensor> parameters = model_->Parameters();
  ASSIGN_OR_RETURN(const LrSchedule schedule,
                   LrSchedule::Create(LrScheduleOptions(spec, total_steps_)));
  const int64_t start_step = start_.step;
  // Steps the optimizer applied; skipped ones do not advance the schedule.
  // A fused optimizer's skips are known only when the scaler is read, at
  // progress time (see AppliedStepCounter); checkpoints read it first.
  AppliedStepCounter applied(start_.applied_steps, SkippedSteps());
  const auto applied_now = [&] {
    applied.Correct(SkippedSteps());
    return applied.applied();
  };
  int64_t checkpoint_step = start_step;  // the latest checkpoint's step
  double lr = schedule.LrAt(applied.applied());
  double last_loss = start_.last_loss;

  ASSIGN_OR_RETURN(std::unique_ptr<BatchLoader> loader,
                   BatchLoader::Create({.dataset = data_.train.get(),
                                        .batch_size = spec.batch_size(),
                                        .seed = spec.seed(),
                                        .first_batch = start_step * accumulate_,
                                        .end_batch = total_batches_,
                                        // Batches gathered on the device count in its
                                        // peak; one ahead is enough to overlap there.
                                        .queue_capacity = options_.data_on_device ? 1 : 4,
                                        .device = device}));

  // What the plugin could not do as the mode asks (e.g. Linears FP8 cannot run).
  for (const std::string& warning : precision_->warnings()) context.Warn(warning);
  context.Update(
      v1::JobEvent::STATE_CHANGED,
      [&](v1::Job& job) {
        job.set_parameter_count(model_->ParameterCount());
        job.set_start_step(start_step);
        job.mutable_progress()->set_step(start_step);
        job.mutable_progress()->set_total_steps(total_steps_);
        job.mutable_progress()->set_total_epochs(total_epochs);
        *job.mutable_precision_stats() = PrecisionStats(0);
      },
      start_step > 0
          ? absl::StrCat("resuming ", model_->ParameterCount(), " parameters at step ", start_step,
                         " of ", total_steps_, " on ", device.str(), " in ", precision)
          : absl::StrCat("training ", model_->ParameterCount(), " parameters for ", total_steps_,
                         " steps on ", device.str(), " in ", precision));

  model_->SetTraining(true);

  // JobSpec.cuda_graph: the whole step replayed as one CUDA graph, where the
  // job allows it; otherwise a warning says why the job trains eagerly. A
  // capture that fails fails the job.
  std::unique_ptr<CudaGraphStep> graph;
  if (spec.cuda_graph()) {
    absl::StatusOr<std::unique_ptr<CudaGraphStep>> created = CudaGraphStep::Create(
        {.device = device,
         .accumulate_grad_batches = accumulate_,
         .optimizer_name = spec.optimizer(),
         .optimizer = optimizer_.get(),
         .scaler = scaling ? precision_->grad_scaler() : nullptr,
         .device_shared = !options_.memory_exact},
        [this, &parameters](const torch::Tensor& inputs, const torch::Tensor& targets) {
          torch::Tensor loss = ForwardBackward(inputs, targets, /*loss_divisor=*/1);
          return CudaGraphStep::Output{loss, ClipAndStep(parameters)};
        });
    if (created.ok()) {
      graph = std::move(*created);
    } else {
      context.Warn(std::string(created.status().message()));
    }
  }

  // The interval's loss is summed on the device and read back only at
  // progress time, so steps do not wait on the host.
  torch::Tensor interval_loss =
      torch::zeros({}, torch::TensorOptions(torch::kFloat64).device(device));
  int64_t interval_batches = 0;
  int64_t interval_steps = 0;
  int64_t interval_items = 0;
  const Clock::time_point train_start = Clock::now();
  Clock::time_point interval_start = train_start;

  for (int64_t step = start_step + 1; step <= total_steps_; ++step) {
    if (context.cancelled()) {
      const int64_t done = step - 1;
      if (checkpoints && checkpoint_every > 0 && done > checkpoint_step) {
        // The job asked for periodic checkpoints: keep the work done so far.
        RETURN_IF_ERROR(
            SaveCheckpoint({done, done * accumulate_, applied_now(), last_loss}, context));
      }
      return absl::CancelledError(absl::StrCat("cancelled at step ", done));
    }
    const Clock::time_point step_start = Clock::now();
    lr = schedule.LrAt(applied.applied());
    for (auto& group : optimizer_->param_groups()) group.options().set_lr(lr);
    if (graph != nullptr) {
      // One batch per step (accumulation refuses a graph).
      ASSIGN_OR_RETURN(Batch batch, loader->Next());
      ASSIGN_OR_RETURN(const CudaGraphStep::Output out, graph->Run(batch.inputs, batch.targets));
      interval_loss += out.loss.to(torch::kFloat64);
      ++interval_batches;
      interval_items += batch.targets.size(0);
      applied.Add(out.step);
    } else {
      const int64_t first_batch = (step - 1) * accumulate_;
      const int64_t end_batch = std::min(step * accumulate_, total_batches_);
      // The loss of each batch is divided by the batch count, so that the
      // summed gradients are those of their mean.
      const double loss_divisor = static_cast<double>(end_batch - first_batch);
      optimizer_->zero_grad();
      for (int64_t b = first_batch; b < end_batch; ++b) {
        ASSIGN_OR_RETURN(Batch batch, loader->Next());
        const torch::Tensor loss = ForwardBackward(batch.inputs, batch.targets, loss_divisor);
        if (check_every_batch) {
          const double value = loss.item<double>();
          if (!std::isfinite(value)) return NonFiniteLoss(step, value, precision);
        }
        interval_loss += loss.to(torch::kFloat64);
        ++interval_batches;
        interval_items += batch.targets.size(0);
      }
      applied.Add(ClipAndStep(parameters));
    }
    if (step == start_step + 1) {
      gradient_bytes_ = GradientBytes(parameters);
      optimizer_state_bytes_ = OptimizerStateBytes(*optimizer_);
    }
    ++interval_steps;
    if (options_.synchronize_steps) compat::Synchronize(device);
    const double step_seconds = Seconds(Clock::now() - step_start);
    context.metrics().ObserveStep(step_seconds);
    if (options_.on_step) options_.on_step(step, step_seconds);

    if (step % spec.progress_every_n_steps() == 0 || step == total_steps_) {
      const double elapsed = Seconds(Clock::now() - interval_start);
      last_loss = interval_loss.item<double>() / static_cast<double>(interval_batches);
      if (!scaling && !std::isfinite(last_loss)) return NonFiniteLoss(step, last_loss, precision);
      const double items_per_second = elapsed > 0 ? interval_items / elapsed : 0;
      const v1::PrecisionStats precision_stats = PrecisionStats(step);
      applied.Correct(precision_stats.skipped_steps());
      const v1::MemoryStats memory = MemoryStats();
      context.metrics().SetLoss(last_loss);
      context.metrics().SetItemsPerSecond(items_per_second);
      if (precision_stats.grad_scaler_enabled()) {
        context.metrics().SetGradScaler(precision_stats.skipped_steps(), precision_stats.scale());
      }
      context.metrics().SetMemory(memory.peak_bytes(), memory.baseline_fp32_peak_bytes(),
                                  memory.savings_ratio());
      context.Update(v1::JobEvent::PROGRESS, [&](v1::Job& job) {
        v1::Progress* p = job.mutable_progress();
        p->set_step(step);
        p->set_epoch((step - 1) * accumulate_ / batches_per_epoch_ + 1);
        p->set_loss(last_loss);
        p->set_items_per_second(items_per_second);
        p->set_step_seconds(elapsed / static_cast<double>(interval_steps));
        p->set_lr(lr);
        *job.mutable_precision_stats() = precision_stats;
        *job.mutable_memory() = memory;
      });
      interval_loss.zero_();
      interval_batches = 0;
      interval_steps = 0;
      interval_items = 0;
      interval_start = Clock::now();
    }

    if (checkpoints && checkpoint_every > 0 && step % checkpoint_every == 0 &&
        step != total_steps_) {
      RETURN_IF_ERROR(
          SaveCheckpoint({step, step * accumulate_, applied_now(), last_loss}, context));
      checkpoint_step = step;
    }

    if (has_test && spec.eval().every_n_steps() > 0 && step % spec.eval().every_n_steps() == 0 &&
        step != total_steps_) {
      const Evaluation eval = Evaluate(&context);
      context.Update(
          v1::JobEvent::EVALUATION,
          [&](v1::Job& job) { SetEvaluation(eval, *job.mutable_result()); },
          absl::StrCat("step ", step, ": ", DescribeEvaluation(eval)));
    }
  }

  // The final weights are kept before the final evaluation, which a
  // cancellation may cut short.
  if (checkpoints && total_steps_ > checkpoint_step) {
    RETURN_IF_ERROR(
        SaveCheckpoint({total_steps_, total_batches_, applied_now(), last_loss}, context));
  }
  v1::JobResult result;
  result.set_final_loss(last_loss);
  result.set_steps_completed(total_steps_);
  result.set_train_seconds(Seconds(Clock::now() - train_start));
  if (has_test) {
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
