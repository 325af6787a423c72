#include "client/job_spec_flags.h"

#include <cstdint>
#include <limits>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace mantissa::cli {
namespace {

absl::Status AddOptions(absl::string_view flag, const std::vector<std::string>& pairs,
                        google::protobuf::Map<std::string, std::string>* options) {
  for (const std::string& pair : pairs) {
    const size_t eq = pair.find('=');
    if (eq == std::string::npos || eq == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, ": '", pair, "' is not KEY=VALUE"));
    }
    const std::string key = pair.substr(0, eq);
    if (options->count(key) > 0) {
      return absl::InvalidArgumentError(absl::StrCat("--", flag, ": '", key, "' is given twice"));
    }
    (*options)[key] = pair.substr(eq + 1);
  }
  return absl::OkStatus();
}

void SetOptimization(const SubmitOptions& options, v1::JobSpec& spec) {
  if (options.optimizer) spec.set_optimizer(*options.optimizer);
  if (options.lr) spec.set_lr(*options.lr);
  if (options.weight_decay) spec.set_weight_decay(*options.weight_decay);
  if (options.momentum) spec.set_momentum(*options.momentum);
  if (options.nesterov) spec.set_nesterov(*options.nesterov);
  if (options.eps) spec.set_eps(*options.eps);
  if (options.gradient_clip_norm) spec.set_gradient_clip_norm(*options.gradient_clip_norm);
  if (options.lr_schedule) spec.set_lr_schedule(*options.lr_schedule);
  if (options.warmup_steps) spec.set_warmup_steps(*options.warmup_steps);
  if (options.min_lr) spec.set_min_lr(*options.min_lr);
  if (options.accumulate_grad_batches) {
    spec.set_accumulate_grad_batches(*options.accumulate_grad_batches);
  }
}

void SetEval(const SubmitOptions& options, v1::JobSpec& spec) {
  if (options.eval_every_n_steps) {
    spec.mutable_eval()->set_every_n_steps(*options.eval_every_n_steps);
  }
  if (options.eval_max_batches) spec.mutable_eval()->set_max_batches(*options.eval_max_batches);
  if (options.eval_batch_size) spec.mutable_eval()->set_batch_size(*options.eval_batch_size);
  if (options.no_eval) spec.mutable_eval()->set_disabled(true);
}

// Leaves the message out entirely when none of its flags was given.
void SetGradScaler(const SubmitOptions& options, v1::JobSpec& spec) {
  v1::GradScalerSettings& scaler = *spec.mutable_grad_scaler();
  if (options.grad_scaler_enabled) scaler.set_enabled(*options.grad_scaler_enabled);
  if (options.grad_scaler_init_scale) scaler.set_init_scale(*options.grad_scaler_init_scale);
  if (options.grad_scaler_growth_factor) {
    scaler.set_growth_factor(*options.grad_scaler_growth_factor);
  }
  if (options.grad_scaler_backoff_factor) {
    scaler.set_backoff_factor(*options.grad_scaler_backoff_factor);
  }
  if (options.grad_scaler_growth_interval) {
    scaler.set_growth_interval(*options.grad_scaler_growth_interval);
  }
  if (scaler.ByteSizeLong() == 0) spec.clear_grad_scaler();
}

void SetFp8(const SubmitOptions& options, v1::JobSpec& spec) {
  v1::Fp8Recipe& fp8 = *spec.mutable_fp8();
  if (options.fp8_format) fp8.set_fp8_format(*options.fp8_format);
  if (options.fp8_amax_history_len) fp8.set_amax_history_len(*options.fp8_amax_history_len);
  if (options.fp8_amax_compute_algo) fp8.set_amax_compute_algo(*options.fp8_amax_compute_algo);
  if (options.fp8_margin) fp8.set_margin(*options.fp8_margin);
  if (fp8.ByteSizeLong() == 0) spec.clear_fp8();
}

absl::Status SetMaxDuration(const std::string& text, v1::JobSpec& spec) {
  absl::Duration duration;
  if (!absl::ParseDuration(text, &duration) || duration <= absl::ZeroDuration() ||
      duration == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-duration: '", text,
                     "' is not a positive duration; write e.g. 90s, 30m, 2h or 1h30m"));
  }
  const int64_t nanos = absl::ToInt64Nanoseconds(duration);
  spec.mutable_max_duration()->set_seconds(nanos / 1'000'000'000);
  spec.mutable_max_duration()->set_nanos(static_cast<int32_t>(nanos % 1'000'000'000));
  return absl::OkStatus();
}

// The daemon checks the range; here the value only has to fit the int32 field.
absl::Status SetInt32(absl::string_view flag, const std::optional<int64_t>& value,
                      void (v1::JobSpec::*setter)(int32_t), v1::JobSpec& spec) {
  if (!value) return absl::OkStatus();
  if (*value < std::numeric_limits<int32_t>::min() ||
      *value > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, ": '", *value, "' is out of range"));
  }
  (spec.*setter)(static_cast<int32_t>(*value));
  return absl::OkStatus();
}

