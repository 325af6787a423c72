#include "server/service/training_service.h"

#include <algorithm>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "server/common/status_macros.h"
#include "server/service/grpc_status.h"

namespace mantissa {
namespace {

grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* context, const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

// The model zoo's TorchScript entry (server/models/model_registry.cc); the
// service stays free of the torch headers that declare it.
constexpr char kTorchScriptModel[] = "torchscript";

constexpr size_t kListJobsBudgetBytes = (4 << 20) - (64 << 10);
// Longer than any stored model, precision or name (Submit caps them), so a
// longer filter can only be a mistake; it is refused before it reaches SQL.
constexpr size_t kMaxListFilterBytes = 256;
// next_page_token: the prefix, then the store sequence the next page starts
// before. Clients pass it back unchanged; the prefix leaves room to change it.
constexpr absl::string_view kPageTokenPrefix = "p";
constexpr size_t kMaxPageTokenBytes = 20;  // the prefix and an int64's digits

std::string EncodePageToken(int64_t before_seq) {
  return before_seq > 0 ? absl::StrCat(kPageTokenPrefix, before_seq) : "";
}

// The before_seq a page token stands for; 0 for none (the newest jobs).
absl::StatusOr<int64_t> DecodePageToken(absl::string_view token) {
  if (token.empty()) return 0;
  absl::string_view digits = token;
  int64_t seq = 0;
  if (token.size() <= kMaxPageTokenBytes && absl::ConsumePrefix(&digits, kPageTokenPrefix) &&
      !digits.empty() && std::all_of(digits.begin(), digits.end(), absl::ascii_isdigit) &&
      absl::SimpleAtoi(digits, &seq) && seq > 0) {
    return seq;
  }
  // Not echoed: it may be anything, of any size.
  return absl::InvalidArgumentError(
      "page_token: is not a next_page_token of ListJobs; pass one back unchanged, or leave it "
      "empty to start from the newest job");
}

absl::Status CheckListFilter(const char* field, const std::string& value) {
  if (value.size() <= kMaxListFilterBytes) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": must be at most ", kMaxListFilterBytes, " bytes, got ", value.size()));
}

absl::StatusOr<std::vector<v1::JobState>> ListStates(const v1::ListJobsRequest& request) {
  std::vector<v1::JobState> states;
  for (int s : request.states()) {
    if (!v1::JobState_IsValid(s) || s == v1::JOB_STATE_UNSPECIFIED) {
      return absl::InvalidArgumentError(absl::StrCat(
          "states: ", s,
          " is not a job state; valid states: QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED"));
    }
    states.push_back(static_cast<v1::JobState>(s));
  }
  return states;
}

absl::StatusOr<JobQuery> ListQuery(const v1::ListJobsRequest& request, const Caller& caller) {
  JobQuery query;
  ASSIGN_OR_RETURN(query.states, ListStates(request));
  if (request.limit() < 0) {
    return absl::InvalidArgumentError(absl::StrCat("limit: must be >= 0, got ", request.limit()));
  }
  query.limit = request.limit();
  RETURN_IF_ERROR(CheckListFilter("model", request.model()));
  RETURN_IF_ERROR(CheckListFilter("precision", request.precision()));
  RETURN_IF_ERROR(CheckListFilter("name", request.name()));
  query.model = request.model();
  query.precision = request.precision();
  query.name = request.name();
  ASSIGN_OR_RETURN(query.before_seq, DecodePageToken(request.page_token()));
  // train principals list only their own jobs; everyone else lists all.
  if (!caller.SeesAllJobs()) query.principal = caller.principal;
  return query;
}

// How many of `jobs`, from the first, fit in what every gRPC client accepts
// by default (4 MiB).
size_t JobsWithinBudget(const std::vector<v1::Job>& jobs) {
  size_t bytes = 0;
  for (size_t i = 0; i < jobs.size(); ++i) {
    bytes += jobs[i].ByteSizeLong() + 8;  // with its tag and length
    if (bytes > kListJobsBudgetBytes) return i;
  }
  return jobs.size();
}

