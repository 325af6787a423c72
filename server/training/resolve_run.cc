// The job's size and run settings: steps or epochs, batches, progress,
// accumulation, checkpoints, evaluation, limits and duration.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/training/job_spec_sections.h"
#include "server/training/spec_checks.h"

namespace mantissa {
namespace {

constexpr int64_t kMaxBatchSize = 1 << 20;
constexpr int64_t kMaxAccumulateGradBatches = 1 << 16;

absl::Status CheckOptions(absl::string_view field,
                          const google::protobuf::Map<std::string, std::string>& options,
                          const SpecLimits& limits) {
  if (static_cast<int64_t>(options.size()) > limits.max_options) {
    return Invalid(field,
                   absl::StrCat("at most ", limits.max_options, " options, got ", options.size()));
  }
  for (const auto& [key, value] : options) {
    if (static_cast<int64_t>(key.size()) > limits.max_option_bytes) {
      return Invalid(field, absl::StrCat("option keys must be at most ", limits.max_option_bytes,
                                         " bytes, got one of ", key.size()));
    }
    if (static_cast<int64_t>(value.size()) > limits.max_option_bytes) {
      return Invalid(
          absl::StrCat(field, ".", key),
          absl::StrCat("must be at most ", limits.max_option_bytes, " bytes, got ", value.size()));
    }
  }
  return absl::OkStatus();
}

// String fields are bounded before anything quotes them in a message.
absl::Status CheckLengths(const v1::JobSpec& spec, const SpecLimits& limits) {
  const int64_t max = limits.max_name_bytes;
  RETURN_IF_ERROR(CheckLength("name", spec.name(), max));
  RETURN_IF_ERROR(CheckLength("resume_from", spec.resume_from(), max));
  RETURN_IF_ERROR(CheckLength("model", spec.model(), max));
  RETURN_IF_ERROR(CheckLength("dataset", spec.dataset(), max));
  RETURN_IF_ERROR(CheckLength("precision", spec.precision(), max));
  RETURN_IF_ERROR(CheckLength("optimizer", spec.optimizer(), max));
  RETURN_IF_ERROR(CheckLength("lr_schedule", spec.lr_schedule(), max));
  RETURN_IF_ERROR(CheckLength("fp8.fp8_format", spec.fp8().fp8_format(), max));
  RETURN_IF_ERROR(CheckLength("fp8.amax_compute_algo", spec.fp8().amax_compute_algo(), max));
  RETURN_IF_ERROR(CheckOptions("model_options", spec.model_options(), limits));
  RETURN_IF_ERROR(CheckOptions("dataset_options", spec.dataset_options(), limits));
  return absl::OkStatus();
}

// Steps and epochs against --max_job_steps, and steps x accumulation against
// int64. An epoch is at least one batch; the trainer checks the exact count
// of an epochs spec once the dataset's size is known.
absl::Status CheckWork(const v1::JobSpec& spec, const SpecLimits& limits) {
  if (spec.has_steps() && spec.steps() > limits.max_job_steps) {
    return Invalid("steps", absl::StrCat("must be <= ", limits.max_job_steps,
                                         " (--max_job_steps), got ", spec.steps()));
  }
  if (spec.has_epochs() && spec.epochs() > limits.max_job_steps) {
    return Invalid("epochs", absl::StrCat("must be <= ", limits.max_job_steps,
                                          " (--max_job_steps; every epoch is at least one "
                                          "step), got ",
                                          spec.epochs()));
  }
  if (spec.has_steps() && !CheckedMul(spec.steps(), spec.accumulate_grad_batches())) {
    return Invalid("steps", absl::StrCat("steps (", spec.steps(), ") x accumulate_grad_batches (",
                                         spec.accumulate_grad_batches(), ") overflows int64"));
  }
  const v1::EvalSettings& eval = spec.eval();
  if (eval.batch_size() > kMaxBatchSize) {
    return Invalid("eval.batch_size",
                   absl::StrCat("must be <= ", kMaxBatchSize, ", got ", eval.batch_size()));
  }
  if (!CheckedMul(eval.max_batches(), eval.batch_size())) {
    return Invalid("eval.max_batches",
                   absl::StrCat("eval.max_batches (", eval.max_batches(), ") x eval.batch_size (",
                                eval.batch_size(), ") overflows int64"));
  }
  return absl::OkStatus();
}

// Unset: the daemon's --max_job_duration; set: positive and within it.
absl::Status ResolveMaxDuration(v1::JobSpec& spec, const SpecLimits& limits) {
  const bool capped = limits.max_job_duration > absl::ZeroDuration() &&
                      limits.max_job_duration < absl::InfiniteDuration();
  if (!spec.has_max_duration()) {
    if (capped) {
      const int64_t nanos = absl::ToInt64Nanoseconds(limits.max_job_duration);
      spec.mutable_max_duration()->set_seconds(nanos / 1'000'000'000);
      spec.mutable_max_duration()->set_nanos(static_cast<int32_t>(nanos % 1'000'000'000));
    }
    return absl::OkStatus();
  }
  const google::protobuf::Duration& d = spec.max_duration();
  if (d.seconds() < 0 || d.nanos() < 0 || d.nanos() >= 1'000'000'000 ||
      (d.seconds() == 0 && d.nanos() == 0) || d.seconds() > 315'576'000'000) {
    return Invalid("max_duration", absl::StrCat("must be a positive duration, got ", d.seconds(),
                                                "s ", d.nanos(), "ns"));
  }
  const absl::Duration asked = absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
  if (capped && asked > limits.max_job_duration) {
    return Invalid("max_duration",
                   absl::StrCat("must be <= ", absl::FormatDuration(limits.max_job_duration),
                                " (--max_job_duration), got ", absl::FormatDuration(asked)));
  }
  return absl::OkStatus();
}

absl::Status ResolveKeepCheckpoints(v1::JobSpec& spec, const SpecLimits& limits) {
  if (!spec.has_keep_checkpoints()) {
    spec.set_keep_checkpoints(1);
    return absl::OkStatus();
  }
  if (spec.keep_checkpoints() < 1 || spec.keep_checkpoints() > limits.max_keep_checkpoints) {
    return Invalid("keep_checkpoints",
                   absl::StrCat("must be in [1, ", limits.max_keep_checkpoints,
                                "] (--keep_checkpoints), got ", spec.keep_checkpoints()));
  }
  return absl::OkStatus();
}

// Attempts: a job whose workers keep dying must end, and a typo must not
// retry it forever.
constexpr int32_t kMaxAttempts = 100;

absl::Status ResolveMaxAttempts(v1::JobSpec& spec) {
  if (!spec.has_max_attempts()) spec.set_max_attempts(3);
  if (spec.max_attempts() < 1 || spec.max_attempts() > kMaxAttempts) {
    return Invalid("max_attempts",
                   absl::StrCat("must be in [1, ", kMaxAttempts, "], got ", spec.max_attempts()));
  }
  return absl::OkStatus();
}

// Progress, accumulation, checkpoints and the CUDA graph.
absl::Status ResolveStepSettings(v1::JobSpec& spec) {
  if (!spec.has_progress_every_n_steps()) {
    spec.set_progress_every_n_steps(kDefaultProgressEveryNSteps);
  }
  RETURN_IF_ERROR(RequirePositive("progress_every_n_steps", spec.progress_every_n_steps()));
  if (!spec.has_accumulate_grad_batches()) spec.set_accumulate_grad_batches(1);
  RETURN_IF_ERROR(RequirePositive("accumulate_grad_batches", spec.accumulate_grad_batches()));
  if (spec.accumulate_grad_batches() > kMaxAccumulateGradBatches) {
    return Invalid("accumulate_grad_batches",
                   absl::StrCat("must be <= ", kMaxAccumulateGradBatches, ", got ",
                                spec.accumulate_grad_batches()));
  }
  if (!spec.has_checkpoint_every_n_steps()) spec.set_checkpoint_every_n_steps(0);
  // Whether the device and job allow a graph is decided by the trainer, which
  // warns and trains eagerly where they do not.
  if (!spec.has_cuda_graph()) spec.set_cuda_graph(false);
  return RequireNonNegative("checkpoint_every_n_steps", spec.checkpoint_every_n_steps());
}

constexpr int32_t kMaxNodes = 64;

// Data parallelism: ranks per node within what this worker can run, and
// nodes. Whether this worker's job store can gang-schedule nodes is the job
// manager's to say.
absl::Status ResolveWorld(v1::JobSpec& spec, const ResolveContext& context) {
  if (!spec.has_devices()) spec.set_devices(1);
  if (!spec.has_num_nodes()) spec.set_num_nodes(1);
  const int max = std::max(1, context.max_devices);
  if (spec.devices() < 1 || spec.devices() > max) {
    const std::string why = context.caps.is_cuda()
                                ? absl::StrCat(max, " GPU", max == 1 ? "" : "s", " visible")
                                : absl::StrCat("one rank per hardware thread, at least 2");
    return Invalid("devices", absl::StrCat("must be in [1, ", max, "] on this worker (", why,
                                           "), got ", spec.devices()));
  }
  if (spec.num_nodes() < 1 || spec.num_nodes() > kMaxNodes) {
    return Invalid("num_nodes",
                   absl::StrCat("must be in [1, ", kMaxNodes, "], got ", spec.num_nodes()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ResolveWork(const ResolveContext& context, ResolvedJob& job) {
  v1::JobSpec& spec = job.spec;
  RETURN_IF_ERROR(CheckLengths(spec, context.limits));
  if (spec.has_steps() && spec.has_epochs()) {
    return Invalid("steps", "set either steps or epochs, not both");
  }
  if (spec.has_steps()) RETURN_IF_ERROR(RequirePositive("steps", spec.steps()));
  if (spec.has_epochs()) RETURN_IF_ERROR(RequirePositive("epochs", spec.epochs()));
  if (!spec.has_steps() && !spec.has_epochs()) spec.set_epochs(1);

  if (!spec.has_batch_size()) spec.set_batch_size(kDefaultBatchSize);
  RETURN_IF_ERROR(RequirePositive("batch_size", spec.batch_size()));
  if (spec.batch_size() > kMaxBatchSize) {
    return Invalid("batch_size",
                   absl::StrCat("must be <= ", kMaxBatchSize, ", got ", spec.batch_size()));
  }
  return absl::OkStatus();
}

absl::Status ResolveRunSettings(const ResolveContext& context, ResolvedJob& job) {
  v1::JobSpec& spec = job.spec;
  if (!spec.has_memory_baseline_steps()) {
    spec.set_memory_baseline_steps(kDefaultMemoryBaselineSteps);
  }
  if (spec.memory_baseline_steps() < 0 || spec.memory_baseline_steps() > 100) {
    return Invalid("memory_baseline_steps",
                   absl::StrCat("must be in [0, 100], got ", spec.memory_baseline_steps()));
  }
  RETURN_IF_ERROR(ResolveStepSettings(spec));
  RETURN_IF_ERROR(RequireNonNegative("eval.every_n_steps", spec.eval().every_n_steps()));
  RETURN_IF_ERROR(RequireNonNegative("eval.max_batches", spec.eval().max_batches()));
  RETURN_IF_ERROR(RequireNonNegative("eval.batch_size", spec.eval().batch_size()));
  if (spec.eval().batch_size() == 0) spec.mutable_eval()->set_batch_size(spec.batch_size());
  RETURN_IF_ERROR(CheckWork(spec, context.limits));
  RETURN_IF_ERROR(ResolveMaxDuration(spec, context.limits));
  RETURN_IF_ERROR(ResolveMaxAttempts(spec));
  RETURN_IF_ERROR(ResolveWorld(spec, context));
  return ResolveKeepCheckpoints(spec, context.limits);
}

void WarnOfSharedDevice(const ResolveContext& context, ResolvedJob& job) {
  if (context.max_concurrent_jobs > 1 && job.spec.memory_baseline_steps() > 0) {
    job.warnings.push_back(
        absl::StrCat("memory figures are approximate: up to ", context.max_concurrent_jobs,
                     " jobs share the device and its allocator counters (--max_concurrent_jobs)"));
  }
}

}  // namespace mantissa