absl::Status SetDataParallel(const SubmitOptions& options, v1::JobSpec& spec) {
  if (absl::Status status = SetInt32("devices", options.devices, &v1::JobSpec::set_devices, spec);
      !status.ok()) {
    return status;
  }
  return SetInt32("num-nodes", options.num_nodes, &v1::JobSpec::set_num_nodes, spec);
}

// The settings that are neither the workload, the optimization nor a
// sub-message.
absl::Status SetRun(const SubmitOptions& options, v1::JobSpec& spec) {
  if (options.precision) spec.set_precision(*options.precision);
  if (options.steps) spec.set_steps(*options.steps);
  if (options.epochs) spec.set_epochs(*options.epochs);
  if (options.batch_size) spec.set_batch_size(*options.batch_size);
  if (options.seed) spec.set_seed(*options.seed);
  if (options.name) spec.set_name(*options.name);
  if (options.progress_every_n_steps) {
    spec.set_progress_every_n_steps(*options.progress_every_n_steps);
  }
  if (options.memory_baseline_steps) spec.set_memory_baseline_steps(*options.memory_baseline_steps);
  if (options.checkpoint_every_n_steps) {
    spec.set_checkpoint_every_n_steps(*options.checkpoint_every_n_steps);
  }
  if (options.keep_checkpoints) spec.set_keep_checkpoints(*options.keep_checkpoints);
  if (options.cuda_graph) spec.set_cuda_graph(*options.cuda_graph);
  if (options.bf16_update) spec.set_bf16_update(*options.bf16_update);
  if (options.max_duration) {
    if (absl::Status status = SetMaxDuration(*options.max_duration, spec); !status.ok()) {
      return status;
    }
  }
  if (options.resume_from) {
    // An empty id would read as "no resume" and start a fresh job instead.
    if (absl::StripAsciiWhitespace(*options.resume_from).empty()) {
      return absl::InvalidArgumentError("--resume-from is empty; give the id of the job to resume");
    }
    spec.set_resume_from(*options.resume_from);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<v1::JobSpec> BuildJobSpec(const SubmitOptions& options) {
  v1::JobSpec spec;
  if (options.model) spec.set_model(*options.model);
  if (options.dataset) spec.set_dataset(*options.dataset);
  SetOptimization(options, spec);
  SetEval(options, spec);
  SetGradScaler(options, spec);
  SetFp8(options, spec);
  if (absl::Status status = SetRun(options, spec); !status.ok()) return status;
  if (absl::Status status = SetDataParallel(options, spec); !status.ok()) return status;
  if (absl::Status status =
          AddOptions("model-option", options.model_options, spec.mutable_model_options());
      !status.ok()) {
    return status;
  }
  if (absl::Status status =
          AddOptions("dataset-option", options.dataset_options, spec.mutable_dataset_options());
      !status.ok()) {
    return status;
  }
  return spec;
}

void DefineWorkloadFlags(ArgParser& parser, SubmitOptions& o) {
  parser.AddString("model", &o.model, "model to train, e.g. mlp", "NAME");
  parser.AddRepeated("model-option", &o.model_options, "model option; repeatable", "KEY=VALUE");
  parser.AddString("dataset", &o.dataset, "dataset, e.g. synthetic or fashion-mnist", "NAME");
  parser.AddRepeated("dataset-option", &o.dataset_options, "dataset option; repeatable",
                     "KEY=VALUE");
}

namespace {

// How long, and how the optimizer steps.
void DefineOptimizationFlags(ArgParser& parser, SubmitOptions& o) {
  parser.AddInt("steps", &o.steps, "train for N steps (give --steps or --epochs, not both)");
  parser.AddInt("epochs", &o.epochs, "train for N epochs (default 1 epoch)");
  parser.AddInt("batch-size", &o.batch_size, "training batch size (default 64)");
  parser.AddString("optimizer", &o.optimizer, "sgd, adam or adamw (default adamw)", "NAME");
  parser.AddDouble("lr", &o.lr, "learning rate (default 1e-3)");
  parser.AddString("lr-schedule", &o.lr_schedule,
                   "constant, or cosine: linear warmup then cosine decay (default constant)",
                   "NAME");
  parser.AddInt("warmup-steps", &o.warmup_steps, "cosine schedule warmup steps (default 0)");
  parser.AddDouble("min-lr", &o.min_lr, "cosine schedule final learning rate (default 0)");
  parser.AddDouble("weight-decay", &o.weight_decay, "weight decay (default 0; adamw 0.01)");
  parser.AddDouble("momentum", &o.momentum, "SGD momentum (default 0)");
  parser.AddBool("nesterov", &o.nesterov, "SGD with Nesterov momentum (needs --momentum > 0)");
  parser.AddDouble("eps", &o.eps, "Adam/AdamW epsilon (default 1e-8)");
  parser.AddDouble("gradient-clip-norm", &o.gradient_clip_norm,
                   "clip the unscaled gradients' total L2 norm (default: no clipping)");
  parser.AddInt("accumulate-grad-batches", &o.accumulate_grad_batches,
                "sum the gradients of N batches per optimizer step (default 1)");
}

// The loss scaler, the FP8 recipe and CUDA graphs: what the precision runs as.
void DefineNumericsFlags(ArgParser& parser, SubmitOptions& o) {
  parser.AddBool("grad-scaler-enabled", &o.grad_scaler_enabled,
                 "scale the loss (default: 16-mixed only); =false turns it off");
  parser.AddDouble("grad-scaler-init-scale", &o.grad_scaler_init_scale,
                   "the grad scaler's initial scale (default 65536)");
  parser.AddDouble("grad-scaler-growth-factor", &o.grad_scaler_growth_factor,
                   "scale multiplier after growth-interval clean steps (default 2)");
  parser.AddDouble("grad-scaler-backoff-factor", &o.grad_scaler_backoff_factor,
                   "scale multiplier after an inf/NaN step (default 0.5)");
  parser.AddInt("grad-scaler-growth-interval", &o.grad_scaler_growth_interval,
                "clean steps before the scale grows (default 2000)");
  parser.AddString("fp8-format", &o.fp8_format,
                   "transformer-engine: HYBRID (E4M3 forward, E5M2 gradients; default) or E4M3",
                   "FORMAT");
  parser.AddInt("fp8-amax-history-len", &o.fp8_amax_history_len,
                "transformer-engine: steps of amax history per tensor (default 1024)");
  parser.AddString("fp8-amax-compute-algo", &o.fp8_amax_compute_algo,
                   "transformer-engine: max (default) or most_recent", "ALGO");
  parser.AddInt("fp8-margin", &o.fp8_margin,
                "transformer-engine: scale = (fp8_max / amax) / 2^margin (default 0)");
  parser.AddBool("cuda-graph", &o.cuda_graph,
                 "CUDA only: capture the training step as a CUDA graph and replay it");
  parser.AddString("bf16-update", &o.bf16_update,
                   "bf16-true and 16-true: how updates round into the half weights: nearest "
                   "(default), stochastic or kahan",
                   "MODE");
}

// Progress, evaluation, checkpoints and limits.
void DefineRunFlags(ArgParser& parser, SubmitOptions& o) {
  parser.AddInt("memory-baseline-steps", &o.memory_baseline_steps,
                "fp32 steps run first as the memory baseline (default 2, 0 = off)");
  parser.AddUint("seed", &o.seed, "random seed");
  parser.AddString("name", &o.name, "label shown by 'mantissa list'", "TEXT");
  parser.AddInt("progress-every-n-steps", &o.progress_every_n_steps,
                "report progress every N steps (default 10)");
  parser.AddInt("eval-every-n-steps", &o.eval_every_n_steps,
                "evaluate every N steps (default: only at the end)");
  parser.AddInt("eval-max-batches", &o.eval_max_batches,
                "evaluate on at most N batches (default: the whole test split)");
  parser.AddInt("eval-batch-size", &o.eval_batch_size,
                "evaluation batch size (default: the training batch size)");
  parser.AddBool("no-eval", &o.no_eval, "skip evaluation");
  parser.AddInt("checkpoint-every", &o.checkpoint_every_n_steps,
                "write a checkpoint every N steps (default 0: only at the end)");
  parser.AddString("max-duration", &o.max_duration,
                   "stop the job FAILED after this long, e.g. 90s, 30m, 2h (default and cap: "
                   "the daemon's --max_job_duration)",
                   "DURATION");
  parser.AddInt("keep-checkpoints", &o.keep_checkpoints,
                "checkpoints kept on disk, newest first (default 1; the daemon caps it)");
}

// Data parallelism, as Fabric(devices=, num_nodes=).
void DefineDataParallelFlags(ArgParser& parser, SubmitOptions& o) {
  parser.AddInt("devices", &o.devices,
                "data-parallel ranks per node, each on --batch-size items (default 1)");
  parser.AddInt("num-nodes", &o.num_nodes,
                "workers that train the job together (default 1; needs the PostgreSQL store)");
}

}  // namespace

void DefineTrainingFlags(ArgParser& parser, SubmitOptions& o) {
  DefineOptimizationFlags(parser, o);
  DefineNumericsFlags(parser, o);
  DefineRunFlags(parser, o);
  DefineDataParallelFlags(parser, o);
}

}  // namespace mantissa::cli
