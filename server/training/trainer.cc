#include "server/training/trainer.h"

#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <cmath>
#include <map>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/common/option_reader.h"
#include "server/common/status_macros.h"
#include "server/data/dataset_factory.h"
#include "server/models/model_factory.h"
#include "server/precision/precision_factory.h"
#include "server/training/optimizer_factory.h"

namespace mantissa {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(Options options) {
  std::unique_ptr<Trainer> t(new Trainer());
  t->options_ = std::move(options);
  const v1::JobSpec& spec = t->options_.spec;

  ASSIGN_OR_RETURN(t->data_, DatasetFactory::Load(
                                 spec.dataset(), ToOptionMap(spec.dataset_options()), spec.seed()));
  ASSIGN_OR_RETURN(t->precision_, PrecisionFactory::Create(t->options_.effective_precision));
  {
    // Parameter initialisation draws from LibTorch's global generator; the
    // lock makes a seed give the same weights even with concurrent jobs.
    static std::mutex init_mu;
    std::lock_guard<std::mutex> lock(init_mu);
    torch::manual_seed(spec.seed());
    std::unique_ptr<PrecisionGuard> init_guard = t->precision_->ModuleInitGuard();
    ASSIGN_OR_RETURN(t->model_, ModelFactory::Build(spec.model(), ToOptionMap(spec.model_options()),
                                                    t->data_.spec));
  }
  t->precision_->ConvertModule(*t->model_);
  t->model_->ToDevice(t->options_.device);
  ASSIGN_OR_RETURN(t->optimizer_, OptimizerFactory::Create(spec, t->model_->Parameters()));

  const int64_t n = t->data_.train->size();
  t->steps_per_epoch_ = (n + spec.batch_size() - 1) / spec.batch_size();
  t->total_steps_ = spec.has_steps() ? spec.steps() : spec.epochs() * t->steps_per_epoch_;
  return t;
}

torch::Tensor Trainer::Loss(const torch::Tensor& logits, const torch::Tensor& targets) const {
  return torch::nn::functional::cross_entropy(logits, targets);
}

Trainer::Evaluation Trainer::Evaluate(const JobContext* context) {
  Evaluation eval;
  if (!data_.test || data_.test->size() == 0) return eval;
  torch::NoGradGuard no_grad;
  model_->SetTraining(false);
  const v1::EvalSettings& settings = options_.spec.eval();
  const int64_t n = data_.test->size();
  const int64_t batch = settings.batch_size();
  int64_t seen = 0;
  torch::Tensor correct =
      torch::zeros({}, torch::TensorOptions(torch::kInt64).device(options_.device));
  torch::Tensor loss_sum =
      torch::zeros({}, torch::TensorOptions(torch::kFloat64).device(options_.device));
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
    loss_sum += Loss(logits, y).to(torch::kFloat64) * (end - start);
    correct += logits.argmax(1).eq(y).sum();
    seen += end - start;
  }
  model_->SetTraining(true);
  if (seen > 0) {
    eval.accuracy = static_cast<double>(correct.item<int64_t>()) / static_cast<double>(seen);
    eval.loss = loss_sum.item<double>() / static_cast<double>(seen);
  }
  return eval;
}

