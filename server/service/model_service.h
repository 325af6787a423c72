#ifndef MANTISSA_SERVER_SERVICE_MODEL_SERVICE_H_
#define MANTISSA_SERVER_SERVICE_MODEL_SERVICE_H_

#include "mantissa/v1/serving.grpc.pb.h"
#include "server/jobs/job_manager.h"
#include "server/service/authorizer.h"
#include "server/service/blocking_executor.h"
#include "server/serving/model_server.h"

namespace mantissa {

// mantissa.v1.ModelService on gRPC's callback API: exports jobs and registers
// TorchScript files into the model repository, and lists it. Exports and
// registrations load the new version (cast + validation, seconds), so they
// run on `executor`; ListModels is a map read answered on the reactor. The
// manager, the server, the executor and `authorizer` (nullptr: allow all),
// which every handler asks first, outlive the service.
class ModelService final : public v1::ModelService::CallbackService {
 public:
  ModelService(JobManager* manager, ModelServer* server, BlockingExecutor* executor,
               const Authorizer* authorizer = nullptr)
      : manager_(manager),
        server_(server),
        executor_(executor),
        authorizer_(authorizer != nullptr ? authorizer : Authorizer::AllowAll()) {}

  grpc::ServerUnaryReactor* ExportModel(grpc::CallbackServerContext* context,
                                        const v1::ExportModelRequest* request,
                                        v1::ExportModelResponse* response) override;
  grpc::ServerUnaryReactor* RegisterModel(grpc::CallbackServerContext* context,
                                          const v1::RegisterModelRequest* request,
                                          v1::RegisterModelResponse* response) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const v1::ListModelsRequest* request,
                                       v1::ListModelsResponse* response) override;
  // Removes files and waits for the model's loads: runs on `executor`.
  grpc::ServerUnaryReactor* DeleteModelVersion(grpc::CallbackServerContext* context,
                                               const v1::DeleteModelVersionRequest* request,
                                               v1::DeleteModelVersionResponse* response) override;
  // Load and unload versions (casts and validations, seconds): run on
  // `executor`.
  grpc::ServerUnaryReactor* SetVersionPolicy(grpc::CallbackServerContext* context,
                                             const v1::SetVersionPolicyRequest* request,
                                             v1::SetVersionPolicyResponse* response) override;
  grpc::ServerUnaryReactor* RollbackModel(grpc::CallbackServerContext* context,
                                          const v1::RollbackModelRequest* request,
                                          v1::RollbackModelResponse* response) override;

 private:
  // OK unless `caller` is limited to its own jobs and `name` has a version
  // it did not export: a train principal must not replace what others serve.
  absl::Status MayAddVersionTo(const Caller& caller, const std::string& name) const;

  JobManager* const manager_;
  ModelServer* const server_;
  BlockingExecutor* const executor_;
  const Authorizer* const authorizer_;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_SERVICE_MODEL_SERVICE_H_
