#include "server/service/model_service.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "server/service/unary_reactors.h"

namespace mantissa {

grpc::ServerUnaryReactor* ModelService::ExportModel(grpc::CallbackServerContext* context,
                                                    const v1::ExportModelRequest* request,
                                                    v1::ExportModelResponse* response) {
  absl::StatusOr<Caller> caller = authorizer_->Authorize(*context, Permission::kExportJobs,
                                                         "mantissa.v1.ModelService/ExportModel");
  if (!caller.ok()) return FinishNow(context, caller.status());
  if (absl::Status status = RequireField("job_id", request->job_id()); !status.ok()) {
    return FinishNow(context, status);
  }
  absl::StatusOr<v1::Job> job = manager_->Get(request->job_id());
  if (job.ok() && !caller->MaySeeJob(job->principal())) {
    // Another principal's job reads as a missing one.
    job = absl::NotFoundError(absl::StrCat("job_id: no job '", request->job_id(), "'"));
  }
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
  if (absl::Status status = MayAddVersionTo(*caller, request->name()); !status.ok()) {
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

absl::Status ModelService::MayAddVersionTo(const Caller& caller, const std::string& name) const {
  if (caller.SeesAllJobs()) return absl::OkStatus();
  for (const v1::ModelStatus& model : server_->List()) {
    if (model.name() != name) continue;
    for (const v1::ModelVersionStatus& version : model.versions()) {
      // A registered module has no source job; a deleted job has no owner.
      const std::string& source = version.config().source_job_id();
      absl::StatusOr<v1::Job> job =
          source.empty() ? absl::NotFoundError("no source job") : manager_->Get(source);
      if (!job.ok() || job->principal() != caller.principal) {
        return absl::PermissionDeniedError(absl::StrCat(
            "name: model '", name, "' has versions that principal ", caller.principal,
            " did not export; a train principal may add versions only to its own models "
            "(choose another name, or ask an admin)"));
      }
    }
  }
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* ModelService::RegisterModel(grpc::CallbackServerContext* context,
                                                      const v1::RegisterModelRequest* request,
                                                      v1::RegisterModelResponse* response) {
  // A TorchScript module runs arbitrary code with the daemon's rights: admin only.
  absl::StatusOr<Caller> caller = authorizer_->Authorize(*context, Permission::kAdminister,
                                                         "mantissa.v1.ModelService/RegisterModel");
  if (!caller.ok()) return FinishNow(context, caller.status());
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
  absl::StatusOr<Caller> caller = authorizer_->Authorize(*context, Permission::kReadModels,
                                                         "mantissa.v1.ModelService/ListModels");
  if (!caller.ok()) return FinishNow(context, caller.status());
  for (v1::ModelStatus& model : server_->List()) *response->add_models() = std::move(model);
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* ModelService::DeleteModelVersion(
    grpc::CallbackServerContext* context, const v1::DeleteModelVersionRequest* request,
    v1::DeleteModelVersionResponse* response) {
  absl::StatusOr<Caller> caller = authorizer_->Authorize(
      *context, Permission::kAdminister, "mantissa.v1.ModelService/DeleteModelVersion");
  if (!caller.ok()) return FinishNow(context, caller.status());
  if (absl::Status status = RequireField("name", request->name()); !status.ok()) {
    return FinishNow(context, status);
  }
  return FinishOnExecutor(context, executor_, [this, request]() -> absl::Status {
    return server_->DeleteVersion(request->name(), request->version());
  });
}

grpc::ServerUnaryReactor* ModelService::SetVersionPolicy(grpc::CallbackServerContext* context,
                                                         const v1::SetVersionPolicyRequest* request,
                                                         v1::SetVersionPolicyResponse* response) {
  absl::StatusOr<Caller> caller = authorizer_->Authorize(
      *context, Permission::kAdminister, "mantissa.v1.ModelService/SetVersionPolicy");
  if (!caller.ok()) return FinishNow(context, caller.status());
  if (absl::Status status = RequireField("name", request->name()); !status.ok()) {
    return FinishNow(context, status);
  }
  if (!request->has_version_policy()) {
    return FinishNow(context, absl::InvalidArgumentError(
                                  "version_policy: is required (one of latest, all, specific)"));
  }
  return FinishOnExecutor(context, executor_, [this, request, response]() -> absl::Status {
    absl::StatusOr<v1::ModelStatus> model =
        server_->SetVersionPolicy(request->name(), request->version_policy());
    if (!model.ok()) return model.status();
    *response->mutable_model() = *std::move(model);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ModelService::RollbackModel(grpc::CallbackServerContext* context,
                                                      const v1::RollbackModelRequest* request,
                                                      v1::RollbackModelResponse* response) {
  absl::StatusOr<Caller> caller = authorizer_->Authorize(*context, Permission::kAdminister,
                                                         "mantissa.v1.ModelService/RollbackModel");
  if (!caller.ok()) return FinishNow(context, caller.status());
  if (absl::Status status = RequireField("name", request->name()); !status.ok()) {
    return FinishNow(context, status);
  }
  if (request->version() < 1) {
    return FinishNow(context, absl::InvalidArgumentError(
                                  absl::StrCat("version: must be >= 1, got ", request->version())));
  }
  return FinishOnExecutor(context, executor_, [this, request, response]() -> absl::Status {
    absl::StatusOr<v1::ModelStatus> model = server_->Rollback(request->name(), request->version());
    if (!model.ok()) return model.status();
    *response->mutable_model() = *std::move(model);
    return absl::OkStatus();
  });
}

}  // namespace mantissa
