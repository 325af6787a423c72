#include "client/commands.h"

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
#include "client/json_format.h"
#include "client/watch_printer.h"
#include "google/protobuf/message.h"

namespace mantissa::cli {
namespace {

void PrintJson(const google::protobuf::Message& message, bool pretty, const CommandIo& io) {
  *io.out << ToJson(message, pretty) << '\n' << std::flush;
}

absl::Status AddOptions(absl::string_view flag, const std::vector<std::string>& pairs,
                        google::protobuf::Map<std::string, std::string>* options) {
  for (const std::string& pair : pairs) {
    const size_t eq = pair.find('=');
    if (eq == std::string::npos || eq == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, ": '", pair, "' is not KEY=VALUE"));
    }
    const std::string key = pair.substr(0, eq);
    if (options->count(key) > 0) {
      return absl::InvalidArgumentError(absl::StrCat("--", flag, ": '", key, "' is given twice"));
    }
    (*options)[key] = pair.substr(eq + 1);
  }
  return absl::OkStatus();
}

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

absl::StatusOr<v1::JobSpec> BuildJobSpec(const SubmitOptions& options) {
  v1::JobSpec spec;
  if (options.model) spec.set_model(*options.model);
  if (options.dataset) spec.set_dataset(*options.dataset);
  if (options.precision) spec.set_precision(*options.precision);
  if (options.steps) spec.set_steps(*options.steps);
  if (options.epochs) spec.set_epochs(*options.epochs);
  if (options.batch_size) spec.set_batch_size(*options.batch_size);
  if (options.optimizer) spec.set_optimizer(*options.optimizer);
  if (options.lr) spec.set_lr(*options.lr);
  if (options.weight_decay) spec.set_weight_decay(*options.weight_decay);
  if (options.momentum) spec.set_momentum(*options.momentum);
  if (options.seed) spec.set_seed(*options.seed);
  if (options.name) spec.set_name(*options.name);
  if (options.progress_every_n_steps) {
    spec.set_progress_every_n_steps(*options.progress_every_n_steps);
  }
  if (options.eval_every_n_steps)
    spec.mutable_eval()->set_every_n_steps(*options.eval_every_n_steps);
  if (options.eval_max_batches) spec.mutable_eval()->set_max_batches(*options.eval_max_batches);
  if (options.eval_batch_size) spec.mutable_eval()->set_batch_size(*options.eval_batch_size);
  if (options.no_eval) spec.mutable_eval()->set_disabled(true);
  if (options.eps) spec.set_eps(*options.eps);
  if (options.gradient_clip_norm) spec.set_gradient_clip_norm(*options.gradient_clip_norm);
  if (options.lr_schedule) spec.set_lr_schedule(*options.lr_schedule);
  if (options.warmup_steps) spec.set_warmup_steps(*options.warmup_steps);
  if (options.min_lr) spec.set_min_lr(*options.min_lr);
  if (options.memory_baseline_steps) spec.set_memory_baseline_steps(*options.memory_baseline_steps);
  if (options.nesterov) spec.set_nesterov(*options.nesterov);
  if (options.accumulate_grad_batches) {
    spec.set_accumulate_grad_batches(*options.accumulate_grad_batches);
  }
  if (options.checkpoint_every_n_steps) {
    spec.set_checkpoint_every_n_steps(*options.checkpoint_every_n_steps);
  }
  if (options.max_duration) {
    absl::Duration duration;
    if (!absl::ParseDuration(*options.max_duration, &duration) ||
        duration <= absl::ZeroDuration() || duration == absl::InfiniteDuration()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--max-duration: '", *options.max_duration,
                       "' is not a positive duration; write e.g. 90s, 30m, 2h or 1h30m"));
    }
    const int64_t nanos = absl::ToInt64Nanoseconds(duration);
    spec.mutable_max_duration()->set_seconds(nanos / 1'000'000'000);
    spec.mutable_max_duration()->set_nanos(static_cast<int32_t>(nanos % 1'000'000'000));
  }
  if (options.keep_checkpoints) spec.set_keep_checkpoints(*options.keep_checkpoints);
  if (options.resume_from) {
    // An empty id would read as "no resume" and start a fresh job instead.
    if (absl::StripAsciiWhitespace(*options.resume_from).empty()) {
      return absl::InvalidArgumentError("--resume-from is empty; give the id of the job to resume");
    }
    spec.set_resume_from(*options.resume_from);
  }
  v1::GradScalerSettings& scaler = *spec.mutable_grad_scaler();
  if (options.grad_scaler_enabled) scaler.set_enabled(*options.grad_scaler_enabled);
  if (options.grad_scaler_init_scale) scaler.set_init_scale(*options.grad_scaler_init_scale);
  if (options.grad_scaler_growth_factor) {
    scaler.set_growth_factor(*options.grad_scaler_growth_factor);
  }
  if (options.grad_scaler_backoff_factor) {
    scaler.set_backoff_factor(*options.grad_scaler_backoff_factor);
  }
  if (options.grad_scaler_growth_interval) {
    scaler.set_growth_interval(*options.grad_scaler_growth_interval);
  }
  // Leave the message out entirely when no scaler flag was given.
  if (scaler.ByteSizeLong() == 0) spec.clear_grad_scaler();
  v1::Fp8Recipe& fp8 = *spec.mutable_fp8();
  if (options.fp8_format) fp8.set_fp8_format(*options.fp8_format);
  if (options.fp8_amax_history_len) fp8.set_amax_history_len(*options.fp8_amax_history_len);
  if (options.fp8_amax_compute_algo) fp8.set_amax_compute_algo(*options.fp8_amax_compute_algo);
  if (options.fp8_margin) fp8.set_margin(*options.fp8_margin);
  if (fp8.ByteSizeLong() == 0) spec.clear_fp8();
  if (options.cuda_graph) spec.set_cuda_graph(*options.cuda_graph);
  if (absl::Status status =
          AddOptions("model-option", options.model_options, spec.mutable_model_options());
      !status.ok()) {
    return status;
  }
  if (absl::Status status =
          AddOptions("dataset-option", options.dataset_options, spec.mutable_dataset_options());
      !status.ok()) {
    return status;
  }
  return spec;
}

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
    if (*options.limit < std::numeric_limits<int32_t>::min() ||
        *options.limit > std::numeric_limits<int32_t>::max()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--limit: '", *options.limit, "' is out of range"));
    }
    request.set_limit(static_cast<int32_t>(*options.limit));
  }
  return request;
}

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
  for (absl::string_view entry : absl::StrSplit(*options.precisions, ',')) {
    const std::string precision(absl::StripAsciiWhitespace(entry));
    if (precision.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--precisions: '", *options.precisions, "' has an empty entry"));
    }
    // Rows are told apart by precision, so each may appear once.
    if (!seen.insert(precision).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("--precisions: '", precision, "' is given twice"));
    }
    request.precisions.push_back(precision);
  }
  absl::StatusOr<v1::JobSpec> spec = BuildJobSpec(options.spec);
  if (!spec.ok()) return spec.status();
  request.spec = *std::move(spec);
  request.spec.clear_precision();
  return request;
}

