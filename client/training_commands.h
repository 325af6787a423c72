#ifndef MANTISSA_CLIENT_TRAINING_COMMANDS_H_
#define MANTISSA_CLIENT_TRAINING_COMMANDS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "client/cli_command.h"
#include "client/command_io.h"
#include "client/job_spec_flags.h"
#include "client/training_client.h"
#include "mantissa/v1/training.pb.h"

// The training commands of the `mantissa` CLI: submit, resume, get, list,
// cancel, watch, capabilities, compare and delete. The Build* functions turn
// flags into requests (INVALID_ARGUMENT = a usage error, nothing sent); the
// Run* functions take a client, the validated request and where to write, and
// return the process exit code.
namespace mantissa::cli {

// The rows of the command table for these commands, in help order.
absl::Span<const CliCommand> TrainingCommands();

// The flags of `mantissa resume`. The resumed job takes its spec from the
// job it continues, so only the name may be given beside it.
struct ResumeOptions {
  std::optional<std::string> name;
  bool wait = false;
};

// A spec with only resume_from (and the name, if given) set. INVALID_ARGUMENT
// (a usage error) for an empty job id.
absl::StatusOr<v1::JobSpec> BuildResumeSpec(const std::string& job_id,
                                            const ResumeOptions& options);

struct ListOptions {
  std::vector<std::string> states;  // case-insensitive state names
  std::optional<std::string> model;
  std::optional<std::string> precision;  // matches the effective precision
  std::optional<std::string> name;
  std::optional<int64_t> limit;
  std::optional<std::string> page_token;  // a next_page_token, passed back as is
};

// INVALID_ARGUMENT (a usage error) for an unknown state, a negative limit or
// one that does not fit the request, or a filter or page token given empty.
absl::StatusOr<v1::ListJobsRequest> BuildListRequest(const ListOptions& options);

// What `mantissa list` prints after the table when there are older jobs:
// "next page: --page-token TOKEN".
std::string NextPageLine(const std::string& next_page_token);

// The flags of `mantissa compare`: those of submit except --precision and
// --wait, plus the entries to compare.
struct CompareOptions {
  SubmitOptions spec;
  // Comma-separated PRECISION[:UPDATE] entries, e.g. "bf16-true,bf16-true:kahan".
  std::optional<std::string> precisions;
};

// One entry of --precisions: a precision and, for the true-half precisions,
// how updates round into the half weights (JobSpec.bf16_update).
struct CompareEntry {
  std::string label;      // how the output names it: "bf16-true" or "bf16-true:kahan"
  std::string precision;  // "bf16-true"
  std::optional<std::string> bf16_update;  // "kahan"; unset: the spec's (--bf16-update)
};

struct CompareRequest {
  v1::JobSpec spec;  // submitted once per entry, with its precision and update set
  std::vector<CompareEntry> entries;
};

// INVALID_ARGUMENT (a usage error) for a missing or empty --precisions, an
// empty or repeated entry in it, an entry with an empty precision or update
// part, or a spec BuildJobSpec rejects.
absl::StatusOr<CompareRequest> BuildCompareRequest(const CompareOptions& options);

// Also runs `mantissa resume`, whose spec comes from BuildResumeSpec. With
// `wait`, kExitOk only if the job ends SUCCEEDED.
int RunSubmit(TrainingClient& client, const v1::JobSpec& spec, bool wait, const CommandIo& io);
int RunGet(TrainingClient& client, const std::string& job_id, const CommandIo& io);
int RunList(TrainingClient& client, const v1::ListJobsRequest& request, const CommandIo& io);
int RunCancel(TrainingClient& client, const std::string& job_id, const CommandIo& io);
// Deletes an ended job with its checkpoints.
int RunDelete(TrainingClient& client, const std::string& job_id, const CommandIo& io);
// kExitOk only if the job ends SUCCEEDED.
int RunWatch(TrainingClient& client, const std::string& job_id, const CommandIo& io);
int RunCapabilities(TrainingClient& client, const CommandIo& io);
// Submits one job per entry, waits for them all and prints them side by
// side. An entry the daemon refuses is listed, not fatal; kExitOk only if at
// least one job was submitted and every submitted job SUCCEEDED.
int RunCompare(TrainingClient& client, const CompareRequest& request, const CommandIo& io);

}  // namespace mantissa::cli

#endif  // MANTISSA_CLIENT_TRAINING_COMMANDS_H_
