#include "client/training_commands.h"

#include <limits>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "client/capabilities_format.h"
#include "client/compare_format.h"
#include "client/job_format.h"
#include "client/watch_printer.h"

namespace mantissa::cli {
namespace {

// Shared by `watch` and `submit --wait`.
int WatchUntilDone(TrainingClient& client, const std::string& job_id, bool announce,
                   const CommandIo& io) {
  v1::WatchJobRequest request;
  request.set_job_id(job_id);
  if (io.json) {
    v1::Job last;
    const absl::Status status = client.WatchJob(request, [&](const v1::JobEvent& event) {
      PrintJson(event, /*pretty=*/false, io);
      if (event.has_job()) last = event.job();
    });
    if (!status.ok()) return ReportError(status, io);
    return last.state() == v1::SUCCEEDED ? kExitOk : kExitFailure;
  }

  WatchPrinter printer(io.out,
                       io.terminal ? WatchPrinter::Style::kTerminal : WatchPrinter::Style::kPlain,
                       io.terminal_width);
  printer.set_announce_snapshot(announce);
  const absl::Status status =
      client.WatchJob(request, [&](const v1::JobEvent& event) { printer.Print(event); });
  printer.ClearLine();
  if (!status.ok()) return ReportError(status, io);
  if (!printer.has_job()) {
    *io.err << "mantissa: the daemon ended the watch of job " << job_id << " without any event\n";
    return kExitFailure;
  }
  *io.out << FormatJobOutcome(printer.job()) << '\n' << std::flush;
  if (!IsTerminalState(printer.job().state())) {
    *io.err << "mantissa: the daemon ended the watch before job " << job_id << " finished\n";
  }
  return printer.job().state() == v1::SUCCEEDED ? kExitOk : kExitFailure;
}

// Follows a job until it ends and returns it as of the last event. A watch
// the daemon ends early is followed by one GetJob, so that a job that did
// finish is not reported as unfinished.
absl::StatusOr<v1::Job> WaitForJob(TrainingClient& client, const v1::Job& submitted,
                                   const CommandIo& io) {
  v1::WatchJobRequest request;
  request.set_job_id(submitted.id());
  v1::Job last = submitted;
  const absl::Status status = client.WatchJob(request, [&](const v1::JobEvent& event) {
    if (event.has_job()) last = event.job();
  });
  if (!status.ok()) return status;
  if (IsTerminalState(last.state())) return last;
  v1::GetJobRequest get;
  get.set_job_id(submitted.id());
  absl::StatusOr<v1::GetJobResponse> response = client.GetJob(get);
  if (response.ok()) last = response->job();
  if (!IsTerminalState(last.state())) {
    *io.err << "mantissa: the daemon ended the watch before job " << submitted.id()
            << " finished\n";
  }
  return last;
}

}  // namespace

absl::StatusOr<v1::JobSpec> BuildResumeSpec(const std::string& job_id,
                                            const ResumeOptions& options) {
  if (absl::StripAsciiWhitespace(job_id).empty()) {
    return absl::InvalidArgumentError("JOB is empty; give the id of the job to resume");
  }
  v1::JobSpec spec;
  spec.set_resume_from(job_id);
  if (options.name) spec.set_name(*options.name);
  return spec;
}

absl::StatusOr<v1::ListJobsRequest> BuildListRequest(const ListOptions& options) {
  v1::ListJobsRequest request;
  for (const std::string& name : options.states) {
    absl::StatusOr<v1::JobState> state = ParseJobState(name);
    if (!state.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--state: ", state.status().message()));
    }
    request.add_states(*state);
  }
  if (options.limit) {
    if (*options.limit < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--limit: must be >= 0 (0 = all), got ", *options.limit));
    }
    if (*options.limit > std::numeric_limits<int32_t>::max()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--limit: '", *options.limit, "' is out of range"));
    }
    request.set_limit(static_cast<int32_t>(*options.limit));
  }
  // An empty value would silently mean "any": refuse it, as a script whose
  // variable is unset most likely did not mean to list everything.
  const std::pair<const char*, const std::optional<std::string>*> strings[] = {
      {"--model", &options.model},
      {"--precision", &options.precision},
      {"--name", &options.name},
      {"--page-token", &options.page_token}};
  for (const auto& [flag, value] : strings) {
    if (value->has_value() && (*value)->empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, ": is empty; leave the flag out for any"));
    }
  }
  if (options.model) request.set_model(*options.model);
  if (options.precision) request.set_precision(*options.precision);
  if (options.name) request.set_name(*options.name);
  if (options.page_token) request.set_page_token(*options.page_token);
  return request;
}

