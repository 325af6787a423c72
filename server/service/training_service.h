#ifndef MANTISSA_SERVER_SERVICE_TRAINING_SERVICE_H_
#define MANTISSA_SERVER_SERVICE_TRAINING_SERVICE_H_

#include "mantissa/v1/training.grpc.pb.h"
#include "server/jobs/job_manager.h"
#include "server/service/authorizer.h"

namespace mantissa {

// Trailing metadata of a ListJobs answer cut short to stay within 4 MiB: how
// many older jobs of the page were left out (the next page starts with them).
inline constexpr char kJobsLeftOutMetadata[] = "mantissa-jobs-left-out";
// Trailing metadata of a ListJobs answer that stepped past a job whose record
// alone is larger than 4 MiB: how many were skipped (they are never listed).
inline constexpr char kJobsSkippedMetadata[] = "mantissa-jobs-skipped";

// mantissa.v1.TrainingService on gRPC's callback API. Each handler validates,
// delegates to the JobManager and converts its Status; none of them trains or
// waits on training, so reactors stay free. Every handler first asks
// `authorizer` (nullptr: allow all); train principals see only their own
// jobs. The manager answers from the job store that every worker shares, so
// any worker answers for any job. The manager and the authorizer outlive the
// service.
class TrainingService final : public v1::TrainingService::CallbackService {
 public:
  explicit TrainingService(JobManager* manager, const Authorizer* authorizer = nullptr)
      : manager_(manager),
        authorizer_(authorizer != nullptr ? authorizer : Authorizer::AllowAll()) {}

  grpc::ServerUnaryReactor* SubmitJob(grpc::CallbackServerContext* context,
                                      const v1::SubmitJobRequest* request,
                                      v1::SubmitJobResponse* response) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* context,
                                   const v1::GetJobRequest* request,
                                   v1::GetJobResponse* response) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* context,
                                     const v1::ListJobsRequest* request,
                                     v1::ListJobsResponse* response) override;
  grpc::ServerUnaryReactor* CancelJob(grpc::CallbackServerContext* context,
                                      const v1::CancelJobRequest* request,
                                      v1::CancelJobResponse* response) override;
  grpc::ServerWriteReactor<v1::JobEvent>* WatchJob(grpc::CallbackServerContext* context,
                                                   const v1::WatchJobRequest* request) override;
  grpc::ServerUnaryReactor* DeleteJob(grpc::CallbackServerContext* context,
                                      const v1::DeleteJobRequest* request,
                                      v1::DeleteJobResponse* response) override;
  grpc::ServerUnaryReactor* GetCapabilities(grpc::CallbackServerContext* context,
                                            const v1::GetCapabilitiesRequest* request,
                                            v1::GetCapabilitiesResponse* response) override;

 private:
  // The job `id` if `caller` may see it; NOT_FOUND, as for a missing job,
  // when it may not.
  absl::StatusOr<v1::Job> VisibleJob(const Caller& caller, const std::string& id,
                                     const char* field = "job_id");

  JobManager* const manager_;
  const Authorizer* const authorizer_;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_SERVICE_TRAINING_SERVICE_H_
