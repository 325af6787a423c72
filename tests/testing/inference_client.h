#ifndef MANTISSA_TESTS_TESTING_INFERENCE_CLIENT_H_
#define MANTISSA_TESTS_TESTING_INFERENCE_CLIENT_H_

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "inference/grpc_service.grpc.pb.h"
#include "mantissa/v1/serving.grpc.pb.h"

namespace httplib {
class Client;
}  // namespace httplib

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

// An HTTP answer as a KServe v2 REST client sees it.
struct HttpResponse {
  int status = 0;
  std::string body;
  std::string content_type;
  // Inference-Header-Content-Length: the JSON part of a binary-extension
  // body; -1 when absent (the whole body is JSON).
  int64_t header_length = -1;
};

// A KServe v2 REST request body with the headers it needs.
struct RestRequest {
  std::string body;
  std::string content_type;
  std::vector<std::pair<std::string, std::string>> headers;
};

// A plain-HTTP client of mantissad's REST front end on one keep-alive
// connection, as a separate client process would hold. Not thread-safe
// (cpp-httplib's Client is not): one per thread.
class RestClient {
 public:
  // `token`: sent as "Authorization: Bearer <token>" when not empty.
  RestClient(const std::string& host, int port, const std::string& token = "",
             absl::Duration timeout = absl::Seconds(30));
  ~RestClient();

  // UNAVAILABLE when no HTTP answer came (connection refused, timeout);
  // any HTTP status is a response.
  absl::StatusOr<HttpResponse> Get(const std::string& path);
  absl::StatusOr<HttpResponse> Post(const std::string& path, const RestRequest& request);
  absl::StatusOr<HttpResponse> Post(const std::string& path, const std::string& json_body);

 private:
  std::unique_ptr<httplib::Client> client_;
};

// POST /v2/models/{model}/infer with one float input `values` ([shape...]
// row-major) as JSON numbers. `binary_output`: ask for every output (or the
// one named) in the binary extension.
RestRequest RestJsonInferRequest(const std::string& input, const std::vector<int64_t>& shape,
                                 const std::vector<float>& values,
                                 const std::string& datatype = "FP32", bool binary_output = false,
                                 const std::string& output = "");

// The same with the input in Triton's binary extension (little-endian
// `datatype` bytes after the JSON header) and the output requested binary.
RestRequest RestBinaryInferRequest(const std::string& input, const std::vector<int64_t>& shape,
                                   const std::vector<float>& values, const std::string& output,
                                   const std::string& datatype = "FP32");

// Output `index` of an infer response as floats, from JSON numbers or from
// its binary_data_size bytes after the JSON header (FP32, FP16 or BF16).
// INVALID_ARGUMENT for a non-200 answer (with its body) or a malformed one.
absl::StatusOr<std::vector<float>> RestOutputFloats(const HttpResponse& response, int index = 0);

// EXPECT_THAT(status, GrpcStatusIs(grpc::INVALID_ARGUMENT, HasSubstr("input")))
MATCHER_P2(GrpcStatusIs, code, message_matcher, "") {
  *result_listener << "status is " << arg.error_code() << ": " << arg.error_message();
  return arg.error_code() == code &&
         ::testing::ExplainMatchResult(message_matcher, arg.error_message(), result_listener);
}

}  // namespace mantissa::testing

#endif  // MANTISSA_TESTS_TESTING_INFERENCE_CLIENT_H_
