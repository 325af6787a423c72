#include "client/infer_request.h"

#include <cmath>
#include <initializer_list>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/tensor_bytes.h"
#include "google/protobuf/map.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

namespace mantissa::cli {
namespace {

using google::protobuf::ListValue;
using google::protobuf::Struct;
using google::protobuf::Value;

const char* KindName(const Value& value) {
  switch (value.kind_case()) {
    case Value::kNullValue:
      return "null";
    case Value::kNumberValue:
      return "a number";
    case Value::kStringValue:
      return "a string";
    case Value::kBoolValue:
      return "a boolean";
    case Value::kStructValue:
      return "an object";
    case Value::kListValue:
      return "a list";
    default:
      return "nothing";
  }
}

absl::Status Expected(const std::string& where, absl::string_view what, const Value& got) {
  return absl::InvalidArgumentError(
      absl::StrCat(where, ": expected ", what, ", got ", KindName(got)));
}

// Typos should not pass silently: every object admits only its known keys.
absl::Status CheckKeys(const Struct& object, const std::string& where,
                       std::initializer_list<const char*> allowed) {
  for (const auto& [key, value] : object.fields()) {
    bool known = false;
    for (const char* name : allowed) known = known || key == name;
    if (!known) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": unknown field '", key,
                                                     "'; expected ", absl::StrJoin(allowed, ", ")));
    }
  }
  return absl::OkStatus();
}

const Value* Find(const Struct& object, const char* key) {
  auto it = object.fields().find(key);
  return it == object.fields().end() ? nullptr : &it->second;
}

absl::StatusOr<std::string> RequiredString(const Struct& object, const std::string& where,
                                           const char* key) {
  const std::string field = absl::StrCat(where, ".", key);
  const Value* value = Find(object, key);
  if (value == nullptr) return absl::InvalidArgumentError(absl::StrCat(field, ": is required"));
  if (value->kind_case() != Value::kStringValue) return Expected(field, "a string", *value);
  if (value->string_value().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": is empty"));
  }
  return value->string_value();
}

bool IsWholeNumber(double value) { return std::isfinite(value) && std::trunc(value) == value; }

absl::Status ParseParameters(const Value& value, const std::string& where,
                             google::protobuf::Map<std::string, inference::InferParameter>* out) {
  if (value.kind_case() != Value::kStructValue) return Expected(where, "an object", value);
  for (const auto& [key, parameter] : value.struct_value().fields()) {
    inference::InferParameter& param = (*out)[key];
    switch (parameter.kind_case()) {
      case Value::kBoolValue:
        param.set_bool_param(parameter.bool_value());
        break;
      case Value::kStringValue:
        param.set_string_param(parameter.string_value());
        break;
      case Value::kNumberValue:
        if (IsWholeNumber(parameter.number_value()) &&
            std::fabs(parameter.number_value()) < 9223372036854775808.0) {
          param.set_int64_param(static_cast<int64_t>(parameter.number_value()));
        } else {
          param.set_double_param(parameter.number_value());
        }
        break;
      default:
        return Expected(absl::StrCat(where, ".", key), "a boolean, string or number", parameter);
    }
  }
  return absl::OkStatus();
}

// Appends the numbers of `value`, a number or a (nested) list of them.
absl::Status Flatten(const Value& value, const std::string& where, std::vector<double>* out) {
  if (value.kind_case() == Value::kNumberValue) {
    out->push_back(value.number_value());
    return absl::OkStatus();
  }
  if (value.kind_case() != Value::kListValue) return Expected(where, "a number or a list", value);
  const ListValue& list = value.list_value();
  for (int i = 0; i < list.values_size(); ++i) {
    if (absl::Status status = Flatten(list.values(i), absl::StrCat(where, "[", i, "]"), out);
        !status.ok()) {
      return status;
    }
  }
  return absl::OkStatus();
}

