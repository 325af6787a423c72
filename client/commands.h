#ifndef MANTISSA_CLIENT_COMMANDS_H_
#define MANTISSA_CLIENT_COMMANDS_H_

#include <cstdint>
#include <iostream>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/training_client.h"
#include "mantissa/v1/training.pb.h"

// The commands of the `mantissa` CLI. Each takes a client, its already
// validated request and where to write, and returns the process exit code.
namespace mantissa::cli {

inline constexpr int kExitOk = 0;
// A failed call, or a watched job that did not succeed.
inline constexpr int kExitFailure = 1;
// Bad command line; nothing was sent to the daemon.
inline constexpr int kExitUsage = 2;

struct CommandIo {
  std::ostream* out = &std::cout;
  std::ostream* err = &std::cerr;
  // Print responses in protobuf's JSON mapping (watch: one event per line).
  bool json = false;
  // `out` is a terminal: draw a live progress line instead of one per event.
  bool terminal = false;
  int terminal_width = 80;
  absl::TimeZone time_zone = absl::LocalTimeZone();
};

// The flags of `mantissa submit`, each unset unless given on the command line
// so that the daemon fills in its own defaults.
struct SubmitOptions {
  std::optional<std::string> model;
  std::optional<std::string> dataset;
  std::optional<std::string> precision;
  std::optional<int64_t> steps;
  std::optional<int64_t> epochs;
  std::optional<int64_t> batch_size;
  std::optional<std::string> optimizer;
  std::optional<double> lr;
  std::optional<double> weight_decay;
  std::optional<double> momentum;
  std::optional<uint64_t> seed;
  std::optional<std::string> name;
  std::optional<int64_t> progress_every_n_steps;
  std::optional<int64_t> eval_every_n_steps;
  std::optional<int64_t> eval_max_batches;
  std::optional<int64_t> eval_batch_size;
  bool no_eval = false;
  std::optional<double> eps;
  std::optional<double> gradient_clip_norm;
  std::optional<std::string> lr_schedule;
  std::optional<int64_t> warmup_steps;
  std::optional<double> min_lr;
  std::optional<int64_t> memory_baseline_steps;
  // Optional so that "--grad-scaler-enabled=false" reaches the daemon as an
  // explicit false rather than as "not given".
  std::optional<bool> grad_scaler_enabled;
  std::optional<double> grad_scaler_init_scale;
  std::optional<double> grad_scaler_growth_factor;
  std::optional<double> grad_scaler_backoff_factor;
  std::optional<int64_t> grad_scaler_growth_interval;
  // Optional for the same reason: "--nesterov=false" is an explicit choice.
  std::optional<bool> nesterov;
  std::optional<int64_t> accumulate_grad_batches;
  std::optional<int64_t> checkpoint_every_n_steps;
  // JobSpec.max_duration as absl::ParseDuration reads it: 90s, 30m, 2h, 1h30m.
  std::optional<std::string> max_duration;
  std::optional<int64_t> keep_checkpoints;
  std::optional<std::string> resume_from;
  // The FP8 recipe of the transformer-engine precisions (JobSpec.fp8).
  std::optional<std::string> fp8_format;
  std::optional<int64_t> fp8_amax_history_len;
  std::optional<std::string> fp8_amax_compute_algo;
  std::optional<int64_t> fp8_margin;
  // Optional so that "--cuda-graph=false" is sent as an explicit false.
  std::optional<bool> cuda_graph;
  std::vector<std::string> model_options;    // "KEY=VALUE"
  std::vector<std::string> dataset_options;  // "KEY=VALUE"
  bool wait = false;
};

// INVALID_ARGUMENT (a usage error) for an option that is not KEY=VALUE.
absl::StatusOr<v1::JobSpec> BuildJobSpec(const SubmitOptions& options);

// The flags of `mantissa resume`. The resumed job takes its spec from the
// job it continues, so only the name may be given beside it.
struct ResumeOptions {
  std::optional<std::string> name;
  bool wait = false;
};

// A spec with only resume_from (and the name, if given) set. INVALID_ARGUMENT
// (a usage error) for an empty job id.
absl::StatusOr<v1::JobSpec> BuildResumeSpec(const std::string& job_id,
                                            const ResumeOptions& options);

struct ListOptions {
  std::vector<std::string> states;  // case-insensitive state names
  std::optional<int64_t> limit;
};

// INVALID_ARGUMENT (a usage error) for an unknown state or a limit that does
// not fit the request.
absl::StatusOr<v1::ListJobsRequest> BuildListRequest(const ListOptions& options);

// The flags of `mantissa compare`: those of submit except --precision and
// --wait, plus the precisions to compare.
struct CompareOptions {
  SubmitOptions spec;
  std::optional<std::string> precisions;  // comma-separated
};

struct CompareRequest {
  v1::JobSpec spec;  // submitted once per precision, with that precision set
  std::vector<std::string> precisions;
};

// INVALID_ARGUMENT (a usage error) for a missing or empty --precisions, an
// empty or repeated entry in it, or a spec BuildJobSpec rejects.
absl::StatusOr<CompareRequest> BuildCompareRequest(const CompareOptions& options);

// Prints "mantissa: <error>" on `io.err` and returns kExitFailure.
int ReportError(const absl::Status& status, const CommandIo& io);

// Also runs `mantissa resume`, whose spec comes from BuildResumeSpec. With
// `wait`, kExitOk only if the job ends SUCCEEDED.
int RunSubmit(TrainingClient& client, const v1::JobSpec& spec, bool wait, const CommandIo& io);
int RunGet(TrainingClient& client, const std::string& job_id, const CommandIo& io);
int RunList(TrainingClient& client, const v1::ListJobsRequest& request, const CommandIo& io);
int RunCancel(TrainingClient& client, const std::string& job_id, const CommandIo& io);
// Deletes an ended job with its checkpoints.
int RunDelete(TrainingClient& client, const std::string& job_id, const CommandIo& io);
// kExitOk only if the job ends SUCCEEDED.
int RunWatch(TrainingClient& client, const std::string& job_id, const CommandIo& io);
int RunCapabilities(TrainingClient& client, const CommandIo& io);
// Submits one job per precision, waits for them all and prints them side by
// side. A precision the daemon refuses is listed, not fatal; kExitOk only if
// at least one job was submitted and every submitted job SUCCEEDED.
int RunCompare(TrainingClient& client, const CompareRequest& request, const CommandIo& io);

}  // namespace mantissa::cli

#endif  // MANTISSA_CLIENT_COMMANDS_H_
