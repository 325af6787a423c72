#ifndef MANTISSA_CLIENT_JOB_SPEC_FLAGS_H_
#define MANTISSA_CLIENT_JOB_SPEC_FLAGS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/arg_parser.h"
#include "mantissa/v1/training.pb.h"

// The flags that describe a training job, and the JobSpec they make: a new
// JobSpec field is one member, one flag and one line of BuildJobSpec here.
namespace mantissa::cli {

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
  // How bf16-true and 16-true round the update into the half weights
  // (JobSpec.bf16_update); the daemon checks the value.
  std::optional<std::string> bf16_update;
  // Data parallelism (JobSpec.devices, num_nodes): ranks per node and nodes.
  std::optional<int64_t> devices;
  std::optional<int64_t> num_nodes;
  std::vector<std::string> model_options;    // "KEY=VALUE"
  std::vector<std::string> dataset_options;  // "KEY=VALUE"
  bool wait = false;
};

// INVALID_ARGUMENT (a usage error) for an option that is not KEY=VALUE.
absl::StatusOr<v1::JobSpec> BuildJobSpec(const SubmitOptions& options);

// What to train on: --model, --dataset and their options.
void DefineWorkloadFlags(ArgParser& parser, SubmitOptions& options);
// How to train: every spec flag but the workload, --precision, --resume-from
// and --wait, which the commands that take them add themselves.
void DefineTrainingFlags(ArgParser& parser, SubmitOptions& options);

}  // namespace mantissa::cli

#endif  // MANTISSA_CLIENT_JOB_SPEC_FLAGS_H_
