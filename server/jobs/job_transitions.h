#ifndef MANTISSA_SERVER_JOBS_JOB_TRANSITIONS_H_
#define MANTISSA_SERVER_JOBS_JOB_TRANSITIONS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "mantissa/v1/training.pb.h"
#include "server/jobs/job_store.h"

namespace mantissa {

// The changes of a job's record between attempts, shared by both job stores
// and the job manager so that a transition means the same everywhere.

// JobSpec.max_attempts, defaulted (3).
int32_t MaxAttempts(const v1::JobSpec& spec);

bool IsTerminal(v1::JobState state);

// QUEUED -> RUNNING on `worker`: sets worker, the first start_time, and
// appends the attempt (number = job.attempt(), at least 1).
void MarkClaimed(v1::Job& job, const std::string& worker, absl::Time now);

// The running attempt's worker stopped renewing its lease: the attempt ends
// LEASE_EXPIRED and the job goes back to QUEUED at attempt + 1, or ends
// FAILED once max_attempts attempts ended so; a job whose cancellation was
// requested ends CANCELLED. Returns true when re-queued.
bool MarkLeaseExpired(v1::Job& job, absl::Time now);

// A rank of a data-parallel job failed (a rank process died, or a collective
// timed out): like a lost lease, the attempt ends LEASE_EXPIRED with `error`
// as its reason (counted against max_attempts) and the whole job goes back to
// QUEUED to resume from its last checkpoint, or ends FAILED once its attempts
// are used up. Returns true when re-queued.
bool MarkRankFailed(v1::Job& job, const std::string& error, absl::Time now);

// The worker shut down and released the job (after a checkpoint): the
// attempt ends RELEASED and the job goes back to QUEUED at attempt + 1. Not
// counted against max_attempts. Re-queueing clears Job.nodes.
void MarkReleased(v1::Job& job, const std::string& reason, absl::Time now);

// The job reached `state` (terminal) in its current attempt.
void MarkFinished(v1::Job& job, v1::JobState state, const std::string& error, absl::Time now);

// RESOURCE_EXHAUSTED when one more QUEUED job of `principal` would pass
// `caps` (0 = no cap), naming the flag.
absl::Status CheckQueueCaps(const QueueCaps& caps, int64_t queued, int64_t queued_by_principal,
                            const std::string& principal);

// FAILED_PRECONDITION for cancelling a job already in `state`, and for
// deleting one not yet ended: one wording for the stores and the manager.
absl::Status NotCancellable(const std::string& id, v1::JobState state);
absl::Status NotDeletable(const std::string& id, v1::JobState state);

v1::JobEvent MakeJobEvent(v1::JobEvent::Type type, const v1::Job& job, const std::string& message);

}  // namespace mantissa

#endif  // MANTISSA_SERVER_JOBS_JOB_TRANSITIONS_H_
