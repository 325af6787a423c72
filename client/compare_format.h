#ifndef MANTISSA_CLIENT_COMPARE_FORMAT_H_
#define MANTISSA_CLIENT_COMPARE_FORMAT_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "mantissa/v1/training.pb.h"

// The output of `mantissa compare`, kept apart from the calls so that it can
// be tested from canned jobs.
namespace mantissa::cli {

// One precision of a comparison: the job that ran it, or why the daemon
// refused to.
struct ComparedRun {
  std::string precision;       // as given in --precisions
  std::optional<v1::Job> job;  // unset when the daemon refused the precision
  absl::Status refusal;        // the daemon's answer to the submission when refused
};

// The side-by-side table, one row per run in the given order, followed by
// notes: approximate peaks, why jobs failed and why precisions were refused.
std::string FormatComparison(const std::vector<ComparedRun>& runs);

// {"jobs": [Job, ...], "refused": [{"precision", "code", "error"}, ...]},
// each job in protobuf's JSON mapping.
std::string FormatComparisonJson(const std::vector<ComparedRun>& runs);

}  // namespace mantissa::cli

#endif  // MANTISSA_CLIENT_COMPARE_FORMAT_H_
