#ifndef MANTISSA_SERVER_SERVICE_INFERENCE_SERVICE_H_
#define MANTISSA_SERVER_SERVICE_INFERENCE_SERVICE_H_

#include <functional>

#include "inference/grpc_service.grpc.pb.h"
#include "server/service/authorizer.h"
#include "server/service/blocking_executor.h"
#include "server/serving/model_server.h"

namespace mantissa {

// inference.GRPCInferenceService (the Open Inference Protocol with the
// repository and statistics extensions) on gRPC's callback API, over the ModelServer.
// Readiness, metadata and the index are map reads answered on the reactor;
// ModelInfer finishes from the inference thread that ran the forward; loads
// and unloads run on `executor`, since a load casts and validates a model for
// seconds. The server, the executor and `ready` outlive the service.
class InferenceService final : public inference::GRPCInferenceService::CallbackService {
 public:
  // `ready` answers ServerReady: main combines the repository being loaded
  // with the daemon not draining. Every handler asks `authorizer` (nullptr:
  // allow all) first; ServerLive and ServerReady stay open, like health.
  InferenceService(ModelServer* server, BlockingExecutor* executor, std::function<bool()> ready,
                   const Authorizer* authorizer = nullptr)
      : server_(server),
        executor_(executor),
        ready_(std::move(ready)),
        authorizer_(authorizer != nullptr ? authorizer : Authorizer::AllowAll()) {}

  grpc::ServerUnaryReactor* ServerLive(grpc::CallbackServerContext* context,
                                       const inference::ServerLiveRequest* request,
                                       inference::ServerLiveResponse* response) override;
  grpc::ServerUnaryReactor* ServerReady(grpc::CallbackServerContext* context,
                                        const inference::ServerReadyRequest* request,
                                        inference::ServerReadyResponse* response) override;
  grpc::ServerUnaryReactor* ModelReady(grpc::CallbackServerContext* context,
                                       const inference::ModelReadyRequest* request,
                                       inference::ModelReadyResponse* response) override;
  grpc::ServerUnaryReactor* ServerMetadata(grpc::CallbackServerContext* context,
                                           const inference::ServerMetadataRequest* request,
                                           inference::ServerMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelMetadata(grpc::CallbackServerContext* context,
                                          const inference::ModelMetadataRequest* request,
                                          inference::ModelMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelInfer(grpc::CallbackServerContext* context,
                                       const inference::ModelInferRequest* request,
                                       inference::ModelInferResponse* response) override;
  grpc::ServerUnaryReactor* RepositoryIndex(grpc::CallbackServerContext* context,
                                            const inference::RepositoryIndexRequest* request,
                                            inference::RepositoryIndexResponse* response) override;
  grpc::ServerUnaryReactor* RepositoryModelLoad(
      grpc::CallbackServerContext* context, const inference::RepositoryModelLoadRequest* request,
      inference::RepositoryModelLoadResponse* response) override;
  grpc::ServerUnaryReactor* RepositoryModelUnload(
      grpc::CallbackServerContext* context, const inference::RepositoryModelUnloadRequest* request,
      inference::RepositoryModelUnloadResponse* response) override;
  // Triton's statistics extension: per model version, counted since it was
  // first served by this daemon. A map read, answered on the reactor.
  grpc::ServerUnaryReactor* ModelStatistics(grpc::CallbackServerContext* context,
                                            const inference::ModelStatisticsRequest* request,
                                            inference::ModelStatisticsResponse* response) override;

 private:
  ModelServer* const server_;
  BlockingExecutor* const executor_;
  const std::function<bool()> ready_;
  const Authorizer* const authorizer_;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_SERVICE_INFERENCE_SERVICE_H_
