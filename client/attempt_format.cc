#include "client/attempt_format.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/job_format.h"
#include "client/table_printer.h"

namespace mantissa::cli {

std::string FormatAttempt(const v1::Job& job) {
  if (job.attempt() <= 0) return "";
  if (!job.spec().has_max_attempts()) return absl::StrCat(job.attempt());
  const auto released = std::count_if(
      job.attempts().begin(), job.attempts().end(),
      [](const v1::Attempt& attempt) { return attempt.end() == v1::Attempt::RELEASED; });
  if (released == 0) return absl::StrCat(job.attempt(), " of ", job.spec().max_attempts());
  return absl::StrCat(job.attempt(), " (max ", job.spec().max_attempts(), "; ", released,
                      " released at shutdown, not counted)");
}

std::string AttemptEndName(const v1::Job& job, int index) {
  const v1::Attempt& attempt = job.attempts(index);
  const bool last = index + 1 == job.attempts_size();
  switch (attempt.end()) {
    case v1::Attempt::FINISHED:
      // The job's own state tells how, for the attempt it ended in.
      return last && IsTerminalState(job.state()) ? absl::AsciiStrToLower(JobStateName(job.state()))
                                                  : "finished";
    case v1::Attempt::LEASE_EXPIRED:
      return "lease expired";
    case v1::Attempt::RELEASED:
      return "released";
    case v1::Attempt::END_UNSPECIFIED:
      return last && job.state() == v1::RUNNING ? "running" : "-";
    default:
      return absl::StrCat("END_", static_cast<int>(attempt.end()));
  }
}

std::string FormatAttemptsSection(const v1::Job& job, absl::TimeZone zone) {
  if (job.attempts_size() < 2) return "";
  TablePrinter table({"#", "WORKER", "FROM STEP", "STARTED", "ENDED", "END", "REASON"});
  table.AlignRight(0);
  table.AlignRight(2);
  for (int i = 0; i < job.attempts_size(); ++i) {
    const v1::Attempt& attempt = job.attempts(i);
    table.AddRow({absl::StrCat(attempt.number()), attempt.worker().empty() ? "-" : attempt.worker(),
                  absl::StrCat(attempt.start_step()), FormatTimestamp(attempt.start_time(), zone),
                  FormatTimestamp(attempt.end_time(), zone), AttemptEndName(job, i),
                  attempt.reason()});
  }
  std::string out = "Attempts\n";
  for (absl::string_view line : absl::StrSplit(table.ToString(), '\n', absl::SkipEmpty())) {
    absl::StrAppend(&out, "  ", line, "\n");
  }
  return out;
}

bool AnyJobRetried(const google::protobuf::RepeatedPtrField<v1::Job>& jobs) {
  return std::any_of(jobs.begin(), jobs.end(),
                     [](const v1::Job& job) { return job.attempt() > 1; });
}

}  // namespace mantissa::cli
