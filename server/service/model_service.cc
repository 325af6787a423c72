#include "server/service/model_service.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "server/service/unary_reactors.h"

namespace mantissa {

grpc::ServerUnaryReactor* ModelService::ExportModel(grpc::CallbackServerContext* context,
                                                    const v1::ExportModelRequest* request,
                                                    v1::ExportModelResponse* response) {
  if (absl::Status status = RequireField("job_id", request->job_id()); !status.ok()) {
    return FinishNow(context, status);
  }
  absl::StatusOr<v1::Job> job = manager_->Get(request->job_id());
  if (!job.ok()) return FinishNow(context, job.status());
  if (job->state() != v1::SUCCEEDED) {
    return FinishNow(context,
                     absl::FailedPreconditionError(absl::StrCat(
                         "job_id: job ", request->job_id(), " is ", v1::JobState_Name(job->state()),
                         "; only a SUCCEEDED job's final weights can be exported")));
  }
  if (absl::Status status = RequireField("name", request->name()); !status.ok()) {
    return FinishNow(context, status);
  }
  return FinishOnExecutor(
      context, executor_, [this, job = *std::move(job), request, response]() -> absl::Status {
        absl::StatusOr<v1::ModelVersionStatus> model = server_->Export(job, *request);
        if (!model.ok()) return model.status();
        *response->mutable_model() = *std::move(model);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* ModelService::RegisterModel(grpc::CallbackServerContext* context,
                                                      const v1::RegisterModelRequest* request,
                                                      v1::RegisterModelResponse* response) {
  if (absl::Status status = RequireField("name", request->name()); !status.ok()) {
    return FinishNow(context, status);
  }
  if (absl::Status status = RequireField("torchscript_path", request->torchscript_path());
      !status.ok()) {
    return FinishNow(context, status);
  }
  return FinishOnExecutor(context, executor_, [this, request, response]() -> absl::Status {
    absl::StatusOr<v1::ModelVersionStatus> model = server_->Register(*request);
    if (!model.ok()) return model.status();
    *response->mutable_model() = *std::move(model);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ModelService::ListModels(grpc::CallbackServerContext* context,
                                                   const v1::ListModelsRequest* request,
                                                   v1::ListModelsResponse* response) {
  for (v1::ModelStatus& model : server_->List()) *response->add_models() = std::move(model);
  return FinishNow(context, absl::OkStatus());
}

}  // namespace mantissa
