#ifndef MANTISSA_TESTS_TESTING_INFERENCE_CLIENT_H_
#define MANTISSA_TESTS_TESTING_INFERENCE_CLIENT_H_

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "inference/grpc_service.grpc.pb.h"
#include "mantissa/v1/serving.grpc.pb.h"

namespace mantissa::testing {

// A client of the serving half of mantissad as third-party tools see it:
// the Open Inference Protocol service and mantissa.v1.ModelService on one
// channel. Every call carries a deadline, so a hung server fails the test
// instead of hanging it. Thread-safe (gRPC stubs are).
class InferenceClient {
 public:
  // `own_connection`: a TCP connection of its own, as a separate client
  // process would have, instead of gRPC's connection shared by every
  // channel to the same address with the same arguments. Its Infer calls
  // wait for the connection (within their deadline): on a loaded machine a
  // fresh connection's first attempt can fail, and gRPC then fails every
  // call at once until its reconnect backoff ends.
  explicit InferenceClient(const std::string& address, bool own_connection = false);

  inference::GRPCInferenceService::Stub& inference() { return *inference_; }
  v1::ModelService::Stub& models() { return *models_; }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }

  grpc::Status Infer(const inference::ModelInferRequest& request,
                     inference::ModelInferResponse* response,
                     absl::Duration timeout = absl::Seconds(30));

  absl::StatusOr<bool> ServerLive();
  absl::StatusOr<bool> ServerReady();
  absl::StatusOr<bool> ModelReady(const std::string& name, const std::string& version = "");
  grpc::Status ModelMetadata(const std::string& name, inference::ModelMetadataResponse* response,
                             const std::string& version = "");
  grpc::Status Load(const std::string& name);
  grpc::Status Unload(const std::string& name);
  absl::StatusOr<inference::RepositoryIndexResponse> RepositoryIndex(bool ready_only = false);

  // ModelService.ExportModel; `precision` empty = the server's default.
  grpc::Status Export(const std::string& job_id, const std::string& name,
                      const std::string& precision, v1::ModelVersionStatus* model = nullptr,
                      std::optional<int> max_batch_size = std::nullopt);
  absl::StatusOr<std::vector<v1::ModelStatus>> ListModels();

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<inference::GRPCInferenceService::Stub> inference_;
  std::unique_ptr<v1::ModelService::Stub> models_;
  bool wait_for_ready_;
};

// Little-endian row-major bytes of `values` as FP32, BF16 or FP16.
std::string EncodeFloats(const std::vector<float>& values, const std::string& datatype);

// A request with one float input: `values` ([shape...] row-major) sent as
// `datatype` (FP32, BF16 or FP16) in raw_input_contents, or for FP32 with
// `raw` false as typed fp32_contents.
inference::ModelInferRequest FloatRequest(const std::string& model, const std::string& input,
                                          const std::vector<int64_t>& shape,
                                          const std::vector<float>& values,
                                          const std::string& datatype = "FP32", bool raw = true);

// Asks for every output (or the one named) as FP32 through the output's
// "datatype" parameter.
void RequestFp32Output(inference::ModelInferRequest* request, const std::string& output);

// Output `index` of `response` as floats, whatever float datatype it came in
// (raw FP32/BF16/FP16 or typed fp32_contents). INVALID_ARGUMENT when the
// sizes disagree with the shape, naming the output.
absl::StatusOr<std::vector<float>> OutputFloats(const inference::ModelInferResponse& response,
                                                int index = 0);

// Row-wise argmax of a [rows, cols] matrix.
std::vector<int> ArgmaxRows(const std::vector<float>& values, int64_t cols);

// Deterministic inputs in [-2, 2) for `count` floats, from `seed`.
std::vector<float> PseudoRandomFloats(size_t count, uint32_t seed);

// EXPECT_THAT(status, GrpcStatusIs(grpc::INVALID_ARGUMENT, HasSubstr("input")))
MATCHER_P2(GrpcStatusIs, code, message_matcher, "") {
  *result_listener << "status is " << arg.error_code() << ": " << arg.error_message();
  return arg.error_code() == code &&
         ::testing::ExplainMatchResult(message_matcher, arg.error_message(), result_listener);
}

}  // namespace mantissa::testing

#endif  // MANTISSA_TESTS_TESTING_INFERENCE_CLIENT_H_
