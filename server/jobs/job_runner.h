#ifndef MANTISSA_SERVER_JOBS_JOB_RUNNER_H_
#define MANTISSA_SERVER_JOBS_JOB_RUNNER_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "mantissa/v1/training.pb.h"
#include "server/metrics/metrics.h"

namespace mantissa {

// Why a job is asked to stop, which decides what it keeps as it stops.
enum class StopReason {
  kNone,
  kCancelled,  // CancelJob, or its max_duration passed
  kPreempted,  // the worker shuts down: checkpoint now, another attempt resumes
  kLeaseLost,  // the job is no longer this worker's: write nothing more
};

// The running job as the runner sees it. Implemented by JobManager; every
// method is safe to call from the job's worker thread.
class JobContext {
 public:
  virtual ~JobContext() = default;

  // True once the job is asked to stop (see StopReason). Runners check it
  // every step and then return absl::CancelledError.
  virtual bool cancelled() const = 0;
  virtual StopReason stop_reason() const {
    return cancelled() ? StopReason::kCancelled : StopReason::kNone;
  }

  // Applies `mutate` to the stored job, persists it and publishes an event
  // of `type` to watchers. Must not call back into the JobManager.
  virtual void Update(v1::JobEvent::Type type, const std::function<void(v1::Job&)>& mutate,
                      const std::string& message = "") = 0;

  // Adds a warning to the job and publishes a WARNING event.
  virtual void Warn(const std::string& warning) = 0;

  // The job's Prometheus series.
  virtual JobMetrics& metrics() = 0;

  // A job over several nodes (num_nodes > 1) runs on one worker per node;
  // this worker's node rank in the current attempt (0 hosts rank 0).
  virtual int node_rank() const { return 0; }
  // Node 0: tells the job's other nodes where rank 0's rendezvous store
  // listens ("host:port").
  virtual absl::Status PublishRendezvous(const std::string& address) {
    return absl::UnimplementedError("this worker runs no job over several nodes");
  }
  // The other nodes: node 0's address once published; DEADLINE_EXCEEDED
  // after `timeout`, CANCELLED when the job is stopped meanwhile.
  virtual absl::StatusOr<std::string> AwaitRendezvous(absl::Duration timeout) {
    return absl::UnimplementedError("this worker runs no job over several nodes");
  }
};

// Whatever executes jobs: the LibTorch trainer in production, fakes in tests.
// Keeps torch out of the job manager and the gRPC service.
class JobRunner {
 public:
  struct PreparedSpec {
    v1::JobSpec spec;                   // defaults filled in
    std::string effective_precision;    // canonical, after device fallbacks
    std::vector<std::string> warnings;  // e.g. deprecated precision aliases
  };

  virtual ~JobRunner() = default;

  // Validates a submitted spec without side effects: INVALID_ARGUMENT for bad
  // values (naming the field), NOT_FOUND for unknown models or datasets,
  // FAILED_PRECONDITION for what this device cannot run.
  virtual absl::StatusOr<PreparedSpec> Prepare(const v1::JobSpec& spec) const = 0;

  // Runs the job to completion on the calling thread. Returns CANCELLED when
  // the context was cancelled, any other error to fail the job.
  virtual absl::StatusOr<v1::JobResult> Run(const v1::Job& job, JobContext& context) = 0;

  // Device, versions, precision support, models and datasets.
  virtual v1::GetCapabilitiesResponse Capabilities() const = 0;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_JOBS_JOB_RUNNER_H_
