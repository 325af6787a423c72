#include "server/serving/tensor_codec.h"

#include <cstring>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/status_macros.h"
#include "server/common/torch_status.h"

namespace mantissa {
namespace {

// The protocol's raw contents are little-endian; decoding and encoding copy
// bytes as they lie in host memory.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "tensor_codec copies raw contents as host bytes: little-endian hosts only");

using InputTensor = inference::ModelInferRequest::InferInputTensor;
using ParameterMap = google::protobuf::Map<std::string, inference::InferParameter>;

constexpr absl::string_view kValidDatatypes = "FP32, FP16, BF16 or INT64";

std::string ShapeString(const google::protobuf::RepeatedField<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

std::string QuotedNames(const std::vector<v1::TensorSpec>& specs) {
  return absl::StrJoin(specs, ", ", [](std::string* out, const v1::TensorSpec& spec) {
    absl::StrAppend(out, "\"", spec.name(), "\"");
  });
}

int64_t ElementSize(torch::Dtype dtype) { return static_cast<int64_t>(c10::elementSize(dtype)); }

// Names the first non-empty typed contents field, or "" when there is none.
absl::string_view TypedContentsField(const InputTensor& input) {
  if (!input.has_contents()) return "";
  const inference::InferTensorContents& c = input.contents();
  if (c.bool_contents_size() > 0) return "bool_contents";
  if (c.int_contents_size() > 0) return "int_contents";
  if (c.int64_contents_size() > 0) return "int64_contents";
  if (c.uint_contents_size() > 0) return "uint_contents";
  if (c.uint64_contents_size() > 0) return "uint64_contents";
  if (c.fp32_contents_size() > 0) return "fp32_contents";
  if (c.fp64_contents_size() > 0) return "fp64_contents";
  if (c.bytes_contents_size() > 0) return "bytes_contents";
  return "";
}

std::string DescribeParameter(const inference::InferParameter& p) {
  switch (p.parameter_choice_case()) {
    case inference::InferParameter::kBoolParam:
      return absl::StrCat("bool ", p.bool_param() ? "true" : "false");
    case inference::InferParameter::kInt64Param:
      return absl::StrCat("int64 ", p.int64_param());
    case inference::InferParameter::kStringParam:
      return absl::StrCat("\"", p.string_param(), "\"");
    case inference::InferParameter::kDoubleParam:
      return absl::StrCat("double ", p.double_param());
    case inference::InferParameter::kUint64Param:
      return absl::StrCat("uint64 ", p.uint64_param());
    default:
      return "an empty parameter";
  }
}

// True when `parameters[key]` asks for FP32 output; INVALID_ARGUMENT for any
// value other than the string "FP32". `where` names the message's owner.
absl::StatusOr<bool> WantsFp32(const ParameterMap& parameters, absl::string_view key,
                               absl::string_view where) {
  auto it = parameters.find(std::string(key));
  if (it == parameters.end()) return false;
  const inference::InferParameter& p = it->second;
  if (p.parameter_choice_case() != inference::InferParameter::kStringParam ||
      p.string_param() != "FP32") {
    return absl::InvalidArgumentError(absl::StrCat(where, ": parameter \"", key,
                                                   "\" must be the string \"FP32\", got ",
                                                   DescribeParameter(p)));
  }
  return true;
}

// One request input matched to its declaration, checked but not yet copied.
struct CheckedInput {
  const InputTensor* tensor = nullptr;
  int request_index = 0;                  // position in the request (and in raw_input_contents)
  torch::Dtype sent = torch::kFloat;      // the request's datatype
  torch::Dtype declared = torch::kFloat;  // the model's datatype
  std::vector<int64_t> shape;
  int64_t numel = 0;
};

// Checks the datatype and shape of `input` against `spec`.
absl::Status CheckInput(const InputTensor& input, const v1::TensorSpec& spec,
                        int64_t max_batch_size, CheckedInput* out) {
  const std::string where = absl::StrCat("input \"", input.name(), "\"");
  auto declared = DtypeFromDatatype(spec.datatype());
  if (!declared.ok()) {
    return absl::InternalError(
        absl::StrCat("model ", where, ": declared ", declared.status().message()));
  }
  auto sent = DtypeFromDatatype(input.datatype());
  if (!sent.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", sent.status().message()));
  }
  const bool declared_float = IsFloatDatatype(spec.datatype());
  if (declared_float ? !IsFloatDatatype(input.datatype()) : *sent != *declared) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": datatype ", input.datatype(), " does not match ", spec.datatype(),
                     declared_float ? " (FP32, FP16 and BF16 are accepted and converted)" : ""));
  }