std::string NextPageLine(const std::string& next_page_token) {
  return absl::StrCat("next page: --page-token ", next_page_token);
}

namespace {

// "PRECISION[:UPDATE]", each part trimmed; `entry` is not empty.
absl::StatusOr<CompareEntry> ParseCompareEntry(absl::string_view entry) {
  CompareEntry parsed;
  const size_t colon = entry.find(':');
  parsed.precision = std::string(absl::StripAsciiWhitespace(entry.substr(0, colon)));
  if (parsed.precision.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--precisions: '", entry, "' has no precision before the ':'"));
  }
  parsed.label = parsed.precision;
  if (colon == absl::string_view::npos) return parsed;
  const std::string update(absl::StripAsciiWhitespace(entry.substr(colon + 1)));
  if (update.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--precisions: '", entry,
                     "' has no update after the ':'; give nearest, stochastic or kahan"));
  }
  parsed.bf16_update = update;
  absl::StrAppend(&parsed.label, ":", update);
  return parsed;
}

}  // namespace

absl::StatusOr<CompareRequest> BuildCompareRequest(const CompareOptions& options) {
  if (!options.precisions.has_value()) {
    return absl::InvalidArgumentError(
        "--precisions is required, e.g. --precisions=32-true,bf16-mixed");
  }
  if (absl::StripAsciiWhitespace(*options.precisions).empty()) {
    return absl::InvalidArgumentError(
        "--precisions is empty; give at least one, e.g. --precisions=32-true,bf16-mixed");
  }
  CompareRequest request;
  std::set<std::string> seen;
  for (absl::string_view text : absl::StrSplit(*options.precisions, ',')) {
    if (absl::StripAsciiWhitespace(text).empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--precisions: '", *options.precisions, "' has an empty entry"));
    }
    absl::StatusOr<CompareEntry> entry = ParseCompareEntry(absl::StripAsciiWhitespace(text));
    if (!entry.ok()) return entry.status();
    // Rows are told apart by their entry, so each may appear once.
    if (!seen.insert(entry->label).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("--precisions: '", entry->label, "' is given twice"));
    }
    request.entries.push_back(*std::move(entry));
  }
  absl::StatusOr<v1::JobSpec> spec = BuildJobSpec(options.spec);
  if (!spec.ok()) return spec.status();
  request.spec = *std::move(spec);
  request.spec.clear_precision();
  return request;
}

int RunSubmit(TrainingClient& client, const v1::JobSpec& spec, bool wait, const CommandIo& io) {
  v1::SubmitJobRequest request;
  *request.mutable_spec() = spec;
  absl::StatusOr<v1::SubmitJobResponse> response = client.SubmitJob(request);
  if (!response.ok()) return ReportError(response.status(), io);
  if (io.json) {
    // With --wait the events follow, so keep every line one JSON document.
    PrintJson(*response, /*pretty=*/!wait, io);
  } else {
    *io.out << FormatSubmittedJob(response->job()) << std::flush;
  }
  if (!wait) return kExitOk;
  return WatchUntilDone(client, response->job().id(), /*announce=*/false, io);
}

int RunGet(TrainingClient& client, const std::string& job_id, const CommandIo& io) {
  v1::GetJobRequest request;
  request.set_job_id(job_id);
  return PrintResponse(
      client.GetJob(request),
      [&](const v1::GetJobResponse& response) { return FormatJob(response.job(), io.time_zone); },
      io);
}

int RunList(TrainingClient& client, const v1::ListJobsRequest& request, const CommandIo& io) {
  absl::StatusOr<v1::ListJobsResponse> response = client.ListJobs(request);
  if (!response.ok()) return ReportError(response.status(), io);
  if (io.json) {
    PrintJson(*response, /*pretty=*/true, io);
  } else if (response->jobs().empty()) {
    *io.out << "no jobs\n";
  } else {
    *io.out << FormatJobTable(response->jobs(), io.time_zone);
  }
  // --json carries the token as nextPageToken.
  if (!io.json && !response->next_page_token().empty()) {
    *io.out << NextPageLine(response->next_page_token()) << '\n';
  }
  if (client.list_jobs_left_out() > 0) {
    *io.err << "mantissa: " << client.list_jobs_left_out()
            << " older job(s) not shown: the answer is capped at 4 MiB; the next page starts "
               "with them (narrow it with --state or --limit)\n";
  }
  if (client.list_jobs_skipped() > 0) {
    *io.err << "mantissa: " << client.list_jobs_skipped()
            << " job(s) skipped: each record is larger than an answer may be (4 MiB)\n";
  }
  return kExitOk;
}

