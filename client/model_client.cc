#include "client/model_client.h"

#include <chrono>
#include <utility>

#include "client/training_client.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

namespace mantissa::cli {

ModelClient::ModelClient(std::shared_ptr<grpc::ChannelInterface> channel, std::string target)
    : channel_(std::move(channel)),
      models_(v1::ModelService::NewStub(channel_)),
      inference_(inference::GRPCInferenceService::NewStub(channel_)),
      target_(std::move(target)) {}

std::unique_ptr<ModelClient> ModelClient::Connect(const std::string& target) {
  return std::make_unique<ModelClient>(
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials()), target);
}

template <typename Response, typename Stub, typename Request, typename Method>
absl::StatusOr<Response> ModelClient::Unary(Stub* stub, Method method, const Request& request,
                                            absl::Duration deadline) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(deadline));
  Response response;
  const grpc::Status status = (stub->*method)(&context, request, &response);
  if (!status.ok()) return CallStatus(status, *channel_, target_, /*had_events=*/false);
  return response;
}

absl::StatusOr<v1::ExportModelResponse> ModelClient::ExportModel(
    const v1::ExportModelRequest& request) {
  return Unary<v1::ExportModelResponse>(models_.get(), &v1::ModelService::Stub::ExportModel,
                                        request, kLoadDeadline);
}

absl::StatusOr<v1::RegisterModelResponse> ModelClient::RegisterModel(
    const v1::RegisterModelRequest& request) {
  return Unary<v1::RegisterModelResponse>(models_.get(), &v1::ModelService::Stub::RegisterModel,
                                          request, kLoadDeadline);
}

absl::StatusOr<v1::ListModelsResponse> ModelClient::ListModels(
    const v1::ListModelsRequest& request) {
  return Unary<v1::ListModelsResponse>(models_.get(), &v1::ModelService::Stub::ListModels, request,
                                       kDefaultDeadline);
}

absl::StatusOr<v1::DeleteModelVersionResponse> ModelClient::DeleteModelVersion(
    const v1::DeleteModelVersionRequest& request) {
  return Unary<v1::DeleteModelVersionResponse>(
      models_.get(), &v1::ModelService::Stub::DeleteModelVersion, request, kDefaultDeadline);
}

absl::StatusOr<inference::ModelMetadataResponse> ModelClient::ModelMetadata(
    const inference::ModelMetadataRequest& request) {
  return Unary<inference::ModelMetadataResponse>(
      inference_.get(), &inference::GRPCInferenceService::Stub::ModelMetadata, request,
      kDefaultDeadline);
}

absl::StatusOr<inference::ModelInferResponse> ModelClient::ModelInfer(
    const inference::ModelInferRequest& request) {
  return Unary<inference::ModelInferResponse>(inference_.get(),
                                              &inference::GRPCInferenceService::Stub::ModelInfer,
                                              request, kDefaultDeadline);
}

absl::StatusOr<inference::RepositoryModelLoadResponse> ModelClient::RepositoryModelLoad(
    const inference::RepositoryModelLoadRequest& request) {
  return Unary<inference::RepositoryModelLoadResponse>(
      inference_.get(), &inference::GRPCInferenceService::Stub::RepositoryModelLoad, request,
      kLoadDeadline);
}

absl::StatusOr<inference::RepositoryModelUnloadResponse> ModelClient::RepositoryModelUnload(
    const inference::RepositoryModelUnloadRequest& request) {
  return Unary<inference::RepositoryModelUnloadResponse>(
      inference_.get(), &inference::GRPCInferenceService::Stub::RepositoryModelUnload, request,
      kLoadDeadline);
}

absl::StatusOr<v1::SetVersionPolicyResponse> ModelClient::SetVersionPolicy(
    const v1::SetVersionPolicyRequest& request) {
  return Unary<v1::SetVersionPolicyResponse>(
      models_.get(), &v1::ModelService::Stub::SetVersionPolicy, request, kLoadDeadline);
}

absl::StatusOr<v1::RollbackModelResponse> ModelClient::RollbackModel(
    const v1::RollbackModelRequest& request) {
  return Unary<v1::RollbackModelResponse>(models_.get(), &v1::ModelService::Stub::RollbackModel,
                                          request, kLoadDeadline);
}

absl::StatusOr<inference::ModelStatisticsResponse> ModelClient::ModelStatistics(
    const inference::ModelStatisticsRequest& request) {
  return Unary<inference::ModelStatisticsResponse>(
      inference_.get(), &inference::GRPCInferenceService::Stub::ModelStatistics, request,
      kDefaultDeadline);
}

}  // namespace mantissa::cli