  std::vector<int64_t> expected = {-1};
  expected.insert(expected.end(), spec.shape().begin(), spec.shape().end());
  const auto& shape = input.shape();
  const std::string mismatch =
      absl::StrCat(where, ": shape ", ShapeString(shape), " does not match ", ShapeString(expected),
                   " (batch, then the model's item shape)");
  if (shape.size() != static_cast<int>(expected.size())) {
    return absl::InvalidArgumentError(mismatch);
  }
  if (shape[0] < 1 || shape[0] > max_batch_size) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": batch size ", shape[0], " (shape ",
                                                   ShapeString(shape), ") is not in 1..",
                                                   max_batch_size));
  }
  int64_t numel = 1;
  for (int d = 0; d < shape.size(); ++d) {
    const bool variable = expected[d] < 0;
    if (variable ? shape[d] < 1 : shape[d] != expected[d]) {
      return absl::InvalidArgumentError(mismatch);
    }
    if (__builtin_mul_overflow(numel, shape[d], &numel) ||
        numel > std::numeric_limits<int64_t>::max() / 8) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": shape ", ShapeString(shape), " has too many elements"));
    }
  }
  out->tensor = &input;
  out->sent = *sent;
  out->declared = *declared;
  out->shape.assign(shape.begin(), shape.end());
  out->numel = numel;
  return absl::OkStatus();
}

// Checks that the input's contents hold exactly its shape's worth of data.
absl::Status CheckContents(const inference::ModelInferRequest& request, const CheckedInput& in) {
  const InputTensor& input = *in.tensor;
  const std::string where = absl::StrCat("input \"", input.name(), "\"");
  if (request.raw_input_contents_size() > 0) {
    const int64_t have = static_cast<int64_t>(request.raw_input_contents(in.request_index).size());
    const int64_t want = in.numel * ElementSize(in.sent);
    if (have != want) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": raw_input_contents[", in.request_index, "] has ", have, " bytes, expected ",
          want, " (shape ", ShapeString(in.shape), " of ", input.datatype(), ")"));
    }
    return absl::OkStatus();
  }
  const absl::string_view field = TypedContentsField(input);
  absl::string_view wanted_field;
  int64_t have = 0;
  if (in.sent == torch::kFloat) {
    wanted_field = "fp32_contents";
    have = input.contents().fp32_contents_size();
  } else if (in.sent == torch::kLong) {
    wanted_field = "int64_contents";
    have = input.contents().int64_contents_size();
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": ", input.datatype(),
                     " data must be sent as raw_input_contents (typed contents have no 16-bit "
                     "field)"));
  }
  if (!field.empty() && field != wanted_field) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": datatype ", input.datatype(),
                                                   " takes ", wanted_field, ", got ", field));
  }
  if (have != in.numel) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", wanted_field, " has ", have,
                                                   " values, shape ", ShapeString(in.shape),
                                                   " needs ", in.numel));
  }
  return absl::OkStatus();
}

// Copies the checked contents into a fresh tensor of the declared dtype.
torch::Tensor CopyInput(const inference::ModelInferRequest& request, const CheckedInput& in) {
  torch::Tensor t = torch::empty(in.shape, torch::TensorOptions().dtype(in.sent));
  const void* src = nullptr;
  if (request.raw_input_contents_size() > 0) {
    src = request.raw_input_contents(in.request_index).data();  // may be unaligned
  } else if (in.sent == torch::kFloat) {
    src = in.tensor->contents().fp32_contents().data();
  } else {
    src = in.tensor->contents().int64_contents().data();
  }
  if (in.numel > 0) std::memcpy(t.data_ptr(), src, in.numel * ElementSize(in.sent));
  return in.sent == in.declared ? t : t.to(in.declared);
}