int RunDelete(TrainingClient& client, const std::string& job_id, const CommandIo& io) {
  v1::DeleteJobRequest request;
  request.set_job_id(job_id);
  absl::StatusOr<v1::DeleteJobResponse> response = client.DeleteJob(request);
  if (!response.ok()) return ReportError(response.status(), io);
  if (io.json) {
    *io.out << "{\"job_id\": \"" << job_id << "\", \"deleted\": true}\n";
    return kExitOk;
  }
  *io.out << "job " << job_id << " deleted with its checkpoints\n";
  return kExitOk;
}

int RunCancel(TrainingClient& client, const std::string& job_id, const CommandIo& io) {
  v1::CancelJobRequest request;
  request.set_job_id(job_id);
  absl::StatusOr<v1::CancelJobResponse> response = client.CancelJob(request);
  if (!response.ok()) return ReportError(response.status(), io);
  if (io.json) {
    PrintJson(*response, /*pretty=*/true, io);
    return kExitOk;
  }
  const v1::Job& job = response->job();
  const std::string& id = job.id().empty() ? job_id : job.id();
  if (job.state() == v1::CANCELLED) {
    *io.out << "job " << id << " cancelled\n";
  } else if (job.cancel_requested() && !IsTerminalState(job.state())) {
    *io.out << "cancellation requested for job " << id << " ("
            << absl::AsciiStrToLower(JobStateName(job.state())) << "; it stops within one step)\n";
  } else if (IsTerminalState(job.state())) {
    *io.out << "job " << id << " had already finished: " << JobStateName(job.state()) << '\n';
  } else {
    *io.out << "job " << id << " is " << JobStateName(job.state()) << '\n';
  }
  return kExitOk;
}

int RunWatch(TrainingClient& client, const std::string& job_id, const CommandIo& io) {
  return WatchUntilDone(client, job_id, /*announce=*/true, io);
}

int RunCapabilities(TrainingClient& client, const CommandIo& io) {
  return PrintResponse(client.GetCapabilities(v1::GetCapabilitiesRequest()), FormatCapabilities,
                       io);
}

int RunCompare(TrainingClient& client, const CompareRequest& request, const CommandIo& io) {
  std::vector<ComparedRun> runs;
  std::vector<size_t> submitted;  // indexes into runs
  const auto still_running = [&] {
    std::vector<std::string> ids;
    for (size_t index : submitted) ids.push_back(runs[index].job->id());
    if (!ids.empty()) {
      *io.err << "mantissa: submitted jobs keep running: " << absl::StrJoin(ids, ", ") << '\n';
    }
  };

  for (const CompareEntry& entry : request.entries) {
    v1::SubmitJobRequest submit;
    *submit.mutable_spec() = request.spec;
    submit.mutable_spec()->set_precision(entry.precision);
    if (entry.bf16_update) submit.mutable_spec()->set_bf16_update(*entry.bf16_update);
    absl::StatusOr<v1::SubmitJobResponse> response = client.SubmitJob(submit);
    ComparedRun run;
    run.entry = entry.label;
    if (response.ok()) {
      run.job = response->job();
      *io.err << "submitted " << entry.label << " as job " << run.job->id() << '\n';
      submitted.push_back(runs.size());
    } else if (IsConnectionError(response.status())) {
      // Not a refusal of this precision: nothing more can be submitted.
      ReportError(response.status(), io);
      still_running();
      return kExitFailure;
    } else {
      run.refusal = response.status();
      *io.err << entry.label << " refused: " << DescribeError(run.refusal) << '\n';
    }
    runs.push_back(std::move(run));
  }
  io.err->flush();

  // The daemon runs jobs one at a time by default, so following them in
  // submission order also reports them about as they finish.
  size_t finished = 0;
  for (size_t index : submitted) {
    ComparedRun& run = runs[index];
    absl::StatusOr<v1::Job> job = WaitForJob(client, *run.job, io);
    if (!job.ok()) {
      ReportError(job.status(), io);
      still_running();
      return kExitFailure;
    }
    run.job = *std::move(job);
    *io.err << run.entry << ' ' << JobStateName(run.job->state()) << " (" << ++finished << '/'
            << submitted.size() << ")\n"
            << std::flush;
  }

  *io.out << (io.json ? FormatComparisonJson(runs) : FormatComparison(runs)) << std::flush;
  if (submitted.empty()) {
    *io.err << "mantissa: the daemon refused every precision\n";
    return kExitFailure;
  }
  for (size_t index : submitted) {
    if (runs[index].job->state() != v1::SUCCEEDED) return kExitFailure;
  }
  return kExitOk;
}

