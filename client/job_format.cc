#include "client/job_format.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "client/attempt_format.h"
#include "client/detail_list.h"
#include "client/table_printer.h"

namespace mantissa::cli {
namespace {

std::string FormatNumber(double value) { return absl::StrFormat("%g", value); }

std::string OrDash(const std::string& text) { return text.empty() ? "-" : text; }

std::string WithOptions(const std::string& name,
                        const google::protobuf::Map<std::string, std::string>& options) {
  if (options.empty()) return OrDash(name);
  return absl::StrCat(OrDash(name), " (", FormatOptions(options), ")");
}

std::string FormatPrecisionLine(const v1::Job& job) {
  const std::string& requested = job.spec().precision();
  const std::string& effective = job.effective_precision();
  if (effective.empty()) return requested.empty() ? "32-true" : requested;
  if (requested.empty() || requested == effective) return effective;
  return absl::StrCat(requested, " (effective ", effective, ")");
}

std::string FormatEvalSettings(const v1::EvalSettings& eval) {
  if (eval.disabled()) return "disabled";
  std::vector<std::string> parts;
  parts.push_back(eval.every_n_steps() > 0 ? absl::StrCat("every ", eval.every_n_steps(), " steps")
                                           : "at the end");
  if (eval.max_batches() > 0)
    parts.push_back(absl::StrCat("at most ", eval.max_batches(), " batches"));
  if (eval.batch_size() > 0) parts.push_back(absl::StrCat("batch size ", eval.batch_size()));
  return absl::StrJoin(parts, ", ");
}

std::string FormatProgressSummary(const v1::Progress& progress) {
  std::vector<std::string> parts;
  std::string step = absl::StrCat("step ", FormatStepCount(progress));
  if (progress.total_steps() > 0) {
    absl::StrAppendFormat(&step, " (%.1f%%)",
                          100.0 * static_cast<double>(progress.step()) / progress.total_steps());
  }
  parts.push_back(std::move(step));
  for (std::string& detail : ProgressDetails(progress)) parts.push_back(std::move(detail));
  return absl::StrJoin(parts, ", ");
}

bool HasResult(const v1::Job& job) {
  const v1::JobResult& result = job.result();
  return job.state() == v1::SUCCEEDED || result.steps_completed() > 0 ||
         result.has_eval_accuracy() || result.has_eval_loss() || result.has_eval_perplexity() ||
         result.train_seconds() > 0;
}

std::string FormatResult(const v1::JobResult& result) {
  std::vector<std::string> parts;
  parts.push_back(absl::StrCat("final loss ", FormatLoss(result.final_loss())));
  for (std::string& detail : EvalDetails(result, "eval ")) parts.push_back(std::move(detail));
  parts.push_back(
      absl::StrCat(result.steps_completed(), " steps in ", FormatDuration(result.train_seconds())));
  return absl::StrJoin(parts, ", ");
}

bool IsSet(const google::protobuf::Timestamp& timestamp) {
  return timestamp.seconds() != 0 || timestamp.nanos() != 0;
}

std::string FormatGradScaler(const v1::PrecisionStats& stats) {
  if (!stats.grad_scaler_enabled()) return "disabled";
  std::vector<std::string> parts = {"enabled", absl::StrCat("scale ", FormatScale(stats.scale()))};
  if (stats.optimizer_steps() > 0) {
    parts.push_back(absl::StrCat(FormatCount(stats.skipped_steps()), " of ",
                                 FormatCount(stats.optimizer_steps()),
                                 stats.optimizer_steps() == 1 ? " step" : " steps", " skipped"));
  }
  return absl::StrJoin(parts, ", ");
}

// Only the settings present in the spec.
std::string FormatGradScalerSettings(const v1::GradScalerSettings& settings) {
  std::vector<std::string> parts;
  if (settings.has_init_scale()) {
    parts.push_back(absl::StrCat("init scale ", FormatScale(settings.init_scale())));
  }
  if (settings.has_growth_factor()) {
    parts.push_back(absl::StrCat("growth factor ", FormatNumber(settings.growth_factor())));
  }
  if (settings.has_backoff_factor()) {
    parts.push_back(absl::StrCat("backoff factor ", FormatNumber(settings.backoff_factor())));
  }
  if (settings.has_growth_interval()) {
    parts.push_back(absl::StrCat("growth interval ", settings.growth_interval()));
  }
  return absl::StrJoin(parts, ", ");
}

// The source on the first line, then a label/value table with the byte
// counts right-aligned so that their units line up. Empty without numbers.
// The daemon fills every field of an accepted recipe; one it has not
// resolved yet shows only what was given.
std::string FormatFp8Recipe(const v1::Fp8Recipe& recipe) {
  std::vector<std::string> parts;
  if (!recipe.fp8_format().empty()) parts.push_back(recipe.fp8_format());
  if (recipe.has_amax_history_len()) {
    parts.push_back(absl::StrCat("amax history ", recipe.amax_history_len()));
  }
  if (!recipe.amax_compute_algo().empty()) {
    parts.push_back(absl::StrCat("amax ", recipe.amax_compute_algo()));
  }
  if (recipe.has_margin()) parts.push_back(absl::StrCat("margin ", recipe.margin()));
  return parts.empty() ? "-" : absl::StrJoin(parts, ", ");
}

std::string FormatMemory(const v1::MemoryStats& memory) {
  std::vector<std::pair<std::string, std::string>> rows;
  if (memory.peak_bytes() > 0) rows.emplace_back("Peak", FormatBytes(memory.peak_bytes()));
  if (memory.baseline_fp32_peak_bytes() > 0) {
    rows.emplace_back("FP32 baseline peak", FormatBytes(memory.baseline_fp32_peak_bytes()));
  }
  if (memory.has_savings_ratio())
    rows.emplace_back("Savings", FormatSavings(memory.savings_ratio()));
  // Zero gradient or optimizer bytes are real values (plain SGD keeps no
  // state) once the breakdown was measured at all.
  if (memory.parameter_bytes() > 0) {
    rows.emplace_back("Parameters", FormatBytes(memory.parameter_bytes()));
    rows.emplace_back("Gradients", FormatBytes(memory.gradient_bytes()));
    rows.emplace_back("Optimizer state", FormatBytes(memory.optimizer_state_bytes()));
  }
  if (rows.empty()) return "";

  std::vector<std::string> lines;
  std::string head = memory.source();
  if (!memory.exact() && memory.peak_bytes() > 0) {
    absl::StrAppend(&head, head.empty() ? "" : " ",
                    "(approximate: other jobs ran at the same time)");
  }
  if (!head.empty()) lines.push_back(std::move(head));
  size_t label_width = 0;
  size_t value_width = 0;
  for (const auto& [label, value] : rows) {
    label_width = std::max(label_width, label.size());
    value_width = std::max(value_width, value.size());
  }
  for (const auto& [label, value] : rows) {
    lines.push_back(absl::StrCat(label, std::string(label_width - label.size() + 2, ' '),
                                 std::string(value_width - value.size(), ' '), value));
  }
  return absl::StrJoin(lines, "\n");
}

// "job j1 at step 400"; the step is known once the daemon has read the
// checkpoint.
std::string FormatResumedFrom(const v1::Job& job) {
  std::string out = absl::StrCat("job ", job.spec().resume_from());
  if (job.start_step() > 0) absl::StrAppend(&out, " at step ", job.start_step());
  return out;
}

// How a job that ended unfinished can go on, if it can.
std::string ResumeHint(const v1::Job& job) {
  if (!job.has_checkpoint()) return "";
  return absl::StrCat(" (checkpoint at step ", job.checkpoint().step(),
                      ": resume with 'mantissa resume ", job.id(), "')");
}

std::string IndentLines(const std::string& text, absl::string_view indent) {
  std::string out;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    absl::StrAppend(&out, indent, line, "\n");
  }
  return out;
}

// Shown in `list`: the final loss once there is one, else the latest.
std::string ListLoss(const v1::Job& job) {
  if (job.state() == v1::SUCCEEDED) return FormatLoss(job.result().final_loss());
  if (job.progress().step() > 0) return FormatLoss(job.progress().loss());
  return "-";
}

}  // namespace

