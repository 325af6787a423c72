#include "server/jobs/job_transitions.h"

#include <google/protobuf/util/time_util.h>

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace mantissa {
namespace {

google::protobuf::Timestamp ToProto(absl::Time t) {
  return google::protobuf::util::TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(t));
}

// The running attempt's record, appended by MarkClaimed; nullptr if none.
v1::Attempt* CurrentAttempt(v1::Job& job) {
  if (job.attempts_size() == 0) return nullptr;
  v1::Attempt* last = job.mutable_attempts(job.attempts_size() - 1);
  return last->end() == v1::Attempt::END_UNSPECIFIED ? last : nullptr;
}

void EndAttempt(v1::Job& job, v1::Attempt::End end, const std::string& reason, absl::Time now) {
  v1::Attempt* attempt = CurrentAttempt(job);
  if (attempt == nullptr) return;
  attempt->set_end(end);
  attempt->set_reason(reason);
  *attempt->mutable_end_time() = ToProto(now);
}

void Requeue(v1::Job& job) {
  job.set_state(v1::QUEUED);
  job.set_attempt(std::max(1, job.attempt()) + 1);
  job.clear_worker();
  // The next attempt is placed anew, on whichever workers are free then.
  job.clear_nodes();
}

// Ends the running attempt as lost (counted against max_attempts) for
// `reason`: back to QUEUED, or FAILED once the attempts are used up; a
// requested cancellation ends it CANCELLED. True when re-queued.
bool EndLostAttempt(v1::Job& job, const std::string& reason, absl::Time now) {
  EndAttempt(job, v1::Attempt::LEASE_EXPIRED, reason, now);
  if (job.cancel_requested()) {
    // The user's cancellation stands, whoever was to carry it out.
    job.set_state(v1::CANCELLED);
    job.set_error(absl::StrCat("cancelled; its attempt was lost before it stopped (", reason, ")"));
    *job.mutable_end_time() = ToProto(now);
    job.clear_worker();
    return false;
  }
  int lost = 0;
  for (const v1::Attempt& a : job.attempts()) lost += a.end() == v1::Attempt::LEASE_EXPIRED;
  if (lost >= MaxAttempts(job.spec())) {
    job.set_state(v1::FAILED);
    job.set_error(absl::StrCat("the job lost ", lost, " attempt(s), its max_attempts; ",
                               "the last: ", reason));
    *job.mutable_end_time() = ToProto(now);
    job.clear_worker();
    return false;
  }
  Requeue(job);
  return true;
}

}  // namespace

int32_t MaxAttempts(const v1::JobSpec& spec) {
  return spec.has_max_attempts() ? spec.max_attempts() : 3;
}

bool IsTerminal(v1::JobState state) {
  return state == v1::SUCCEEDED || state == v1::FAILED || state == v1::CANCELLED;
}

void MarkClaimed(v1::Job& job, const std::string& worker, absl::Time now) {
  if (job.attempt() < 1) job.set_attempt(1);
  job.set_state(v1::RUNNING);
  job.set_worker(worker);
  if (!job.has_start_time()) *job.mutable_start_time() = ToProto(now);
  v1::Attempt* attempt = job.add_attempts();
  attempt->set_number(job.attempt());
  attempt->set_worker(worker);
  *attempt->mutable_start_time() = ToProto(now);
}

bool MarkLeaseExpired(v1::Job& job, absl::Time now) {
  return EndLostAttempt(job,
                        absl::StrCat("lease expired: worker ", job.worker(),
                                     " stopped renewing it (it died, hung or lost the database)"),
                        now);
}

bool MarkRankFailed(v1::Job& job, const std::string& error, absl::Time now) {
  return EndLostAttempt(job, error, now);
}

void MarkReleased(v1::Job& job, const std::string& reason, absl::Time now) {
  EndAttempt(job, v1::Attempt::RELEASED, reason, now);
  Requeue(job);
}

void MarkFinished(v1::Job& job, v1::JobState state, const std::string& error, absl::Time now) {
  EndAttempt(job, v1::Attempt::FINISHED, error.empty() ? v1::JobState_Name(state) : error, now);
  job.set_state(state);
  job.set_error(error);
  *job.mutable_end_time() = ToProto(now);
}

absl::Status CheckQueueCaps(const QueueCaps& caps, int64_t queued, int64_t queued_by_principal,
                            const std::string& principal) {
  if (caps.max_queued > 0 && queued >= caps.max_queued) {
    return absl::ResourceExhaustedError(
        absl::StrCat("--max_queued_jobs: ", queued, " jobs are queued, the cap is ",
                     caps.max_queued, "; wait for some to start or cancel them"));
  }
  if (caps.max_queued_per_principal > 0 && queued_by_principal >= caps.max_queued_per_principal) {
    return absl::ResourceExhaustedError(
        absl::StrCat("--max_queued_jobs_per_principal: principal '", principal, "' has ",
                     queued_by_principal, " jobs queued, the cap is ",
                     caps.max_queued_per_principal, "; wait for some to start or cancel them"));
  }
  return absl::OkStatus();
}

absl::Status NotCancellable(const std::string& id, v1::JobState state) {
  return absl::FailedPreconditionError(
      absl::StrCat("job_id: job '", id, "' is already ", v1::JobState_Name(state),
                   "; only a QUEUED or RUNNING job can be cancelled"));
}

absl::Status NotDeletable(const std::string& id, v1::JobState state) {
  return absl::FailedPreconditionError(
      absl::StrCat("job_id: job '", id, "' is ", v1::JobState_Name(state),
                   "; only an ended job can be deleted (cancel it first)"));
}

v1::JobEvent MakeJobEvent(v1::JobEvent::Type type, const v1::Job& job, const std::string& message) {
  v1::JobEvent event;
  event.set_type(type);
  *event.mutable_time() = google::protobuf::util::TimeUtil::GetCurrentTime();
  *event.mutable_job() = job;
  event.set_message(message);
  return event;
}

}  // namespace mantissa