absl::StatusOr<v1::JobResult> Trainer::Run(JobContext& context) {
  const v1::JobSpec& spec = options_.spec;
  const torch::Device device = options_.device;
  const int64_t batch_size = spec.batch_size();
  const int64_t n = data_.train->size();
  const int64_t total_epochs = (total_steps_ + steps_per_epoch_ - 1) / steps_per_epoch_;
  const bool has_test = data_.test && data_.test->size() > 0 && !spec.eval().disabled();

  context.Update(
      v1::JobEvent::STATE_CHANGED,
      [&](v1::Job& job) {
        job.set_parameter_count(model_->ParameterCount());
        job.mutable_progress()->set_total_steps(total_steps_);
        job.mutable_progress()->set_total_epochs(total_epochs);
      },
      absl::StrCat("training ", model_->ParameterCount(), " parameters for ", total_steps_,
                   " steps on ", device.str()));

  // Shuffling uses a generator of the job's own, so the data order is a
  // function of the seed alone.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(spec.seed());
  torch::Tensor order;
  model_->SetTraining(true);

  // The interval's loss is summed on the device and read back only at
  // progress time, so steps do not wait on the host.
  torch::Tensor interval_loss =
      torch::zeros({}, torch::TensorOptions(torch::kFloat64).device(device));
  int64_t interval_steps = 0;
  int64_t interval_items = 0;
  double last_loss = std::nan("");
  const Clock::time_point train_start = Clock::now();
  Clock::time_point interval_start = train_start;

  for (int64_t step = 1; step <= total_steps_; ++step) {
    if (context.cancelled()) {
      return absl::CancelledError(absl::StrCat("cancelled at step ", step - 1));
    }
    const int64_t epoch_step = (step - 1) % steps_per_epoch_;
    if (epoch_step == 0) order = torch::randperm(n, gen, torch::kInt64);
    const int64_t start = epoch_step * batch_size;
    const int64_t end = std::min(n, start + batch_size);
    const Clock::time_point step_start = Clock::now();

    Batch batch = data_.train->Get(order.slice(0, start, end));
    torch::Tensor x = precision_->ConvertInput(batch.inputs.to(device));
    torch::Tensor y = batch.targets.to(device);
    torch::Tensor logits;
    {
      std::unique_ptr<PrecisionGuard> guard = precision_->ForwardGuard();
      logits = model_->Forward(x);
    }
    logits = precision_->ConvertOutput(logits);
    torch::Tensor loss = Loss(logits, y);
    optimizer_->zero_grad();
    precision_->Backward(loss);
    precision_->OptimizerStep(*optimizer_);

    interval_loss += loss.detach().to(torch::kFloat64);
    ++interval_steps;
    interval_items += end - start;
    context.metrics().ObserveStep(Seconds(Clock::now() - step_start));

    if (step % spec.progress_every_n_steps() == 0 || step == total_steps_) {
      const double elapsed = Seconds(Clock::now() - interval_start);
      last_loss = interval_loss.item<double>() / static_cast<double>(interval_steps);
      const double items_per_second = elapsed > 0 ? interval_items / elapsed : 0;
      context.metrics().SetLoss(last_loss);
      context.metrics().SetItemsPerSecond(items_per_second);
      context.Update(v1::JobEvent::PROGRESS, [&](v1::Job& job) {
        v1::Progress* p = job.mutable_progress();
        p->set_step(step);
        p->set_epoch((step - 1) / steps_per_epoch_ + 1);
        p->set_loss(last_loss);
        p->set_items_per_second(items_per_second);
        p->set_step_seconds(elapsed / static_cast<double>(interval_steps));
      });
      interval_loss.zero_();
      interval_steps = 0;
      interval_items = 0;
      interval_start = Clock::now();
    }

    if (has_test && spec.eval().every_n_steps() > 0 && step % spec.eval().every_n_steps() == 0 &&
        step != total_steps_) {
      const Evaluation eval = Evaluate(&context);
      context.Update(
          v1::JobEvent::EVALUATION,
          [&](v1::Job& job) {
            job.mutable_result()->set_eval_accuracy(eval.accuracy);
            job.mutable_result()->set_eval_loss(eval.loss);
          },
          absl::StrFormat("step %d: eval accuracy %.4f, loss %.4f", step, eval.accuracy,
                          eval.loss));
    }
  }

  v1::JobResult result;
  result.set_final_loss(last_loss);
  result.set_steps_completed(total_steps_);
  result.set_train_seconds(Seconds(Clock::now() - train_start));
  if (has_test) {
    const Evaluation eval = Evaluate(&context);
    if (context.cancelled()) return absl::CancelledError("cancelled during final evaluation");
    result.set_eval_accuracy(eval.accuracy);
    result.set_eval_loss(eval.loss);
  }
  return result;
}

}  // namespace mantissa
