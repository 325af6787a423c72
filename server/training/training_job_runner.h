#ifndef MANTISSA_SERVER_TRAINING_TRAINING_JOB_RUNNER_H_
#define MANTISSA_SERVER_TRAINING_TRAINING_JOB_RUNNER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/common/file_roots.h"
#include "server/jobs/job_runner.h"
#include "server/runtime/probed_device.h"
#include "server/training/rank_launcher.h"
#include "server/training/rank_options.h"
#include "server/training/spec_limits.h"

namespace mantissa {

// The production JobRunner: validates specs with ResolveJobSpec and trains
// each job with a Trainer on the daemon's device. LibTorch errors become the
// job's error here and never escape. Free of torch headers, so main.cc and
// the service stay quick to compile.
class TrainingJobRunner final : public JobRunner {
 public:
  struct Options {
    ProbedDevice device;          // as --device, probed once (ProbeDevice); required
    int max_concurrent_jobs = 1;  // as --max_concurrent_jobs
    // As --state_dir: checkpoints go to <state_dir>/jobs/<job id>/. Empty =
    // no checkpoints (and no resume_from).
    std::string state_dir;
    SpecLimits limits;  // the admission flags (--max_job_steps, ...)
    // As --data_root and --torchscript_root: where specs may name files.
    FileRoots data_roots;
    FileRoots torchscript_roots;
    // How jobs with devices x num_nodes > 1 start their ranks (RankLauncher).
    // An empty executable: such jobs are refused (tests of one process).
    RankLauncher::Options ranks;
  };

  // INVALID_ARGUMENT when options.device was not probed.
  static absl::StatusOr<std::unique_ptr<TrainingJobRunner>> Create(Options options);
  ~TrainingJobRunner() override;

  absl::StatusOr<PreparedSpec> Prepare(const v1::JobSpec& spec) const override;
  // A job of one rank trains in this process; a data-parallel one in rank
  // processes (RankLauncher), this node's part of it (JobContext::node_rank).
  absl::StatusOr<v1::JobResult> Run(const v1::Job& job, JobContext& context) override;
  v1::GetCapabilitiesResponse Capabilities() const override;

  // Rank mode (RunRankProcess): trains one rank of a data-parallel job in
  // this process, in its c10d group. Rank 0 alone writes checkpoints,
  // evaluates and writes the export artifact.
  absl::StatusOr<v1::JobResult> RunRank(const v1::Job& job, JobContext& context,
                                        const RankOptions& rank);

  const std::string& device() const { return device_; }

 private:
  struct Probed;  // the device's probed capabilities (torch types)
  TrainingJobRunner(Options options, std::string device, std::unique_ptr<Probed> probed);
  // Run of a job over several ranks: this node's part, through launcher_.
  absl::StatusOr<v1::JobResult> RunRanks(const v1::Job& job, JobContext& context);
  // A run's failure as the job's error (out of memory explained); its
  // result otherwise.
  absl::StatusOr<v1::JobResult> Finish(const v1::Job& job, absl::Status status,
                                       absl::StatusOr<v1::JobResult> result) const;

  const Options options_;
  const std::string device_;  // canonical: "cpu", "cuda:0"
  const std::unique_ptr<Probed> probed_;
  std::unique_ptr<RankLauncher> launcher_;  // null without options.ranks.executable
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_TRAINING_TRAINING_JOB_RUNNER_H_
