#ifndef MANTISSA_SERVER_TRAINING_TRAINING_JOB_RUNNER_H_
#define MANTISSA_SERVER_TRAINING_TRAINING_JOB_RUNNER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/common/file_roots.h"
#include "server/jobs/job_runner.h"
#include "server/runtime/probed_device.h"
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
  };

  // INVALID_ARGUMENT when options.device was not probed.
  static absl::StatusOr<std::unique_ptr<TrainingJobRunner>> Create(Options options);
  ~TrainingJobRunner() override;

  absl::StatusOr<PreparedSpec> Prepare(const v1::JobSpec& spec) const override;
  absl::StatusOr<v1::JobResult> Run(const v1::Job& job, JobContext& context) override;
  v1::GetCapabilitiesResponse Capabilities() const override;

  const std::string& device() const { return device_; }

 private:
  struct Probed;  // the device's probed capabilities (torch types)
  TrainingJobRunner(Options options, std::string device, std::unique_ptr<Probed> probed);

  const Options options_;
  const std::string device_;  // canonical: "cpu", "cuda:0"
  const std::unique_ptr<Probed> probed_;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_TRAINING_TRAINING_JOB_RUNNER_H_
