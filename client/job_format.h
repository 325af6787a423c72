#ifndef MANTISSA_CLIENT_JOB_FORMAT_H_
#define MANTISSA_CLIENT_JOB_FORMAT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "google/protobuf/map.h"
#include "google/protobuf/repeated_ptr_field.h"
#include "google/protobuf/timestamp.pb.h"
#include "mantissa/v1/training.pb.h"

// Human-readable renderings of jobs. Everything here is pure string building so
// that it can be tested without a daemon.
namespace mantissa::cli {

// "RUNNING"; values from a newer daemon print as "STATE_7".
std::string JobStateName(v1::JobState state);
// Case-insensitive; only the five real states are accepted.
absl::StatusOr<v1::JobState> ParseJobState(absl::string_view name);
bool IsTerminalState(v1::JobState state);

// "-" when unset.
std::string FormatTimestamp(const google::protobuf::Timestamp& timestamp, absl::TimeZone zone);
// "4.2s", "42s", "3m05s", "1h02m03s".
std::string FormatDuration(double seconds);
std::string FormatLoss(double loss);
// "epoch 1/1", "loss 0.5123", "12345 items/s": what follows the step count
// in `get`, `watch` lines and the progress bar.
std::vector<std::string> ProgressDetails(const v1::Progress& progress);
// Accuracy is a fraction in [0, 1]; prints "88.45%".
std::string FormatAccuracy(double fraction);
// The eval metrics the result carries, each after `prefix`: "eval accuracy
// 88.45%", "eval loss 0.3100", "eval perplexity 10.07" with prefix "eval ".
std::vector<std::string> EvalDetails(const v1::JobResult& result, absl::string_view prefix);
// Perplexity (exp of the per-token loss): "10.07".
std::string FormatPerplexity(double perplexity);
// "step 200: /state/jobs/j1/checkpoint.pt (1.20 MiB)"; the size is left out
// while unknown (0).
std::string FormatCheckpoint(const v1::Checkpoint& checkpoint);
// "101,770".
std::string FormatCount(int64_t count);
// Binary units: "512 B", "1.50 KiB", "1.50 MiB", "2.00 GiB".
std::string FormatBytes(int64_t bytes);
// A memory savings ratio as a percentage; negative when the job used more
// than its fp32 baseline: "42.0%", "-98.7%".
std::string FormatSavings(double ratio);
// The grad scaler's scale: "65536", "0.5", "1.5e+20".
std::string FormatScale(double scale);
// "scale 65536", "skipped 3" while the grad scaler is enabled, else nothing:
// what `watch` lines and the progress bar append.
std::vector<std::string> GradScalerDetails(const v1::Job& job);
// A gradient norm to three significant digits: "0.532", "1.21", "1.23e+04".
std::string FormatGradNorm(double norm);
// "grad norm 0.532" once the job has reported a finite norm, else nothing:
// what `watch` lines and the progress bar append.
std::vector<std::string> GradNormDetails(const v1::Progress& progress);
// The "Gradient norm" line of `mantissa get`: "0.532 (largest in the last
// interval 1.21)"; empty before the first finite norm.
std::string FormatGradNormLine(const v1::Progress& progress);
// The "Last non-finite step" block of `mantissa get`, one fact a line:
// where the step was in the seeded order, whether its loss was finite,
// which parameters' gradients were not, whether the grad scaler skipped it
// and how many such steps its progress interval had.
std::string FormatNonFiniteStep(const v1::NonFiniteStep& step);
// The "Update rounding" line of `mantissa get` for bf16-true and 16-true:
// "kahan (compensation 6.20 MiB)"; empty for other precisions.
std::string FormatUpdateRounding(const v1::Job& job);
// Table cells shared by `list` and `compare`: the optimizer steps the grad
// scaler skipped ("-" while it is disabled), and the memory savings against
// the fp32 baseline ("-" without one).
std::string SkippedStepsCell(const v1::Job& job);
std::string SavingsCell(const v1::Job& job);
// "420/938", "420" when the total is unknown.
std::string FormatStepCount(const v1::Progress& progress);
// "a=1, b=2", sorted by key so the output is stable.
std::string FormatOptions(const google::protobuf::Map<std::string, std::string>& options);
// The precision the job runs in, falling back to the requested one.
std::string EffectivePrecision(const v1::Job& job);

// Data parallelism: "2 (2 devices x 1 node), global batch 128", the batch
// once the job has started. Empty for a job on one rank.
std::string FormatRanks(const v1::Job& job);

// The "Precision" section of `mantissa get`: dtypes, the update rounding,
// the grad scaler, the last non-finite step and the measured memory. Empty
// when the daemon has reported none of it.
std::string FormatPrecisionSection(const v1::Job& job);
// The multi-line view of `mantissa get`: the attempt and worker, and an
// Attempts section once the job has run more than once.
std::string FormatJob(const v1::Job& job, absl::TimeZone zone);
// The table of `mantissa list`; an ATTEMPT column when some job is past its
// first attempt.
std::string FormatJobTable(const google::protobuf::RepeatedPtrField<v1::Job>& jobs,
                           absl::TimeZone zone);
// What `mantissa submit` and `resume` print: id, state, precision, the job a
// resumed one continues, then one line per warning.
std::string FormatSubmittedJob(const v1::Job& job);
// One line on how a job ended: state, final loss and the eval metrics present,
// or the error; an unfinished job with a checkpoint adds how to resume it.
std::string FormatJobOutcome(const v1::Job& job);

}  // namespace mantissa::cli

#endif  // MANTISSA_CLIENT_JOB_FORMAT_H_
