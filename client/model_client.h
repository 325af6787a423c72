#ifndef MANTISSA_CLIENT_MODEL_CLIENT_H_
#define MANTISSA_CLIENT_MODEL_CLIENT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "inference/grpc_service.grpc.pb.h"
#include "mantissa/v1/serving.grpc.pb.h"

namespace mantissa::cli {

// The serving calls the CLI makes (mantissa.v1.ModelService and the Open
// Inference Protocol's inference.GRPCInferenceService) on one channel, with
// errors as TrainingClient reports them. Calls that load a model (export,
// register, load) cast and validate it on the daemon, so they get a longer
// deadline than the others.
class ModelClient {
 public:
  static constexpr absl::Duration kDefaultDeadline = absl::Seconds(30);
  static constexpr absl::Duration kLoadDeadline = absl::Minutes(10);

  // `target` names the daemon in error messages.
  ModelClient(std::shared_ptr<grpc::ChannelInterface> channel, std::string target);
  // An insecure channel to `target` ("HOST:PORT" or any gRPC target URI).
  static std::unique_ptr<ModelClient> Connect(const std::string& target);

  absl::StatusOr<v1::ExportModelResponse> ExportModel(const v1::ExportModelRequest& request);
  absl::StatusOr<v1::RegisterModelResponse> RegisterModel(const v1::RegisterModelRequest& request);
  absl::StatusOr<v1::ListModelsResponse> ListModels(const v1::ListModelsRequest& request);
  absl::StatusOr<v1::DeleteModelVersionResponse> DeleteModelVersion(
      const v1::DeleteModelVersionRequest& request);
  absl::StatusOr<inference::ModelMetadataResponse> ModelMetadata(
      const inference::ModelMetadataRequest& request);
  absl::StatusOr<inference::ModelInferResponse> ModelInfer(
      const inference::ModelInferRequest& request);
  absl::StatusOr<inference::RepositoryModelLoadResponse> RepositoryModelLoad(
      const inference::RepositoryModelLoadRequest& request);
  absl::StatusOr<inference::RepositoryModelUnloadResponse> RepositoryModelUnload(
      const inference::RepositoryModelUnloadRequest& request);
  // Load and unload versions on the daemon: the load deadline.
  absl::StatusOr<v1::SetVersionPolicyResponse> SetVersionPolicy(
      const v1::SetVersionPolicyRequest& request);
  absl::StatusOr<v1::RollbackModelResponse> RollbackModel(const v1::RollbackModelRequest& request);
  absl::StatusOr<inference::ModelStatisticsResponse> ModelStatistics(
      const inference::ModelStatisticsRequest& request);

 private:
  template <typename Response, typename Stub, typename Request, typename Method>
  absl::StatusOr<Response> Unary(Stub* stub, Method method, const Request& request,
                                 absl::Duration deadline);

  std::shared_ptr<grpc::ChannelInterface> channel_;
  std::unique_ptr<v1::ModelService::Stub> models_;
  std::unique_ptr<inference::GRPCInferenceService::Stub> inference_;
  std::string target_;
};

}  // namespace mantissa::cli

#endif  // MANTISSA_CLIENT_MODEL_CLIENT_H_
