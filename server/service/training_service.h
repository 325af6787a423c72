#ifndef MANTISSA_SERVER_SERVICE_TRAINING_SERVICE_H_
#define MANTISSA_SERVER_SERVICE_TRAINING_SERVICE_H_

#include "mantissa/v1/training.grpc.pb.h"
#include "server/jobs/job_manager.h"

namespace mantissa {

// mantissa.v1.TrainingService on gRPC's callback API. Each handler validates,
// delegates to the JobManager and converts its Status; none of them trains or
// waits on training, so reactors stay free. The manager outlives the service.
class TrainingService final : public v1::TrainingService::CallbackService {
 public:
  explicit TrainingService(JobManager* manager) : manager_(manager) {}

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
  grpc::ServerUnaryReactor* GetCapabilities(grpc::CallbackServerContext* context,
                                            const v1::GetCapabilitiesRequest* request,
                                            v1::GetCapabilitiesResponse* response) override;

 private:
  JobManager* const manager_;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_SERVICE_TRAINING_SERVICE_H_
