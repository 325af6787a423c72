#include "client/commands.h"

#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "client/capabilities_format.h"
#include "client/job_format.h"
#include "client/watch_printer.h"
#include "google/protobuf/message.h"
#include "google/protobuf/util/json_util.h"

namespace mantissa::cli {
namespace {

std::string ToJson(const google::protobuf::Message& message, bool pretty) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = pretty;
  // Scripts read fields like progress.step even while they are still 0.
  options.always_print_primitive_fields = true;
  std::string json;
  if (!google::protobuf::util::MessageToJsonString(message, &json, options).ok()) {
    // Only reachable for messages that cannot be mapped (none of ours); a
    // debug rendering beats printing nothing.
    return message.ShortDebugString();
  }
  while (!json.empty() && json.back() == '\n') json.pop_back();
  return json;
}

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

}  // namespace mantissa::cli