std::vector<std::string> ProgressDetails(const v1::Progress& progress) {
  std::vector<std::string> parts;
  if (progress.epoch() > 0) {
    parts.push_back(progress.total_epochs() > 0
                        ? absl::StrCat("epoch ", progress.epoch(), "/", progress.total_epochs())
                        : absl::StrCat("epoch ", progress.epoch()));
  }
  if (progress.step() > 0) parts.push_back(absl::StrCat("loss ", FormatLoss(progress.loss())));
  if (progress.items_per_second() > 0) {
    parts.push_back(absl::StrFormat("%.0f items/s", progress.items_per_second()));
  }
  return parts;
}

std::string FormatBytes(int64_t bytes) {
  // Negate in unsigned arithmetic so that INT64_MIN does not overflow.
  const uint64_t magnitude = bytes < 0 ? 0 - static_cast<uint64_t>(bytes) : bytes;
  const char* sign = bytes < 0 ? "-" : "";
  if (magnitude < 1024) return absl::StrCat(sign, magnitude, " B");
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double value = static_cast<double>(magnitude) / 1024;
  size_t unit = 0;
  // 1023.995 and up would print as "1024.00"; say "1.00" of the next unit.
  while (value >= 1023.995 && unit + 1 < std::size(kUnits)) {
    value /= 1024;
    ++unit;
  }
  return absl::StrFormat("%s%.2f %s", sign, value, kUnits[unit]);
}