absl::Status ParseInput(const Value& value, const std::string& where,
                        inference::ModelInferRequest* request) {
  if (value.kind_case() != Value::kStructValue) return Expected(where, "an object", value);
  const Struct& object = value.struct_value();
  if (absl::Status status =
          CheckKeys(object, where, {"name", "shape", "datatype", "data", "parameters"});
      !status.ok()) {
    return status;
  }
  inference::ModelInferRequest::InferInputTensor* input = request->add_inputs();
  absl::StatusOr<std::string> name = RequiredString(object, where, "name");
  if (!name.ok()) return name.status();
  input->set_name(*name);
  absl::StatusOr<std::string> datatype = RequiredString(object, where, "datatype");
  if (!datatype.ok()) return datatype.status();
  if (DatatypeSize(*datatype) == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ".datatype: '", *datatype, "' is not one of ", kDatatypes));
  }
  input->set_datatype(*datatype);

  const std::string shape_field = absl::StrCat(where, ".shape");
  const Value* shape = Find(object, "shape");
  if (shape == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(shape_field, ": is required"));
  }
  if (shape->kind_case() != Value::kListValue) return Expected(shape_field, "a list", *shape);
  int64_t elements = 1;
  for (int i = 0; i < shape->list_value().values_size(); ++i) {
    const Value& dim = shape->list_value().values(i);
    const std::string dim_field = absl::StrCat(shape_field, "[", i, "]");
    if (dim.kind_case() != Value::kNumberValue) return Expected(dim_field, "a number", dim);
    const double size = dim.number_value();
    if (!IsWholeNumber(size) || size < 0 || size > 1e12 ||
        __builtin_mul_overflow(elements, static_cast<int64_t>(size), &elements)) {
      return absl::InvalidArgumentError(
          absl::StrCat(dim_field, ": ", size, " is not a dimension size (a whole number >= 0)"));
    }
    input->add_shape(static_cast<int64_t>(size));
  }

  const std::string data_field = absl::StrCat(where, ".data");
  const Value* data = Find(object, "data");
  if (data == nullptr) return absl::InvalidArgumentError(absl::StrCat(data_field, ": is required"));
  std::vector<double> values;
  if (absl::Status status = Flatten(*data, data_field, &values); !status.ok()) return status;
  if (static_cast<int64_t>(values.size()) != elements) {
    return absl::InvalidArgumentError(
        absl::StrCat(data_field, ": ", values.size(), " values, but shape [",
                     absl::StrJoin(input->shape(), ","), "] holds ", elements));
  }
  absl::StatusOr<std::string> bytes = EncodeValues(*datatype, values);
  if (!bytes.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(data_field, ": ", bytes.status().message()));
  }
  request->add_raw_input_contents(*std::move(bytes));

  if (const Value* parameters = Find(object, "parameters")) {
    return ParseParameters(*parameters, absl::StrCat(where, ".parameters"),
                           input->mutable_parameters());
  }
  return absl::OkStatus();
}

