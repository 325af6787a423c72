#include "server/service/training_service.h"

#include <deque>
#include <mutex>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/service/grpc_status.h"

namespace mantissa {
namespace {

grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* context, const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

absl::Status RequireJobId(const std::string& id) {
  if (id.empty()) return absl::InvalidArgumentError("job_id: is required");
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

grpc::ServerUnaryReactor* TrainingService::SubmitJob(grpc::CallbackServerContext* context,
                                                     const v1::SubmitJobRequest* request,
                                                     v1::SubmitJobResponse* response) {
  absl::StatusOr<v1::Job> job = manager_->Submit(request->spec());
  if (job.ok()) *response->mutable_job() = *std::move(job);
  return Finish(context, job.status());
}

grpc::ServerUnaryReactor* TrainingService::GetJob(grpc::CallbackServerContext* context,
                                                  const v1::GetJobRequest* request,
                                                  v1::GetJobResponse* response) {
  absl::Status status = RequireJobId(request->job_id());
  if (status.ok()) {
    absl::StatusOr<v1::Job> job = manager_->Get(request->job_id());
    if (job.ok()) *response->mutable_job() = *std::move(job);
    status = job.status();
  }
  return Finish(context, status);
}

grpc::ServerUnaryReactor* TrainingService::ListJobs(grpc::CallbackServerContext* context,
                                                    const v1::ListJobsRequest* request,
                                                    v1::ListJobsResponse* response) {
  std::vector<v1::JobState> states;
  for (int s : request->states()) {
    if (!v1::JobState_IsValid(s) || s == v1::JOB_STATE_UNSPECIFIED) {
      return Finish(context, absl::InvalidArgumentError(
                                 absl::StrCat("states: ", s,
                                              " is not a job state; valid states: QUEUED, RUNNING, "
                                              "SUCCEEDED, FAILED, CANCELLED")));
    }
    states.push_back(static_cast<v1::JobState>(s));
  }
  if (request->limit() < 0) {
    return Finish(context, absl::InvalidArgumentError(
                               absl::StrCat("limit: must be >= 0, got ", request->limit())));
  }
  absl::StatusOr<std::vector<v1::Job>> jobs = manager_->List(states, request->limit());
  if (jobs.ok()) {
    for (v1::Job& job : *jobs) *response->add_jobs() = std::move(job);
  }
  return Finish(context, jobs.status());
}

grpc::ServerUnaryReactor* TrainingService::CancelJob(grpc::CallbackServerContext* context,
                                                     const v1::CancelJobRequest* request,
                                                     v1::CancelJobResponse* response) {
  absl::Status status = RequireJobId(request->job_id());
  if (status.ok()) {
    absl::StatusOr<v1::Job> job = manager_->Cancel(request->job_id());
    if (job.ok()) *response->mutable_job() = *std::move(job);
    status = job.status();
  }
  return Finish(context, status);
}

grpc::ServerWriteReactor<v1::JobEvent>* TrainingService::WatchJob(
    grpc::CallbackServerContext* context, const v1::WatchJobRequest* request) {
  auto* reactor = new WatchJobReactor(manager_, request->job_id());
  if (absl::Status status = RequireJobId(request->job_id()); !status.ok()) {
    reactor->Finish(ToGrpcStatus(status));
    return reactor;
  }
  reactor->Start();
  return reactor;
}

grpc::ServerUnaryReactor* TrainingService::GetCapabilities(
    grpc::CallbackServerContext* context, const v1::GetCapabilitiesRequest* request,
    v1::GetCapabilitiesResponse* response) {
  *response = manager_->Capabilities();
  return Finish(context, absl::OkStatus());
}

}  // namespace mantissa