absl::StatusOr<std::vector<RequestedOutput>> DecodeOutputs(
    const inference::ModelInferRequest& request, const std::vector<v1::TensorSpec>& outputs) {
  ASSIGN_OR_RETURN(const bool all_fp32,
                   WantsFp32(request.parameters(), "output_datatype", "request"));
  std::vector<RequestedOutput> result;
  if (request.outputs_size() == 0) {
    for (int i = 0; i < static_cast<int>(outputs.size()); ++i) {
      result.push_back({i, all_fp32 && IsFloatDatatype(outputs[i].datatype())});
    }
    return result;
  }
  std::vector<bool> seen(outputs.size(), false);
  for (const auto& requested : request.outputs()) {
    const std::string where = absl::StrCat("output \"", requested.name(), "\"");
    int index = -1;
    for (int i = 0; i < static_cast<int>(outputs.size()); ++i) {
      if (outputs[i].name() == requested.name()) index = i;
    }
    if (index < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown ", where, "; the model's outputs are ", QuotedNames(outputs)));
    }
    if (seen[index]) {
      return absl::InvalidArgumentError(absl::StrCat(where, " is requested more than once"));
    }
    seen[index] = true;
    ASSIGN_OR_RETURN(const bool fp32, WantsFp32(requested.parameters(), "datatype", where));
    const bool is_float = IsFloatDatatype(outputs[index].datatype());
    if (fp32 && !is_float) {
      return absl::InvalidArgumentError(absl::StrCat(where, " is ", outputs[index].datatype(),
                                                     "; parameter \"datatype\" FP32 applies "
                                                     "to float outputs only"));
    }
    result.push_back({index, is_float && (fp32 || all_fp32)});
  }
  return result;
}

}  // namespace

absl::StatusOr<torch::Dtype> DtypeFromDatatype(absl::string_view datatype) {
  if (datatype == "FP32") return torch::kFloat;
  if (datatype == "FP16") return torch::kHalf;
  if (datatype == "BF16") return torch::kBFloat16;
  if (datatype == "INT64") return torch::kLong;
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported datatype \"", datatype, "\"; expected ", kValidDatatypes));
}

std::string DatatypeFromDtype(torch::Dtype dtype) {
  switch (dtype) {
    case torch::kFloat:
      return "FP32";
    case torch::kHalf:
      return "FP16";
    case torch::kBFloat16:
      return "BF16";
    case torch::kLong:
      return "INT64";
    case torch::kDouble:
      return "FP64";
    case torch::kInt:
      return "INT32";
    case torch::kShort:
      return "INT16";
    case torch::kChar:
      return "INT8";
    case torch::kByte:
      return "UINT8";
    case torch::kBool:
      return "BOOL";
    default:
      return std::string(c10::toString(dtype));
  }
}

bool IsFloatDatatype(absl::string_view datatype) {
  return datatype == "FP32" || datatype == "FP16" || datatype == "BF16";
}

absl::StatusOr<DecodedRequest> DecodeRequest(const inference::ModelInferRequest& request,
                                             const std::vector<v1::TensorSpec>& inputs,
                                             const std::vector<v1::TensorSpec>& outputs,
                                             int64_t max_batch_size) {
  const bool raw = request.raw_input_contents_size() > 0;
  if (raw && request.raw_input_contents_size() != request.inputs_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "raw_input_contents has ", request.raw_input_contents_size(), " entries, the request has ",
        request.inputs_size(), " inputs (one entry per input, in order)"));
  }

  std::vector<CheckedInput> checked(inputs.size());
  std::vector<bool> seen(inputs.size(), false);
  for (int r = 0; r < request.inputs_size(); ++r) {
    const InputTensor& input = request.inputs(r);
    int index = -1;
    for (int i = 0; i < static_cast<int>(inputs.size()); ++i) {
      if (inputs[i].name() == input.name()) index = i;
    }
    if (index < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown input \"", input.name(), "\"; the model's inputs are ", QuotedNames(inputs)));
    }
    if (seen[index]) {
      return absl::InvalidArgumentError(
          absl::StrCat("input \"", input.name(), "\" appears more than once"));
    }
    seen[index] = true;
    if (raw && !TypedContentsField(input).empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("input \"", input.name(), "\" has ", TypedContentsField(input),
                       " while the request uses raw_input_contents; send one or the other"));
    }
    RETURN_IF_ERROR(CheckInput(input, inputs[index], max_batch_size, &checked[index]));
    checked[index].request_index = r;
  }
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!seen[i]) {
      return absl::InvalidArgumentError(absl::StrCat(
          "missing input \"", inputs[i].name(), "\" (", inputs[i].datatype(), " ",
          ShapeString(std::vector<int64_t>(inputs[i].shape().begin(), inputs[i].shape().end())),
          " per item)"));
    }
  }

  DecodedRequest decoded;
  for (size_t i = 0; i < checked.size(); ++i) {
    const int64_t batch = checked[i].shape[0];
    if (i > 0 && batch != decoded.batch_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("input \"", inputs[i].name(), "\": batch size ", batch, " differs from ",
                       decoded.batch_size, " of input \"", inputs[0].name(), "\""));
    }
    decoded.batch_size = batch;
    RETURN_IF_ERROR(CheckContents(request, checked[i]));
  }
  ASSIGN_OR_RETURN(decoded.outputs, DecodeOutputs(request, outputs));
  if (auto it = request.parameters().find("all_positions"); it != request.parameters().end()) {
    if (it->second.parameter_choice_case() != inference::InferParameter::kBoolParam) {
      return absl::InvalidArgumentError(
          absl::StrCat("request: parameter \"all_positions\" must be a bool, got ",
                       DescribeParameter(it->second)));
    }
    decoded.all_positions = it->second.bool_param();
  }

  RETURN_IF_ERROR(GuardTorch("decoding request inputs", [&]() -> absl::Status {
    for (const CheckedInput& in : checked) decoded.inputs.push_back(CopyInput(request, in));
    return absl::OkStatus();
  }));
  return decoded;
}

