#ifndef MANTISSA_CLIENT_ATTEMPT_FORMAT_H_
#define MANTISSA_CLIENT_ATTEMPT_FORMAT_H_

#include <string>

#include "absl/time/time.h"
#include "google/protobuf/repeated_ptr_field.h"
#include "mantissa/v1/training.pb.h"

// How `mantissa get` and `list` show a job's attempts: each run of the job
// on one worker, which ends when the job does, when the worker stops renewing
// its lease, or when the worker shuts down and releases it.
namespace mantissa::cli {

// "2 of 3"; "4 (max 3; 1 released at shutdown, not counted)" since released
// attempts do not count; "2" when the spec carries no max_attempts. Empty
// for a job from a daemon that does not number attempts.
std::string FormatAttempt(const v1::Job& job);

// How attempt `index` of `job` ended: "succeeded", "failed", "cancelled",
// "lease expired", "released", "running", or "-" while unknown.
std::string AttemptEndName(const v1::Job& job, int index);

// The "Attempts" section of `mantissa get`: one row per attempt with its
// worker, the step it resumed from, its times, how and why it ended. Empty
// while the job has had fewer than two attempts.
std::string FormatAttemptsSection(const v1::Job& job, absl::TimeZone zone);

// Whether some job is past its first attempt: `list` then shows an ATTEMPT
// column.
bool AnyJobRetried(const google::protobuf::RepeatedPtrField<v1::Job>& jobs);

}  // namespace mantissa::cli

#endif  // MANTISSA_CLIENT_ATTEMPT_FORMAT_H_