std::string FormatSavings(double ratio) {
  double percent = 100.0 * ratio;
  // Keep a tiny loss from printing as "-0.0%".
  if (std::fabs(percent) < 0.05) percent = 0;
  return absl::StrFormat("%.1f%%", percent);
}

std::string FormatScale(double scale) {
  // Scales are powers of two; print them whole while they are exact.
  if (scale >= 1 && scale < 1e15 && scale == std::floor(scale)) {
    return absl::StrFormat("%.0f", scale);
  }
  return absl::StrFormat("%g", scale);
}

std::vector<std::string> GradScalerDetails(const v1::Job& job) {
  const v1::PrecisionStats& stats = job.precision_stats();
  if (!stats.grad_scaler_enabled()) return {};
  return {absl::StrCat("scale ", FormatScale(stats.scale())),
          absl::StrCat("skipped ", stats.skipped_steps())};
}

std::string FormatGradNorm(double norm) { return absl::StrFormat("%.3g", norm); }

std::vector<std::string> GradNormDetails(const v1::Progress& progress) {
  if (!progress.has_grad_norm()) return {};
  return {absl::StrCat("grad norm ", FormatGradNorm(progress.grad_norm()))};
}

std::string FormatGradNormLine(const v1::Progress& progress) {
  if (!progress.has_grad_norm()) return "";
  std::string out = FormatGradNorm(progress.grad_norm());
  if (progress.has_max_grad_norm()) {
    absl::StrAppend(&out, " (largest in the last interval ",
                    FormatGradNorm(progress.max_grad_norm()), ")");
  }
  return out;
}

namespace {

// "step 14: epoch 1, batch 13, items 832-895"; an accumulating step names
// its batches "batches 12-15".
std::string NonFinitePosition(const v1::NonFiniteStep& step) {
  std::vector<std::string> parts = {absl::StrCat("epoch ", step.epoch())};
  parts.push_back(step.batches() > 1 ? absl::StrCat("batches ", step.batch(), "-",
                                                    step.batch() + step.batches() - 1)
                                     : absl::StrCat("batch ", step.batch()));
  if (step.items() == 1) parts.push_back(absl::StrCat("item ", step.first_item()));
  if (step.items() > 1) {
    parts.push_back(
        absl::StrCat("items ", step.first_item(), "-", step.first_item() + step.items() - 1));
  }
  return absl::StrCat("step ", step.step(), ": ", absl::StrJoin(parts, ", "));
}

// The parameters are in backward order: the first is where it started.
std::string NonFiniteGradients(const v1::NonFiniteStep& step) {
  const int64_t count = std::max<int64_t>(step.non_finite_parameters(), step.parameters_size());
  if (count == 0) return "gradients finite";
  if (step.parameters().empty()) {
    return absl::StrCat("non-finite gradients in ", count,
                        count == 1 ? " parameter" : " parameters");
  }
  std::string out = absl::StrCat("non-finite gradients: ", absl::StrJoin(step.parameters(), ", "));
  if (count > step.parameters_size()) {
    absl::StrAppend(&out, ", +", count - step.parameters_size(), " more");
  }
  return out;
}

}  // namespace

