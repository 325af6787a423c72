#include "server/service/inference_service.h"

#include "server/service/unary_reactors.h"

namespace mantissa {

grpc::ServerUnaryReactor* InferenceService::ServerLive(grpc::CallbackServerContext* context,
                                                       const inference::ServerLiveRequest* request,
                                                       inference::ServerLiveResponse* response) {
  if (absl::StatusOr<Caller> caller = authorizer_->Authorize(
          *context, Permission::kProbe, "inference.GRPCInferenceService/ServerLive");
      !caller.ok()) {
    return FinishNow(context, caller.status());
  }
  // Answering at all is the proof of life; a draining daemon is still live.
  response->set_live(true);
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceService::ServerReady(
    grpc::CallbackServerContext* context, const inference::ServerReadyRequest* request,
    inference::ServerReadyResponse* response) {
  if (absl::StatusOr<Caller> caller = authorizer_->Authorize(
          *context, Permission::kProbe, "inference.GRPCInferenceService/ServerReady");
      !caller.ok()) {
    return FinishNow(context, caller.status());
  }
  response->set_ready(ready_());
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceService::ModelReady(grpc::CallbackServerContext* context,
                                                       const inference::ModelReadyRequest* request,
                                                       inference::ModelReadyResponse* response) {
  if (absl::StatusOr<Caller> caller = authorizer_->Authorize(
          *context, Permission::kReadModels, "inference.GRPCInferenceService/ModelReady");
      !caller.ok()) {
    return FinishNow(context, caller.status());
  }
  absl::Status status = RequireField("name", request->name());
  if (status.ok()) {
    absl::StatusOr<bool> ready = server_->ModelReady(request->name(), request->version());
    if (ready.ok()) response->set_ready(*ready);
    status = ready.status();
  }
  return FinishNow(context, status);
}

grpc::ServerUnaryReactor* InferenceService::ServerMetadata(
    grpc::CallbackServerContext* context, const inference::ServerMetadataRequest* request,
    inference::ServerMetadataResponse* response) {
  if (absl::StatusOr<Caller> caller = authorizer_->Authorize(
          *context, Permission::kReadModels, "inference.GRPCInferenceService/ServerMetadata");
      !caller.ok()) {
    return FinishNow(context, caller.status());
  }
  response->set_name("mantissad");
  response->set_version(MANTISSA_VERSION);
  response->add_extensions("model_repository");
  response->add_extensions("statistics");
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceService::ModelMetadata(
    grpc::CallbackServerContext* context, const inference::ModelMetadataRequest* request,
    inference::ModelMetadataResponse* response) {
  if (absl::StatusOr<Caller> caller = authorizer_->Authorize(
          *context, Permission::kReadModels, "inference.GRPCInferenceService/ModelMetadata");
      !caller.ok()) {
    return FinishNow(context, caller.status());
  }
  absl::Status status = RequireField("name", request->name());
  if (status.ok()) {
    absl::StatusOr<inference::ModelMetadataResponse> metadata =
        server_->ModelMetadata(request->name(), request->version());
    if (metadata.ok()) *response = *std::move(metadata);
    status = metadata.status();
  }
  return FinishNow(context, status);
}

grpc::ServerUnaryReactor* InferenceService::ModelInfer(grpc::CallbackServerContext* context,
                                                       const inference::ModelInferRequest* request,
                                                       inference::ModelInferResponse* response) {
  if (absl::StatusOr<Caller> caller = authorizer_->Authorize(
          *context, Permission::kInfer, "inference.GRPCInferenceService/ModelInfer");
      !caller.ok()) {
    return FinishNow(context, caller.status());
  }
  if (absl::Status status = RequireField("model_name", request->model_name()); !status.ok()) {
    return FinishNow(context, status);
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  // `done` runs on the inference thread after the forward (or here, when the
  // request is refused up front); Finish is safe from any thread.
  server_->Infer(request, response,
                 [reactor](absl::Status status) { reactor->Finish(ToGrpcStatus(status)); });
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::RepositoryIndex(
    grpc::CallbackServerContext* context, const inference::RepositoryIndexRequest* request,
    inference::RepositoryIndexResponse* response) {
  if (absl::StatusOr<Caller> caller = authorizer_->Authorize(
          *context, Permission::kReadModels, "inference.GRPCInferenceService/RepositoryIndex");
      !caller.ok()) {
    return FinishNow(context, caller.status());
  }
  // One repository per daemon, so repository_name is not checked.
  *response = server_->RepositoryIndex(request->ready());
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceService::ModelStatistics(
    grpc::CallbackServerContext* context, const inference::ModelStatisticsRequest* request,
    inference::ModelStatisticsResponse* response) {
  if (absl::StatusOr<Caller> caller = authorizer_->Authorize(
          *context, Permission::kReadModels, "inference.GRPCInferenceService/ModelStatistics");
      !caller.ok()) {
    return FinishNow(context, caller.status());
  }
  absl::StatusOr<inference::ModelStatisticsResponse> statistics =
      server_->Statistics(request->name(), request->version());
  if (statistics.ok()) *response = *std::move(statistics);
  return FinishNow(context, statistics.status());
}

grpc::ServerUnaryReactor* InferenceService::RepositoryModelLoad(
    grpc::CallbackServerContext* context, const inference::RepositoryModelLoadRequest* request,
    inference::RepositoryModelLoadResponse* response) {
  if (absl::StatusOr<Caller> caller = authorizer_->Authorize(
          *context, Permission::kAdminister, "inference.GRPCInferenceService/RepositoryModelLoad");
      !caller.ok()) {
    return FinishNow(context, caller.status());
  }
  if (absl::Status status = RequireField("model_name", request->model_name()); !status.ok()) {
    return FinishNow(context, status);
  }
  return FinishOnExecutor(context, executor_,
                          [this, request] { return server_->Load(request->model_name()); });
}

grpc::ServerUnaryReactor* InferenceService::RepositoryModelUnload(
    grpc::CallbackServerContext* context, const inference::RepositoryModelUnloadRequest* request,
    inference::RepositoryModelUnloadResponse* response) {
  if (absl::StatusOr<Caller> caller =
          authorizer_->Authorize(*context, Permission::kAdminister,
                                 "inference.GRPCInferenceService/RepositoryModelUnload");
      !caller.ok()) {
    return FinishNow(context, caller.status());
  }
  if (absl::Status status = RequireField("model_name", request->model_name()); !status.ok()) {
    return FinishNow(context, status);
  }
  // The ModelServer may order an unload after a running load of the same
  // model, which takes seconds, so it stays off the reactor too.
  return FinishOnExecutor(context, executor_,
                          [this, request] { return server_->Unload(request->model_name()); });
}

}  // namespace mantissa
