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

// One entry of a comparison: the job that ran it, or why the daemon refused
// to.
struct ComparedRun {
  std::string entry;           // the --precisions entry, e.g. "bf16-true:kahan"
  std::optional<v1::Job> job;  // unset when the daemon refused the entry
  absl::Status refusal;        // the daemon's answer to the submission when refused
};

// The side-by-side table, one row per run in the given order, followed by
// notes: approximate peaks, why jobs failed and why entries were refused.
// A COMPENSATION column (kahan's buffers) and a GRAD NORM column (the
// largest of the last progress interval) appear when some job reports them.
std::string FormatComparison(const std::vector<ComparedRun>& runs);

// {"jobs": [Job, ...], "refused": [{"precision", "code", "error"}, ...]},
// each job in protobuf's JSON mapping; "precision" is the entry as given.
std::string FormatComparisonJson(const std::vector<ComparedRun>& runs);

}  // namespace mantissa::cli

#endif  // MANTISSA_CLIENT_COMPARE_FORMAT_H_
