// Fuzzes the KServe v2 REST body parser: input = [2 bytes, little-endian:
// Inference-Header-Content-Length, 0xffff = absent][body]. An accepted body
// must give one raw content per input holding exactly its shape's worth of
// bytes, and the same tensors echoed as a response must write back (JSON and
// binary), with the binary tail holding the raw bytes.

#include <cstddef>
#include <cstdint>
#include <string>

#include "server/service/kserve_json.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

int ElementSize(const std::string& datatype) {
  if (datatype == "BOOL" || datatype == "UINT8" || datatype == "INT8") return 1;
  if (datatype == "UINT16" || datatype == "INT16" || datatype == "FP16" || datatype == "BF16") {
    return 2;
  }
  if (datatype == "UINT32" || datatype == "INT32" || datatype == "FP32") return 4;
  if (datatype == "BYTES") return 0;
  return 8;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const uint16_t header = static_cast<uint16_t>(data[0] | (data[1] << 8));
  const absl::string_view body(reinterpret_cast<const char*>(data + 2), size - 2);
  mantissa::RestInferRequest rest{body, std::nullopt, "m", ""};
  if (header != 0xffff) rest.json_length = header;
  absl::StatusOr<inference::ModelInferRequest> request = mantissa::ParseInferRequest(rest);
  if (!request.ok()) {
    FUZZ_CHECK(request.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  FUZZ_CHECK(request->raw_input_contents_size() == request->inputs_size());

  inference::ModelInferResponse response;
  bool has_bytes = false;
  std::string tail;
  for (int i = 0; i < request->inputs_size(); ++i) {
    const auto& input = request->inputs(i);
    const int element = ElementSize(input.datatype());
    has_bytes |= element == 0;
    uint64_t numel = 1;
    for (int64_t d : input.shape()) numel *= static_cast<uint64_t>(d);
    if (element > 0) FUZZ_CHECK(request->raw_input_contents(i).size() == numel * element);
    auto* output = response.add_outputs();
    output->set_name(input.name());
    output->set_datatype(input.datatype());
    *output->mutable_shape() = input.shape();
    response.add_raw_output_contents(request->raw_input_contents(i));
    tail += request->raw_input_contents(i);
  }
  // JSON: any tensor but a malformed BYTES one (from a binary tail) writes.
  absl::StatusOr<mantissa::RestBody> json = mantissa::WriteInferResponse(*request, response);
  FUZZ_CHECK(json.ok() || has_bytes);
  // Binary: always writes, and the tail is the raw bytes in order.
  inference::ModelInferRequest binary_request;
  (*binary_request.mutable_parameters())["binary_data_output"].set_bool_param(true);
  absl::StatusOr<mantissa::RestBody> binary =
      mantissa::WriteInferResponse(binary_request, response);
  FUZZ_CHECK(binary.ok());
  if (response.outputs_size() > 0) {
    FUZZ_CHECK(binary->json_length.has_value());
    FUZZ_CHECK(binary->body.substr(*binary->json_length) == tail);
  }
  return 0;
}