struct BudgetedPage {
  JobPage page;
  int64_t left_out = 0;  // jobs the page was cut short by: the next page starts with them
  int64_t skipped = 0;   // jobs larger than any answer, stepped over
};

// One page of `query` that fits in an answer: a long history, or records from
// before the field caps, must not make the listing fail for good. A page that
// does not fit is asked for again with only the jobs that fit, so that the
// store's cursor falls right after the last job returned and the next page
// misses none. Each retry asks for fewer jobs, so the loop ends.
absl::StatusOr<BudgetedPage> ListWithinBudget(JobManager& manager, JobQuery query) {
  BudgetedPage result;
  std::optional<size_t> first_size;
  for (;;) {
    ASSIGN_OR_RETURN(result.page, manager.List(query));
    const size_t size = result.page.jobs.size();
    if (!first_size) first_size = size;
    const size_t fit = JobsWithinBudget(result.page.jobs);
    if (fit == 0 && size == 1) {
      // The newest job alone is larger than any answer: step over it.
      result.page.jobs.clear();
      result.skipped = 1;
    }
    if (fit == size || result.skipped > 0) {
      const size_t shown = result.page.jobs.size() + result.skipped;
      result.left_out = *first_size > shown ? *first_size - shown : 0;
      return result;
    }
    query.limit = fit > 0 ? static_cast<int>(fit) : 1;
  }
}

absl::Status RequireJobId(const std::string& id) {
  if (id.empty()) return absl::InvalidArgumentError("job_id: is required");
  // Ids are 12 hex digits; a longer one is not echoed back in errors.
  if (id.size() > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("job_id: must be at most 64 bytes, got ", id.size()));
  }
  return absl::OkStatus();
}

// Streams one job's events. JobManager calls OnJobEvent (under its lock) from
// whichever thread changed the job; gRPC calls OnWriteDone/OnCancel/OnDone on
// its own threads. Events queue here until the previous write completes, and
// no lock is held while calling into gRPC.
class WatchJobReactor final : public grpc::ServerWriteReactor<v1::JobEvent>, public JobWatcher {
 public:
  WatchJobReactor(JobManager* manager, std::string job_id)
      : manager_(manager), job_id_(std::move(job_id)) {}

  void Start() {
    absl::Status status = manager_->Watch(job_id_, this);
    if (!status.ok()) FinishUnlessDone(ToGrpcStatus(status));
  }

  void OnJobEvent(const v1::JobEvent& event) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (done_ || cancelled_) return;
      // A slow client does not need every progress tick: keep the newest.
      if (event.type() == v1::JobEvent::PROGRESS && !pending_.empty() &&
          pending_.back().type() == v1::JobEvent::PROGRESS) {
        pending_.back() = event;
      } else {
        pending_.push_back(event);
      }
      if (writing_) return;
      writing_ = true;
      TakeNextLocked();
    }
    WriteCurrent();
  }

  void OnWriteDone(bool ok) override {
    bool write_next = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (done_) return;  // that was the final write
      write_next = ok && !cancelled_;
      if (write_next && pending_.empty()) {
        writing_ = false;
        return;
      }
      if (write_next) {
        TakeNextLocked();
      } else {
        writing_ = false;
      }
    }
    if (write_next) {
      WriteCurrent();
    } else {
      FinishUnlessDone(grpc::Status(grpc::StatusCode::CANCELLED, "client stopped watching"));
    }
  }

  void OnCancel() override {
    bool finish = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancelled_ = true;
      finish = !writing_;  // otherwise OnWriteDone finishes
    }
    if (finish) FinishUnlessDone(grpc::Status(grpc::StatusCode::CANCELLED, "watch cancelled"));
  }

  void OnDone() override {
    manager_->Unwatch(job_id_, this);
    delete this;
  }

 private:
  void TakeNextLocked() {
    current_ = std::move(pending_.front());
    pending_.pop_front();
    // FINISHED is written with the stream's final status in one operation.
    if (current_.type() == v1::JobEvent::FINISHED) done_ = true;
  }

  void WriteCurrent() {
    if (current_.type() == v1::JobEvent::FINISHED) {
      StartWriteAndFinish(&current_, grpc::WriteOptions(), grpc::Status::OK);
    } else {
      StartWrite(&current_);
    }
  }

  void FinishUnlessDone(const grpc::Status& status) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (done_) return;
      done_ = true;
    }
    Finish(status);
  }

  JobManager* const manager_;
  const std::string job_id_;
  std::mutex mu_;
  std::deque<v1::JobEvent> pending_;  // guarded by mu_
  v1::JobEvent current_;              // the event being written
  bool writing_ = false;              // guarded by mu_: a write is in flight
  bool done_ = false;                 // guarded by mu_: the final operation was issued
  bool cancelled_ = false;            // guarded by mu_
};

}  // namespace