std::string FormatNonFiniteStep(const v1::NonFiniteStep& step) {
  std::vector<std::string> lines = {
      NonFinitePosition(step), step.loss_non_finite() ? "loss not finite" : "loss finite",
      NonFiniteGradients(step),
      step.skipped() ? "skipped by the grad scaler" : "not skipped (no grad scaler)"};
  if (step.steps_in_interval() == 1) {
    lines.push_back("the only non-finite step in its progress interval");
  } else if (step.steps_in_interval() > 1) {
    lines.push_back(absl::StrCat("first of ", step.steps_in_interval(),
                                 " non-finite steps in its progress interval"));
  }
  return absl::StrJoin(lines, "\n");
}

std::string FormatUpdateRounding(const v1::Job& job) {
  const std::string& reported = job.precision_stats().bf16_update();
  const std::string& rounding = reported.empty() ? job.spec().bf16_update() : reported;
  const std::string precision = EffectivePrecision(job);
  const bool true_half = precision == "bf16-true" || precision == "16-true";
  // Other precisions run "nearest" by definition: saying so is noise.
  if (rounding.empty() || (!true_half && rounding == "nearest")) return "";
  const int64_t compensation = job.memory().compensation_bytes();
  if (compensation <= 0) return rounding;
  return absl::StrCat(rounding, " (compensation ", FormatBytes(compensation), ")");
}

std::string SkippedStepsCell(const v1::Job& job) {
  if (!job.precision_stats().grad_scaler_enabled()) return "-";
  return FormatCount(job.precision_stats().skipped_steps());
}

std::string SavingsCell(const v1::Job& job) {
  if (!job.memory().has_savings_ratio()) return "-";
  return FormatSavings(job.memory().savings_ratio());
}

std::string JobStateName(v1::JobState state) {
  const std::string& name = v1::JobState_Name(state);
  return name.empty() ? absl::StrCat("STATE_", static_cast<int>(state)) : name;
}

absl::StatusOr<v1::JobState> ParseJobState(absl::string_view name) {
  v1::JobState state;
  if (!v1::JobState_Parse(absl::AsciiStrToUpper(name), &state) ||
      state == v1::JOB_STATE_UNSPECIFIED) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown job state '", name,
                     "' (expected QUEUED, RUNNING, SUCCEEDED, FAILED or CANCELLED)"));
  }
  return state;
}

bool IsTerminalState(v1::JobState state) {
  return state == v1::SUCCEEDED || state == v1::FAILED || state == v1::CANCELLED;
}

std::string FormatTimestamp(const google::protobuf::Timestamp& timestamp, absl::TimeZone zone) {
  if (!IsSet(timestamp)) return "-";
  const absl::Time time =
      absl::FromUnixSeconds(timestamp.seconds()) + absl::Nanoseconds(timestamp.nanos());
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", time, zone);
}

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "-";
  if (seconds < 10) return absl::StrFormat("%.1fs", seconds);
  const int64_t total = static_cast<int64_t>(std::llround(seconds));
  const int64_t hours = total / 3600;
  const int64_t minutes = total / 60 % 60;
  const int64_t secs = total % 60;
  if (hours > 0) return absl::StrFormat("%dh%02dm%02ds", hours, minutes, secs);
  if (minutes > 0) return absl::StrFormat("%dm%02ds", minutes, secs);
  return absl::StrFormat("%ds", secs);
}

std::string FormatLoss(double loss) {
  // Four decimals hide very small losses entirely; switch to exponent form.
  if (loss != 0 && std::fabs(loss) < 1e-3) return absl::StrFormat("%.3e", loss);
  return absl::StrFormat("%.4f", loss);
}

std::string FormatAccuracy(double fraction) { return absl::StrFormat("%.2f%%", 100.0 * fraction); }

std::vector<std::string> EvalDetails(const v1::JobResult& result, absl::string_view prefix) {
  std::vector<std::string> parts;
  if (result.has_eval_accuracy()) {
    parts.push_back(absl::StrCat(prefix, "accuracy ", FormatAccuracy(result.eval_accuracy())));
  }
  if (result.has_eval_loss()) {
    parts.push_back(absl::StrCat(prefix, "loss ", FormatLoss(result.eval_loss())));
  }
  if (result.has_eval_perplexity()) {
    parts.push_back(
        absl::StrCat(prefix, "perplexity ", FormatPerplexity(result.eval_perplexity())));
  }
  return parts;
}

