#ifndef MANTISSA_CLIENT_INFER_REQUEST_H_
#define MANTISSA_CLIENT_INFER_REQUEST_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "inference/grpc_service.pb.h"

// The requests `mantissa infer` sends, built without a daemon so that they
// can be tested. Inputs always travel as raw_input_contents, one per input,
// in the datatype the input names (FP16 and BF16 have no typed field).
namespace mantissa::cli {

// A KServe v2 REST request body:
//   {"id": "...", "parameters": {...},
//    "inputs": [{"name", "shape", "datatype", "data", "parameters"?}, ...],
//    "outputs": [{"name", "parameters"?}, ...]}
// with "data" flat or nested row-major, and datatypes FP32, FP16, BF16 or
// INT64. Parameters map to InferParameter: bools, strings, whole numbers
// (int64) and other numbers (double). INVALID_ARGUMENT naming the field, e.g.
// "inputs[0].data: 6 values, but shape [2,4] holds 8". The model name is left
// for the caller to set.
absl::StatusOr<inference::ModelInferRequest> ParseInferRequestJson(absl::string_view json);

// Random inputs for every input in `metadata`, shaped [batch, ...item shape]
// where the item shape is the declared shape without its leading batch
// dimension when `metadata_has_batch_dim`; a variable (-1) dimension becomes
// kRandomVariableDim. Floats are uniform in [0, 1), INT64 values (token ids)
// are 0 or 1, so that any vocabulary accepts them. Deterministic in `seed`.
inline constexpr int64_t kRandomVariableDim = 8;
absl::StatusOr<inference::ModelInferRequest> RandomInferRequest(
    const inference::ModelMetadataResponse& metadata, int64_t batch, bool metadata_has_batch_dim,
    uint64_t seed);

// Asks for every output as FP32 (request parameter "output_datatype").
void RequestFp32Outputs(inference::ModelInferRequest* request);

}  // namespace mantissa::cli

#endif  // MANTISSA_CLIENT_INFER_REQUEST_H_
