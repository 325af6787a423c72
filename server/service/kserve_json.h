#ifndef MANTISSA_SERVER_SERVICE_KSERVE_JSON_H_
#define MANTISSA_SERVER_SERVICE_KSERVE_JSON_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "inference/grpc_service.pb.h"

namespace mantissa {

// The KServe v2 (Open Inference Protocol) REST bodies, converted to and from
// the gRPC messages so that REST reaches the same ModelServer calls as gRPC:
// limits, validation and status codes stay the gRPC ones. Includes Triton's
// binary tensor extension (Inference-Header-Content-Length) and Triton's
// statistics and repository JSON. Torch-free, so the fuzzer links it alone.

// The header that splits a body into its JSON part and a binary tail.
inline constexpr absl::string_view kInferenceHeaderContentLength =
    "Inference-Header-Content-Length";

// A REST infer body and the model it names in its path. `json_length` is the
// Inference-Header-Content-Length value: the body's first json_length bytes
// are JSON and the rest holds the binary inputs in order; nullopt: all JSON.
struct RestInferRequest {
  absl::string_view body;
  std::optional<uint64_t> json_length;
  std::string model_name;
  std::string model_version;  // "" = the server picks
};

// Converts a REST infer body to a gRPC request whose inputs are all
// raw_input_contents (little-endian, row-major). `data` may be flat or
// nested; its element count must equal the product of `shape`. FP16 and BF16
// numbers are rounded to nearest even. Output and request parameters are
// copied as gRPC parameters (binary_data, binary_data_output, datatype, ...).
// INVALID_ARGUMENT naming the field (input "x": ...) for malformed bodies.
absl::StatusOr<inference::ModelInferRequest> ParseInferRequest(const RestInferRequest& rest);

// A REST response body; `json_length` is set when a binary tail follows the
// JSON (the Inference-Header-Content-Length response header).
struct RestBody {
  std::string body;
  std::optional<uint64_t> json_length;
};

// The JSON of `response`. An output comes back binary (parameters
// binary_data_size, its bytes after the JSON) when `request` asked for it:
// output parameter binary_data true, or request parameter binary_data_output
// true for outputs without their own binary_data. FP16/BF16 are numbers.
absl::StatusOr<RestBody> WriteInferResponse(const inference::ModelInferRequest& request,
                                            const inference::ModelInferResponse& response);

std::string ServerMetadataJson(const inference::ServerMetadataResponse& metadata);
std::string ModelMetadataJson(const inference::ModelMetadataResponse& metadata);
// Triton's index: [{"name", "version", "state", "reason"}].
std::string RepositoryIndexJson(const inference::RepositoryIndexResponse& index);
// Triton's {"model_stats": [...]}, every figure a JSON number.
std::string StatisticsJson(const inference::ModelStatisticsResponse& statistics);
// {"live": b}, {"ready": b}, or {"name": m, "ready": b} when `name` is set.
std::string BoolJson(absl::string_view key, bool value, absl::string_view name = "");
// {"error": message}.
std::string ErrorJson(absl::string_view message);

// The optional body of POST /v2/repository/index: {"ready": bool}.
absl::StatusOr<inference::RepositoryIndexRequest> ParseRepositoryIndexRequest(
    absl::string_view body);

// The HTTP status of a failed call (INVALID_ARGUMENT 400, NOT_FOUND 404,
// FAILED_PRECONDITION 503, ...); 200 for OK.
int HttpStatusFromStatus(const absl::Status& status);

// IEEE half and bfloat16 bits of `value`, rounded to nearest even (overflow
// gives infinity, NaN stays NaN); and back.
uint16_t ToHalfBits(double value);
uint16_t ToBfloat16Bits(double value);
double FromHalfBits(uint16_t bits);
double FromBfloat16Bits(uint16_t bits);

}  // namespace mantissa

#endif  // MANTISSA_SERVER_SERVICE_KSERVE_JSON_H_