std::string FormatPerplexity(double perplexity) { return absl::StrFormat("%.2f", perplexity); }

std::string FormatCheckpoint(const v1::Checkpoint& checkpoint) {
  std::string out = absl::StrCat("step ", checkpoint.step());
  if (!checkpoint.path().empty()) absl::StrAppend(&out, ": ", checkpoint.path());
  if (checkpoint.bytes() > 0) absl::StrAppend(&out, " (", FormatBytes(checkpoint.bytes()), ")");
  return out;
}

std::string FormatCount(int64_t count) {
  // Negate in unsigned arithmetic so that INT64_MIN does not overflow.
  const uint64_t magnitude = count < 0 ? 0 - static_cast<uint64_t>(count) : count;
  const std::string digits = absl::StrCat(magnitude);
  std::string out = count < 0 ? "-" : "";
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string FormatStepCount(const v1::Progress& progress) {
  if (progress.total_steps() <= 0) return absl::StrCat(progress.step());
  return absl::StrCat(progress.step(), "/", progress.total_steps());
}

std::string FormatOptions(const google::protobuf::Map<std::string, std::string>& options) {
  std::vector<std::pair<std::string, std::string>> sorted(options.begin(), options.end());
  std::sort(sorted.begin(), sorted.end());
  return absl::StrJoin(sorted, ", ", absl::PairFormatter("="));
}

std::string EffectivePrecision(const v1::Job& job) {
  if (!job.effective_precision().empty()) return job.effective_precision();
  return OrDash(job.spec().precision());
}

std::string FormatPrecisionSection(const v1::Job& job) {
  DetailList details;
  if (job.has_precision_stats()) {
    const v1::PrecisionStats& stats = job.precision_stats();
    if (!stats.parameter_dtype().empty()) details.Add("Parameter dtype", stats.parameter_dtype());
    if (!stats.compute_dtype().empty()) details.Add("Compute dtype", stats.compute_dtype());
  }
  if (std::string rounding = FormatUpdateRounding(job); !rounding.empty()) {
    details.Add("Update rounding", std::move(rounding));
  }
  if (job.has_precision_stats()) {
    const v1::PrecisionStats& stats = job.precision_stats();
    details.Add("Grad scaler", FormatGradScaler(stats));
    const std::string settings = FormatGradScalerSettings(job.spec().grad_scaler());
    if (stats.grad_scaler_enabled() && !settings.empty()) details.Add("Scaler settings", settings);
    if (stats.has_last_non_finite()) {
      details.Add("Last non-finite step", FormatNonFiniteStep(stats.last_non_finite()));
    }
  }
  if (job.spec().has_fp8()) details.Add("FP8 recipe", FormatFp8Recipe(job.spec().fp8()));
  if (std::string memory = FormatMemory(job.memory()); !memory.empty()) {
    details.Add("Memory", std::move(memory));
  }
  const std::string rendered = details.Render();
  if (rendered.empty()) return "";
  return absl::StrCat("Precision\n", IndentLines(rendered, "  "));
}

namespace {

// The optimizer and what it was given: learning rate and schedule, decay,
// momentum, epsilon, clipping.
void AddOptimizerDetails(const v1::JobSpec& spec, DetailList& details) {
  details.Add("Optimizer", OrDash(spec.optimizer()));
  if (spec.has_lr()) {
    std::string lr = FormatNumber(spec.lr());
    if (spec.lr_schedule() == "cosine") {
      absl::StrAppend(&lr, ", cosine to ", FormatNumber(spec.min_lr()), " after ",
                      spec.warmup_steps(), " warmup steps");
    }
    details.Add("Learning rate", lr);
  }
  if (spec.has_weight_decay()) details.Add("Weight decay", FormatNumber(spec.weight_decay()));
  if (spec.has_momentum() || spec.nesterov()) {
    details.Add("Momentum", spec.nesterov()
                                ? absl::StrCat(FormatNumber(spec.momentum()), ", Nesterov")
                                : FormatNumber(spec.momentum()));
  }
  if (spec.has_eps()) details.Add("Epsilon", FormatNumber(spec.eps()));
  if (spec.has_gradient_clip_norm()) {
    details.Add("Gradient clip",
                absl::StrCat("total norm ", FormatNumber(spec.gradient_clip_norm())));
  }
}

// "1 node", "2 devices".
std::string Counted(int64_t count, absl::string_view noun) {
  return absl::StrCat(count, " ", noun, count == 1 ? "" : "s");
}

}  // namespace

std::string FormatRanks(const v1::Job& job) {
  const v1::JobSpec& spec = job.spec();
  const int64_t devices = spec.has_devices() ? spec.devices() : 1;
  const int64_t nodes = spec.has_num_nodes() ? spec.num_nodes() : 1;
  // Before the job starts the daemon has not set world_size: the spec says it.
  const int64_t world = job.world_size() > 0 ? job.world_size() : devices * nodes;
  if (world <= 1) return "";
  std::string out =
      absl::StrCat(world, " (", Counted(devices, "device"), " x ", Counted(nodes, "node"), ")");
  if (job.global_batch_size() > 0) {
    absl::StrAppend(&out, ", global batch ", FormatCount(job.global_batch_size()));
  }
  return out;
}

std::string FormatJob(const v1::Job& job, absl::TimeZone zone) {
  const v1::JobSpec& spec = job.spec();
  DetailList details;
  details.Add("ID", job.id());
  details.Add("Name", OrDash(spec.name()));
  if (!job.principal().empty()) details.Add("Principal", job.principal());
  details.Add("State", job.cancel_requested() && !IsTerminalState(job.state())
                           ? absl::StrCat(JobStateName(job.state()), " (cancel requested)")
                           : JobStateName(job.state()));
  if (std::string attempt = FormatAttempt(job); !attempt.empty()) {
    details.Add("Attempt", std::move(attempt));
  }
  if (!job.worker().empty()) details.Add("Worker", job.worker());
  details.Add("Model", WithOptions(spec.model(), spec.model_options()));
  details.Add("Dataset", WithOptions(spec.dataset(), spec.dataset_options()));
  details.Add("Precision", FormatPrecisionLine(job));
  if (spec.has_steps()) details.Add("Steps", absl::StrCat(spec.steps()));
  if (spec.has_epochs()) details.Add("Epochs", absl::StrCat(spec.epochs()));
  if (spec.has_batch_size()) details.Add("Batch size", absl::StrCat(spec.batch_size()));
  // One batch per step is the default; say nothing then.
  if (spec.accumulate_grad_batches() > 1) {
    details.Add("Accumulation",
                absl::StrCat(spec.accumulate_grad_batches(), " batches per optimizer step"));
  }
  if (std::string ranks = FormatRanks(job); !ranks.empty()) details.Add("Ranks", std::move(ranks));
  if (!job.nodes().empty()) details.Add("Nodes", absl::StrJoin(job.nodes(), ", "));
  if (spec.cuda_graph()) details.Add("CUDA graph", "requested");
  AddOptimizerDetails(spec, details);
  details.Add("Seed", absl::StrCat(spec.seed()));
  details.Add("Evaluation", FormatEvalSettings(spec.eval()));
  if (spec.has_checkpoint_every_n_steps()) {
    details.Add("Checkpointing",
                spec.checkpoint_every_n_steps() > 0
                    ? absl::StrCat("every ", spec.checkpoint_every_n_steps(), " steps")
                    : "at the end");
  }
  if (!spec.resume_from().empty()) {
    details.Add("Resumed from", FormatResumedFrom(job));
  } else if (job.start_step() > 0) {
    details.Add("Resumed from", absl::StrCat("step ", job.start_step()));
  }
  if (job.state() != v1::QUEUED || job.progress().step() > 0) {
    details.Add("Progress", FormatProgressSummary(job.progress()));
  }
  if (std::string norm = FormatGradNormLine(job.progress()); !norm.empty()) {
    details.Add("Gradient norm", std::move(norm));
  }
  if (HasResult(job)) details.Add("Result", FormatResult(job.result()));
  if (job.has_checkpoint()) {
    std::string checkpoint = FormatCheckpoint(job.checkpoint());
    if (IsSet(job.checkpoint().time())) {
      absl::StrAppend(&checkpoint, ", written ", FormatTimestamp(job.checkpoint().time(), zone));
    }
    details.Add("Checkpoint", std::move(checkpoint));
  }
  if (job.parameter_count() > 0) details.Add("Parameters", FormatCount(job.parameter_count()));
  if (!job.error().empty()) details.Add("Error", job.error());
  if (!job.warnings().empty()) details.Add("Warnings", absl::StrJoin(job.warnings(), "\n"));
  details.Add("Created", FormatTimestamp(job.create_time(), zone));
  if (IsSet(job.start_time())) details.Add("Started", FormatTimestamp(job.start_time(), zone));
  if (IsSet(job.end_time())) details.Add("Ended", FormatTimestamp(job.end_time(), zone));
  std::string out = details.Render();
  if (const std::string attempts = FormatAttemptsSection(job, zone); !attempts.empty()) {
    absl::StrAppend(&out, "\n", attempts);
  }
  if (const std::string precision = FormatPrecisionSection(job); !precision.empty()) {
    absl::StrAppend(&out, "\n", precision);
  }
  return out;
}

std::string FormatJobTable(const google::protobuf::RepeatedPtrField<v1::Job>& jobs,
                           absl::TimeZone zone) {
  // Most jobs run once: the column appears only when it says something.
  const bool attempts = AnyJobRetried(jobs);
  std::vector<std::string> header = {"ID", "NAME", "MODEL", "DATASET", "PRECISION", "STATE"};
  if (attempts) header.push_back("ATTEMPT");
  const size_t step_column = header.size();
  for (const char* name : {"STEP", "LOSS", "ACCURACY", "SKIPPED", "SAVINGS", "CREATED"}) {
    header.push_back(name);
  }
  TablePrinter table(std::move(header));
  if (attempts) table.AlignRight(step_column - 1);
  for (size_t column = step_column; column < step_column + 5; ++column) table.AlignRight(column);
  for (const v1::Job& job : jobs) {
    std::vector<std::string> row = {job.id(),
                                    OrDash(job.spec().name()),
                                    OrDash(job.spec().model()),
                                    OrDash(job.spec().dataset()),
                                    EffectivePrecision(job),
                                    JobStateName(job.state())};
    if (attempts) row.push_back(job.attempt() > 0 ? absl::StrCat(job.attempt()) : "-");
    for (std::string& cell : std::vector<std::string>{
             FormatStepCount(job.progress()), ListLoss(job),
             job.result().has_eval_accuracy() ? FormatAccuracy(job.result().eval_accuracy()) : "-",
             SkippedStepsCell(job), SavingsCell(job), FormatTimestamp(job.create_time(), zone)}) {
      row.push_back(std::move(cell));
    }
    table.AddRow(std::move(row));
  }
  return table.ToString();
}

std::string FormatSubmittedJob(const v1::Job& job) {
  std::string out = absl::StrCat("job ", job.id(), " submitted: ", JobStateName(job.state()),
                                 ", precision ", EffectivePrecision(job));
  const std::string& requested = job.spec().precision();
  if (!requested.empty() && !job.effective_precision().empty() &&
      requested != job.effective_precision()) {
    absl::StrAppend(&out, " (requested ", requested, ")");
  }
  if (!job.spec().resume_from().empty()) {
    absl::StrAppend(&out, ", resuming ", FormatResumedFrom(job));
  }
  absl::StrAppend(&out, "\n");
  for (const std::string& warning : job.warnings())
    absl::StrAppend(&out, "warning: ", warning, "\n");
  return out;
}

std::string FormatJobOutcome(const v1::Job& job) {
  const std::string head = absl::StrCat("job ", job.id(), " ", JobStateName(job.state()));
  switch (job.state()) {
    case v1::SUCCEEDED: {
      const v1::JobResult& result = job.result();
      std::vector<std::string> parts = {
          absl::StrCat("final loss ", FormatLoss(result.final_loss()))};
      for (std::string& detail : EvalDetails(result, "eval ")) parts.push_back(std::move(detail));
      return absl::StrCat(head, " in ", FormatDuration(result.train_seconds()), ": ",
                          absl::StrJoin(parts, ", "));
    }
    case v1::FAILED:
      return absl::StrCat(head, job.error().empty() ? "" : ": ", job.error(), ResumeHint(job));
    case v1::CANCELLED:
      return absl::StrCat(head, " at step ", FormatStepCount(job.progress()), ResumeHint(job));
    default:
      return absl::StrCat("job ", job.id(), " is ", JobStateName(job.state()));
  }
}

}  // namespace mantissa::cli
