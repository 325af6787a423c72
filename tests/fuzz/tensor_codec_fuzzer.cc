// Fuzzes the inference request decoder: input = [model byte][max batch byte]
// [serialized inference.ModelInferRequest], decoded against one of a few
// declared models (raw and typed contents, every datatype, fixed and variable
// dimensions, one and two inputs). An accepted request must decode to
// tensors of the declared shapes and dtypes, and its response must encode.

#include <torch/torch.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "google/protobuf/stubs/logging.h"
#include "server/serving/tensor_codec.h"
#include "tests/fuzz/fuzz_support.h"

namespace mantissa {
namespace {

v1::TensorSpec Spec(const char* name, const char* datatype, std::vector<int64_t> shape) {
  v1::TensorSpec spec;
  spec.set_name(name);
  spec.set_datatype(datatype);
  for (int64_t d : shape) spec.add_shape(d);
  return spec;
}

struct DeclaredModel {
  std::vector<v1::TensorSpec> inputs;
  std::vector<v1::TensorSpec> outputs;
};

const std::vector<DeclaredModel>& Models() {
  static const auto* models = new std::vector<DeclaredModel>{
      // An mlp: features in, logits out.
      {{Spec("input", "FP32", {4})}, {Spec("logits", "FP32", {3})}},
      // A cnn served in true half precision.
      {{Spec("input", "FP16", {1, 4, 4})}, {Spec("logits", "FP16", {10})}},
      // A gpt: token ids in, bf16 logits per position out.
      {{Spec("tokens", "INT64", {8})}, {Spec("logits", "BF16", {8, 16})}},
      // Two inputs, one with a variable dimension; two outputs.
      {{Spec("a", "FP32", {-1, 2}), Spec("b", "INT64", {3})},
       {Spec("y", "FP32", {2}), Spec("ids", "INT64", {1})}},
  };
  return *models;
}

// What a model of `spec` would return for `batch` items: zeros, with a
// variable dimension as 1.
torch::Tensor FakeOutput(const v1::TensorSpec& spec, int64_t batch) {
  std::vector<int64_t> shape = {batch};
  for (int64_t d : spec.shape()) shape.push_back(d < 0 ? 1 : d);
  return torch::zeros(shape, torch::TensorOptions().dtype(*DtypeFromDatatype(spec.datatype())));
}

}  // namespace
}  // namespace mantissa

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  torch::set_num_threads(1);
  // Invalid UTF-8 in string fields is logged on every such input.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mantissa;
  if (size < 2) return 0;
  const DeclaredModel& model = Models()[data[0] % Models().size()];
  const int64_t max_batch_size = 1 + data[1] % 16;
  inference::ModelInferRequest request;
  if (!request.ParseFromArray(data + 2, static_cast<int>(size - 2))) return 0;

  absl::StatusOr<DecodedRequest> decoded =
      DecodeRequest(request, model.inputs, model.outputs, max_batch_size);
  if (!decoded.ok()) {
    FUZZ_CHECK(decoded.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  FUZZ_CHECK(decoded->batch_size >= 1 && decoded->batch_size <= max_batch_size);
  FUZZ_CHECK(decoded->inputs.size() == model.inputs.size());
  for (size_t i = 0; i < model.inputs.size(); ++i) {
    const torch::Tensor& t = decoded->inputs[i];
    const v1::TensorSpec& spec = model.inputs[i];
    FUZZ_CHECK(t.dtype() == *DtypeFromDatatype(spec.datatype()));
    FUZZ_CHECK(t.dim() == spec.shape_size() + 1 && t.size(0) == decoded->batch_size);
    for (int d = 0; d < spec.shape_size(); ++d) {
      FUZZ_CHECK(spec.shape(d) < 0 ? t.size(d + 1) >= 1 : t.size(d + 1) == spec.shape(d));
    }
  }
  FUZZ_CHECK(!decoded->outputs.empty() && decoded->outputs.size() <= model.outputs.size());

  std::vector<torch::Tensor> outputs;
  for (const v1::TensorSpec& spec : model.outputs) {
    outputs.push_back(FakeOutput(spec, decoded->batch_size));
  }
  inference::ModelInferResponse response;
  FUZZ_CHECK(EncodeResponse(outputs, *decoded, model.outputs, &response).ok());
  FUZZ_CHECK(response.outputs_size() == static_cast<int>(decoded->outputs.size()));
  FUZZ_CHECK(response.raw_output_contents_size() == response.outputs_size());
  return 0;
}