absl::Status EncodeResponse(const std::vector<torch::Tensor>& outputs,
                            const DecodedRequest& decoded,
                            const std::vector<v1::TensorSpec>& declared_outputs,
                            inference::ModelInferResponse* response) {
  if (outputs.size() != declared_outputs.size()) {
    return absl::InternalError(absl::StrCat("the model returned ", outputs.size(),
                                            " outputs, it declares ", declared_outputs.size()));
  }
  // Staged so that a failure leaves `response` untouched.
  inference::ModelInferResponse staged;
  for (const RequestedOutput& requested : decoded.outputs) {
    if (requested.index < 0 || requested.index >= static_cast<int>(outputs.size())) {
      return absl::InternalError(
          absl::StrCat("requested output index ", requested.index, " out of range"));
    }
    const v1::TensorSpec& spec = declared_outputs[requested.index];
    const std::string where = absl::StrCat("output \"", spec.name(), "\"");
    torch::Dtype dtype = torch::kFloat;
    if (!requested.as_fp32) {
      auto declared = DtypeFromDatatype(spec.datatype());
      if (!declared.ok()) {
        return absl::InternalError(
            absl::StrCat("model ", where, ": declared ", declared.status().message()));
      }
      dtype = *declared;
    }
    RETURN_IF_ERROR(GuardTorch(absl::StrCat("encoding ", where), [&]() -> absl::Status {
      const torch::Tensor& out = outputs[requested.index];
      if (!out.defined() || out.dim() < 1 || out.size(0) != decoded.batch_size) {
        return absl::InternalError(
            absl::StrCat(where, ": the model returned shape ",
                         out.defined() ? ShapeString(out.sizes().vec()) : "undefined",
                         ", expected batch ", decoded.batch_size, " first"));
      }
      // Copy to the host before converting: a half tensor crosses the bus at half the bytes.
      const torch::Tensor host = out.detach().to(torch::kCPU).to(dtype).contiguous();
      auto* tensor = staged.add_outputs();
      tensor->set_name(spec.name());
      tensor->set_datatype(DatatypeFromDtype(dtype));
      for (int64_t d : host.sizes()) tensor->add_shape(d);
      std::string* bytes = staged.add_raw_output_contents();
      if (host.numel() > 0) {
        bytes->assign(static_cast<const char*>(host.data_ptr()),
                      host.numel() * host.element_size());
      }
      return absl::OkStatus();
    }));
  }
  for (auto& tensor : *staged.mutable_outputs()) *response->add_outputs() = std::move(tensor);
  for (auto& bytes : *staged.mutable_raw_output_contents()) {
    *response->add_raw_output_contents() = std::move(bytes);
  }
  return absl::OkStatus();
}

}  // namespace mantissa