namespace {

// submit, and compare with its own --precisions in place of these.
void DefineSubmitFlags(ArgParser& parser, SubmitOptions& o) {
  DefineWorkloadFlags(parser, o);
  parser.AddString("precision", &o.precision,
                   "Lightning Fabric precision, e.g. bf16-mixed (default 32-true)");
  DefineTrainingFlags(parser, o);
  // Not a training flag: compare submits one spec per precision, and a
  // resumed job takes the spec of the job it continues.
  parser.AddString("resume-from", &o.resume_from,
                   "continue this ended job from its last checkpoint, as 'mantissa resume' does",
                   "JOB");
  parser.AddBool("wait", &o.wait, "watch the job until it ends; exit 0 only if it succeeds");
}

// submit and resume: send a spec and, with --wait, follow the job.
class SubmitsSpec : public Invocation {
 public:
  Waiting waiting() const override { return waits() ? Waiting::kOneJob : Waiting::kNothing; }
  int Run(const CommandClients& clients, const CommandIo& io) override {
    return RunSubmit(*clients.training, spec_, waits(), io);
  }

 protected:
  virtual bool waits() const = 0;

  v1::JobSpec spec_;
};

class Submit : public SubmitsSpec {
 public:
  void DefineFlags(ArgParser& parser) override { DefineSubmitFlags(parser, options_); }
  absl::Status Prepare(const std::vector<std::string>&) override {
    return Store(BuildJobSpec(options_), spec_);
  }

 private:
  bool waits() const override { return options_.wait; }

  SubmitOptions options_;
};

class Resume : public SubmitsSpec {
 public:
  void DefineFlags(ArgParser& parser) override {
    parser.AddString("name", &options_.name, "label shown by 'mantissa list'", "TEXT");
    parser.AddBool("wait", &options_.wait,
                   "watch the job until it ends; exit 0 only if it succeeds");
  }
  absl::Status Prepare(const std::vector<std::string>& args) override {
    return Store(BuildResumeSpec(args.front(), options_), spec_);
  }

 private:
  bool waits() const override { return options_.wait; }

  ResumeOptions options_;
};

class List : public Invocation {
 public:
  void DefineFlags(ArgParser& parser) override {
    parser.AddRepeated("state", &options_.states,
                       "only jobs in this state: QUEUED, RUNNING, SUCCEEDED, FAILED or "
                       "CANCELLED; repeatable",
                       "STATE");
    parser.AddString("model", &options_.model, "only jobs that train this model", "MODEL");
    parser.AddString("precision", &options_.precision,
                     "only jobs that run in this precision (as they run, e.g. bf16-mixed)",
                     "PRECISION");
    parser.AddString("name", &options_.name, "only jobs with this name", "TEXT");
    parser.AddInt("limit", &options_.limit, "at most N jobs per page (default: all)");
    parser.AddString("page-token", &options_.page_token,
                     "the page that the 'next page:' line of the previous page names", "TOKEN");
  }
  absl::Status Prepare(const std::vector<std::string>&) override {
    return Store(BuildListRequest(options_), request_);
  }
  int Run(const CommandClients& clients, const CommandIo& io) override {
    return RunList(*clients.training, request_, io);
  }

 private:
  ListOptions options_;
  v1::ListJobsRequest request_;
};

class Compare : public Invocation {
 public:
  void DefineFlags(ArgParser& parser) override {
    DefineWorkloadFlags(parser, options_.spec);
    parser.AddString("precisions", &options_.precisions,
                     "comma-separated PRECISION[:UPDATE] entries to compare, in order; required",
                     "LIST");
    DefineTrainingFlags(parser, options_.spec);
  }
  absl::Status Prepare(const std::vector<std::string>&) override {
    return Store(BuildCompareRequest(options_), request_);
  }
  // compare draws no live line; it reports on stderr.
  Waiting waiting() const override { return Waiting::kManyJobs; }
  int Run(const CommandClients& clients, const CommandIo& io) override {
    return RunCompare(*clients.training, request_, io);
  }