int ReportError(const absl::Status& status, const CommandIo& io) {
  *io.err << "mantissa: " << DescribeError(status) << '\n' << std::flush;
  return kExitFailure;
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
  absl::StatusOr<v1::GetJobResponse> response = client.GetJob(request);
  if (!response.ok()) return ReportError(response.status(), io);
  if (io.json) {
    PrintJson(*response, /*pretty=*/true, io);
  } else {
    *io.out << FormatJob(response->job(), io.time_zone);
  }
  return kExitOk;
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
  if (client.list_jobs_left_out() > 0) {
    *io.err << "mantissa: " << client.list_jobs_left_out()
            << " older job(s) not shown: the answer is capped at 4 MiB; narrow it with --state "
               "or --limit, or delete old jobs\n";
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
  absl::StatusOr<v1::GetCapabilitiesResponse> response =
      client.GetCapabilities(v1::GetCapabilitiesRequest());
  if (!response.ok()) return ReportError(response.status(), io);
  if (io.json) {
    PrintJson(*response, /*pretty=*/true, io);
  } else {
    *io.out << FormatCapabilities(*response);
  }
  return kExitOk;
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

  for (const std::string& precision : request.precisions) {
    v1::SubmitJobRequest submit;
    *submit.mutable_spec() = request.spec;
    submit.mutable_spec()->set_precision(precision);
    absl::StatusOr<v1::SubmitJobResponse> response = client.SubmitJob(submit);
    ComparedRun run;
    run.precision = precision;
    if (response.ok()) {
      run.job = response->job();
      *io.err << "submitted " << precision << " as job " << run.job->id() << '\n';
      submitted.push_back(runs.size());
    } else if (IsConnectionError(response.status())) {
      // Not a refusal of this precision: nothing more can be submitted.
      ReportError(response.status(), io);
      still_running();
      return kExitFailure;
    } else {
      run.refusal = response.status();
      *io.err << precision << " refused: " << DescribeError(run.refusal) << '\n';
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
    *io.err << run.precision << ' ' << JobStateName(run.job->state()) << " (" << ++finished << '/'
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

}  // namespace mantissa::cli
