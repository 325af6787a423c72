#ifndef MANTISSA_SERVER_SERVING_TENSOR_CODEC_H_
#define MANTISSA_SERVER_SERVING_TENSOR_CODEC_H_

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "inference/grpc_service.pb.h"
#include "mantissa/v1/serving.pb.h"

namespace mantissa {

// Open Inference Protocol datatype names <-> LibTorch dtypes. Served models
// use FP32, FP16, BF16 and INT64; INVALID_ARGUMENT for any other name.
absl::StatusOr<torch::Dtype> DtypeFromDatatype(absl::string_view datatype);
std::string DatatypeFromDtype(torch::Dtype dtype);  // "FP32", ...
bool IsFloatDatatype(absl::string_view datatype);   // FP32, FP16, BF16

// One requested output of a decoded request.
struct RequestedOutput {
  int index = 0;         // into the model's declared outputs
  bool as_fp32 = false;  // parameters asked for FP32 instead of the model's datatype
};

// A validated request: one tensor per declared input, in declaration order,
// shaped [batch, ...item shape], already in the declared dtype (float inputs
// sent as FP32, FP16 or BF16 are converted to the model's float type).
struct DecodedRequest {
  std::vector<torch::Tensor> inputs;
  int64_t batch_size = 0;
  std::vector<RequestedOutput> outputs;  // every declared output when none was named
  // Request parameter "all_positions" (bool): a language model returns the
  // logits of every position, not only the last one's.
  bool all_positions = false;
};

// Checks `request` against the model's declared tensors and decodes it.
// Every mismatch is INVALID_ARGUMENT naming the tensor and what was
// expected: unknown, missing or repeated input names; datatypes; shape rank
// and fixed dimensions; a batch of 0 or over `max_batch_size`; byte sizes of
// raw contents; typed contents of the wrong type or count; raw and typed
// contents mixed; unknown requested outputs; bad output parameters. The
// request's model name is not checked here.
//
// An output (or the whole request, via request parameter "output_datatype")
// is returned as FP32 when its parameter "datatype" is the string "FP32".
absl::StatusOr<DecodedRequest> DecodeRequest(const inference::ModelInferRequest& request,
                                             const std::vector<v1::TensorSpec>& inputs,
                                             const std::vector<v1::TensorSpec>& outputs,
                                             int64_t max_batch_size);

// Writes the requested outputs into `response` as raw_output_contents
// (little-endian, row-major) with their name, datatype and shape.
// `outputs` holds this request's slice of every declared output, in
// declaration order.
absl::Status EncodeResponse(const std::vector<torch::Tensor>& outputs,
                            const DecodedRequest& decoded,
                            const std::vector<v1::TensorSpec>& declared_outputs,
                            inference::ModelInferResponse* response);

}  // namespace mantissa

#endif  // MANTISSA_SERVER_SERVING_TENSOR_CODEC_H_