 private:
  CompareOptions options_;
  CompareRequest request_;
};

// A command that takes a job id and no flags of its own.
template <int (*kRun)(TrainingClient&, const std::string&, const CommandIo&),
          Waiting kWaiting = Waiting::kNothing>
class OnJob : public Invocation {
 public:
  absl::Status Prepare(const std::vector<std::string>& args) override {
    job_id_ = args.front();
    return absl::OkStatus();
  }
  Waiting waiting() const override { return kWaiting; }
  int Run(const CommandClients& clients, const CommandIo& io) override {
    return kRun(*clients.training, job_id_, io);
  }

 private:
  std::string job_id_;
};

class Capabilities : public Invocation {
 public:
  absl::Status Prepare(const std::vector<std::string>&) override { return absl::OkStatus(); }
  int Run(const CommandClients& clients, const CommandIo& io) override {
    return RunCapabilities(*clients.training, io);
  }
};

constexpr ClientKind kTraining = ClientKind::kTraining;

const CliCommand kTrainingCommands[] = {
    {"submit", "", 0, "submit a training job",
     "Submits a training job. Flags left out take the daemon's defaults, and the\n"
     "daemon validates the spec. With --devices N (and --num-nodes M) the job\n"
     "trains data-parallel on N x M ranks, each on --batch-size items per batch.",
     kTraining, Invoke<Submit>},
    {"resume", "JOB", 1, "continue an ended job from its last checkpoint",
     "Submits a new job that continues JOB, a job that ended before finishing\n"
     "(cancelled or failed), from its last checkpoint. The new job takes JOB's\n"
     "spec; only its name may be set. Checkpoints are written every\n"
     "--checkpoint-every steps, at the end, and when a job is cancelled after its\n"
     "first checkpoint.",
     kTraining, Invoke<Resume>},
    {"get", "JOB", 1, "show a job", "Shows a job: its spec, state, progress and result.", kTraining,
     Invoke<OnJob<RunGet>>},
    {"list", "", 0, "list jobs, newest first",
     "Lists jobs, newest first, from the job store every worker shares. With --limit\n"
     "the jobs come in pages: when older jobs remain, the last line names the\n"
     "--page-token that lists the next page (give it with the same flags).",
     kTraining, Invoke<List>},
    {"cancel", "JOB", 1, "cancel a job",
     "Cancels a job. A queued job is cancelled at once, a running one within one step.", kTraining,
     Invoke<OnJob<RunCancel>>},
    {"watch", "JOB", 1, "follow a job until it ends",
     "Follows a job until it ends. Exits 0 only if the job succeeds.", kTraining,
     Invoke<OnJob<RunWatch, Waiting::kOneJob>>},
    {"capabilities", "", 0, "show what the daemon's device can run",
     "Shows the daemon's device, versions, its worker id and job store, the\n"
     "data-parallel jobs it can run (--devices per node, --num-nodes), and the\n"
     "precisions, models, datasets and optimizers it supports, and what each\n"
     "precision runs as.",
     kTraining, Invoke<Capabilities>},
    {"compare", "", 0, "train once per precision and compare the runs",
     "Submits one job per entry of --precisions, in that order and with the same\n"
     "spec otherwise, waits for them all and prints them side by side: step time,\n"
     "throughput, peak memory against the fp32 baseline, steps the grad scaler\n"
     "skipped, final loss and accuracy; the compensation buffers of bf16-update\n"
     "kahan, and the largest gradient norm of the last progress interval, when the\n"
     "jobs report them. An entry is a precision, or PRECISION:UPDATE with an update\n"
     "rounding for bf16-true and 16-true (nearest, stochastic or kahan), e.g.\n"
     "--precisions=bf16-true,bf16-true:stochastic,bf16-true:kahan. An entry the\n"
     "daemon refuses is listed with its reason while the other jobs still run. Takes\n"
     "every submit flag but --precision, --resume-from and --wait.\n"
     "\n"
     "Exits 0 only if every submitted job succeeds. Ctrl-C stops the waiting; the\n"
     "jobs keep running.",
     kTraining, Invoke<Compare>},
    {"delete", "JOB", 1, "delete an ended job and its checkpoints",
     "Deletes JOB, which must have ended (cancel a queued or running job first), with\n"
     "its record and every checkpoint it wrote. Jobs that ended more than the\n"
     "daemon's --keep_finished_jobs_days ago are deleted automatically.",
     kTraining, Invoke<OnJob<RunDelete>>},
};

}  // namespace

absl::Span<const CliCommand> TrainingCommands() { return kTrainingCommands; }

}  // namespace mantissa::cli