absl::StatusOr<v1::Job> TrainingService::VisibleJob(const Caller& caller, const std::string& id,
                                                    const char* field) {
  absl::StatusOr<v1::Job> job = manager_->Get(id);
  if (job.ok() && !caller.MaySeeJob(job->principal())) {
    return absl::NotFoundError(absl::StrCat(field, ": no job '", id, "'"));
  }
  return job;
}

grpc::ServerUnaryReactor* TrainingService::SubmitJob(grpc::CallbackServerContext* context,
                                                     const v1::SubmitJobRequest* request,
                                                     v1::SubmitJobResponse* response) {
  absl::StatusOr<Caller> caller = authorizer_->Authorize(*context, Permission::kSubmitJobs,
                                                         "mantissa.v1.TrainingService/SubmitJob");
  if (!caller.ok()) return Finish(context, caller.status());
  // The model a job trains: its own, or that of the job it resumes.
  std::string model = request->spec().model();
  // A resume_from longer than any id is refused by Submit, without echoing it.
  if (const std::string& source = request->spec().resume_from();
      !source.empty() && RequireJobId(source).ok()) {
    absl::StatusOr<v1::Job> visible = VisibleJob(*caller, source, "resume_from");
    if (absl::IsNotFound(visible.status())) {
      // Hidden and missing jobs read alike.
      return Finish(context,
                    absl::NotFoundError(absl::StrCat("resume_from: no job '", source, "'")));
    }
    if (visible.ok()) model = visible->spec().model();
  }
  // A TorchScript module is code that runs with the daemon's rights: only an
  // admin may train one, as only an admin may register one.
  if (model == kTorchScriptModel) {
    absl::StatusOr<Caller> admin =
        authorizer_->Authorize(*context, Permission::kAdminister,
                               "mantissa.v1.TrainingService/SubmitJob (model torchscript)");
    if (!admin.ok()) return Finish(context, admin.status());
  }
  absl::StatusOr<v1::Job> job = manager_->Submit(request->spec(), caller->principal);
  if (job.ok()) *response->mutable_job() = *std::move(job);
  return Finish(context, job.status());
}

grpc::ServerUnaryReactor* TrainingService::GetJob(grpc::CallbackServerContext* context,
                                                  const v1::GetJobRequest* request,
                                                  v1::GetJobResponse* response) {
  absl::StatusOr<Caller> caller =
      authorizer_->Authorize(*context, Permission::kReadJobs, "mantissa.v1.TrainingService/GetJob");
  if (!caller.ok()) return Finish(context, caller.status());
  absl::Status status = RequireJobId(request->job_id());
  if (status.ok()) {
    absl::StatusOr<v1::Job> job = VisibleJob(*caller, request->job_id());
    if (job.ok()) *response->mutable_job() = *std::move(job);
    status = job.status();
  }
  return Finish(context, status);
}