absl::Status ParseOutput(const Value& value, const std::string& where,
                         inference::ModelInferRequest* request) {
  if (value.kind_case() != Value::kStructValue) return Expected(where, "an object", value);
  const Struct& object = value.struct_value();
  if (absl::Status status = CheckKeys(object, where, {"name", "parameters"}); !status.ok()) {
    return status;
  }
  inference::ModelInferRequest::InferRequestedOutputTensor* output = request->add_outputs();
  absl::StatusOr<std::string> name = RequiredString(object, where, "name");
  if (!name.ok()) return name.status();
  output->set_name(*name);
  if (const Value* parameters = Find(object, "parameters")) {
    return ParseParameters(*parameters, absl::StrCat(where, ".parameters"),
                           output->mutable_parameters());
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<inference::ModelInferRequest> ParseInferRequestJson(absl::string_view json) {
  Value document;
  const auto parsed = google::protobuf::util::JsonStringToMessage(
      std::string(json), &document, google::protobuf::util::JsonParseOptions());
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("not valid JSON: ", std::string(parsed.message())));
  }
  if (document.kind_case() != Value::kStructValue) {
    return Expected("request", "a JSON object", document);
  }
  const Struct& object = document.struct_value();
  if (absl::Status status = CheckKeys(object, "request", {"id", "parameters", "inputs", "outputs"});
      !status.ok()) {
    return status;
  }
  inference::ModelInferRequest request;
  if (const Value* id = Find(object, "id")) {
    if (id->kind_case() != Value::kStringValue) return Expected("id", "a string", *id);
    request.set_id(id->string_value());
  }
  if (const Value* parameters = Find(object, "parameters")) {
    if (absl::Status status =
            ParseParameters(*parameters, "parameters", request.mutable_parameters());
        !status.ok()) {
      return status;
    }
  }
  const Value* inputs = Find(object, "inputs");
  if (inputs == nullptr) return absl::InvalidArgumentError("inputs: is required");
  if (inputs->kind_case() != Value::kListValue) return Expected("inputs", "a list", *inputs);
  if (inputs->list_value().values().empty()) {
    return absl::InvalidArgumentError("inputs: is empty");
  }
  for (int i = 0; i < inputs->list_value().values_size(); ++i) {
    if (absl::Status status =
            ParseInput(inputs->list_value().values(i), absl::StrCat("inputs[", i, "]"), &request);
        !status.ok()) {
      return status;
    }
  }
  if (const Value* outputs = Find(object, "outputs")) {
    if (outputs->kind_case() != Value::kListValue) return Expected("outputs", "a list", *outputs);
    for (int i = 0; i < outputs->list_value().values_size(); ++i) {
      if (absl::Status status = ParseOutput(outputs->list_value().values(i),
                                            absl::StrCat("outputs[", i, "]"), &request);
          !status.ok()) {
        return status;
      }
    }
  }
  return request;
}

absl::StatusOr<inference::ModelInferRequest> RandomInferRequest(
    const inference::ModelMetadataResponse& metadata, int64_t batch, bool metadata_has_batch_dim,
    uint64_t seed) {
  if (batch < 1) {
    return absl::InvalidArgumentError(absl::StrCat("batch: must be >= 1, got ", batch));
  }
  if (metadata.inputs().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model ", metadata.name(), " declares no inputs"));
  }
  std::mt19937_64 engine(seed);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  std::uniform_int_distribution<int> token(0, 1);
  inference::ModelInferRequest request;
  request.set_model_name(metadata.name());
  for (const auto& spec : metadata.inputs()) {
    auto* input = request.add_inputs();
    input->set_name(spec.name());
    input->set_datatype(spec.datatype());
    input->add_shape(batch);
    int64_t elements = batch;
    for (int d = metadata_has_batch_dim ? 1 : 0; d < spec.shape_size(); ++d) {
      const int64_t size = spec.shape(d) < 0 ? kRandomVariableDim : spec.shape(d);
      input->add_shape(size);
      if (__builtin_mul_overflow(elements, size, &elements) || elements > (int64_t{1} << 31)) {
        return absl::InvalidArgumentError(absl::StrCat("input ", spec.name(), ": shape [",
                                                       absl::StrJoin(input->shape(), ","),
                                                       "...] is too large for random data"));
      }
    }
    const bool integer = spec.datatype() == "INT64";
    std::vector<double> values(elements);
    for (double& value : values) value = integer ? token(engine) : uniform(engine);
    absl::StatusOr<std::string> bytes = EncodeValues(spec.datatype(), values);
    if (!bytes.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("input ", spec.name(), ": ", bytes.status().message()));
    }
    request.add_raw_input_contents(*std::move(bytes));
  }
  return request;
}

void RequestFp32Outputs(inference::ModelInferRequest* request) {
  (*request->mutable_parameters())["output_datatype"].set_string_param("FP32");
}

}  // namespace mantissa::cli