grpc::ServerUnaryReactor* TrainingService::ListJobs(grpc::CallbackServerContext* context,
                                                    const v1::ListJobsRequest* request,
                                                    v1::ListJobsResponse* response) {
  absl::StatusOr<Caller> caller = authorizer_->Authorize(*context, Permission::kReadJobs,
                                                         "mantissa.v1.TrainingService/ListJobs");
  if (!caller.ok()) return Finish(context, caller.status());
  absl::StatusOr<JobQuery> query = ListQuery(*request, *caller);
  if (!query.ok()) return Finish(context, query.status());
  absl::StatusOr<BudgetedPage> listed = ListWithinBudget(*manager_, *std::move(query));
  if (!listed.ok()) return Finish(context, listed.status());
  for (v1::Job& job : listed->page.jobs) *response->add_jobs() = std::move(job);
  response->set_next_page_token(EncodePageToken(listed->page.next_before_seq));
  if (listed->left_out > 0) {
    context->AddTrailingMetadata(kJobsLeftOutMetadata, absl::StrCat(listed->left_out));
  }
  if (listed->skipped > 0) {
    context->AddTrailingMetadata(kJobsSkippedMetadata, absl::StrCat(listed->skipped));
  }
  return Finish(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* TrainingService::CancelJob(grpc::CallbackServerContext* context,
                                                     const v1::CancelJobRequest* request,
                                                     v1::CancelJobResponse* response) {
  absl::StatusOr<Caller> caller = authorizer_->Authorize(*context, Permission::kSubmitJobs,
                                                         "mantissa.v1.TrainingService/CancelJob");
  if (!caller.ok()) return Finish(context, caller.status());
  absl::Status status = RequireJobId(request->job_id());
  if (status.ok()) status = VisibleJob(*caller, request->job_id()).status();
  if (status.ok()) {
    absl::StatusOr<v1::Job> job = manager_->Cancel(request->job_id());
    if (job.ok()) *response->mutable_job() = *std::move(job);
    status = job.status();
  }
  return Finish(context, status);
}

grpc::ServerUnaryReactor* TrainingService::DeleteJob(grpc::CallbackServerContext* context,
                                                     const v1::DeleteJobRequest* request,
                                                     v1::DeleteJobResponse* response) {
  absl::StatusOr<Caller> caller = authorizer_->Authorize(*context, Permission::kSubmitJobs,
                                                         "mantissa.v1.TrainingService/DeleteJob");
  if (!caller.ok()) return Finish(context, caller.status());
  absl::Status status = RequireJobId(request->job_id());
  if (status.ok()) status = VisibleJob(*caller, request->job_id()).status();
  if (status.ok()) status = manager_->Delete(request->job_id());
  return Finish(context, status);
}

grpc::ServerWriteReactor<v1::JobEvent>* TrainingService::WatchJob(
    grpc::CallbackServerContext* context, const v1::WatchJobRequest* request) {
  auto* reactor = new WatchJobReactor(manager_, request->job_id());
  absl::StatusOr<Caller> caller = authorizer_->Authorize(*context, Permission::kReadJobs,
                                                         "mantissa.v1.TrainingService/WatchJob");
  absl::Status status = caller.status();
  if (status.ok()) status = RequireJobId(request->job_id());
  if (status.ok()) status = VisibleJob(*caller, request->job_id()).status();
  if (!status.ok()) {
    reactor->Finish(ToGrpcStatus(status));
    return reactor;
  }
  reactor->Start();
  return reactor;
}

grpc::ServerUnaryReactor* TrainingService::GetCapabilities(
    grpc::CallbackServerContext* context, const v1::GetCapabilitiesRequest* request,
    v1::GetCapabilitiesResponse* response) {
  absl::StatusOr<Caller> caller = authorizer_->Authorize(
      *context, Permission::kCapabilities, "mantissa.v1.TrainingService/GetCapabilities");
  if (!caller.ok()) return Finish(context, caller.status());
  *response = manager_->Capabilities();
  return Finish(context, absl::OkStatus());
}

}  // namespace mantissa
