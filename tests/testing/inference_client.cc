#include "tests/testing/inference_client.h"

#include <httplib.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <string_view>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "tests/testing/half_float.h"

namespace mantissa::testing {
namespace {

void SetDeadline(grpc::ClientContext& context, absl::Duration timeout) {
  context.set_deadline(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(timeout));
}

absl::Status ToAbsl(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

int64_t Elements(const google::protobuf::RepeatedField<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::shared_ptr<grpc::Channel> NewChannel(const std::string& address, bool own_connection) {
  grpc::ChannelArguments args;
  if (own_connection) args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

float HalfBitsToFloat(uint16_t h, bool bf16) { return bf16 ? Bf16ToFp32(h) : Fp16ToFp32(h); }

// `count` floats of `datatype` from `bytes`.
absl::StatusOr<std::vector<float>> DecodeFloats(std::string_view bytes, const std::string& datatype,
                                                int64_t count) {
  if (datatype != "FP32" && datatype != "FP16" && datatype != "BF16") {
    return absl::InvalidArgumentError(absl::StrCat("datatype ", datatype));
  }
  const size_t width = datatype == "FP32" ? 4 : 2;
  if (bytes.size() != static_cast<size_t>(count) * width) {
    return absl::InvalidArgumentError(
        absl::StrCat(bytes.size(), " raw bytes for ", count, " ", datatype, " elements"));
  }
  std::vector<float> values(count);
  for (int64_t i = 0; i < count; ++i) {
    if (width == 4) {
      std::memcpy(&values[i], bytes.data() + 4 * i, 4);
    } else {
      uint16_t h;
      std::memcpy(&h, bytes.data() + 2 * i, 2);
      values[i] = HalfBitsToFloat(h, datatype == "BF16");
    }
  }
  return values;
}

}  // namespace

InferenceClient::InferenceClient(const std::string& address, bool own_connection)
    : channel_(NewChannel(address, own_connection)),
      inference_(inference::GRPCInferenceService::NewStub(channel_)),
      models_(v1::ModelService::NewStub(channel_)),
      wait_for_ready_(own_connection) {}

grpc::Status InferenceClient::Infer(const inference::ModelInferRequest& request,
                                    inference::ModelInferResponse* response,
                                    absl::Duration timeout) {
  grpc::ClientContext context;
  SetDeadline(context, timeout);
  context.set_wait_for_ready(wait_for_ready_);
  return inference_->ModelInfer(&context, request, response);
}

absl::StatusOr<bool> InferenceClient::ServerLive() {
  grpc::ClientContext context;
  SetDeadline(context, absl::Seconds(10));
  inference::ServerLiveResponse response;
  grpc::Status s = inference_->ServerLive(&context, inference::ServerLiveRequest(), &response);
  if (!s.ok()) return ToAbsl(s);
  return response.live();
}

absl::StatusOr<bool> InferenceClient::ServerReady() {
  grpc::ClientContext context;
  SetDeadline(context, absl::Seconds(10));
  inference::ServerReadyResponse response;
  grpc::Status s = inference_->ServerReady(&context, inference::ServerReadyRequest(), &response);
  if (!s.ok()) return ToAbsl(s);
  return response.ready();
}

absl::StatusOr<bool> InferenceClient::ModelReady(const std::string& name,
                                                 const std::string& version) {
  grpc::ClientContext context;
  SetDeadline(context, absl::Seconds(10));
  inference::ModelReadyRequest request;
  request.set_name(name);
  request.set_version(version);
  inference::ModelReadyResponse response;
  grpc::Status s = inference_->ModelReady(&context, request, &response);
  if (!s.ok()) return ToAbsl(s);
  return response.ready();
}

grpc::Status InferenceClient::ModelMetadata(const std::string& name,
                                            inference::ModelMetadataResponse* response,
                                            const std::string& version) {
  grpc::ClientContext context;
  SetDeadline(context, absl::Seconds(10));
  inference::ModelMetadataRequest request;
  request.set_name(name);
  request.set_version(version);
  return inference_->ModelMetadata(&context, request, response);
}

grpc::Status InferenceClient::Load(const std::string& name) {
  grpc::ClientContext context;
  SetDeadline(context, absl::Seconds(60));
  inference::RepositoryModelLoadRequest request;
  request.set_model_name(name);
  inference::RepositoryModelLoadResponse response;
  return inference_->RepositoryModelLoad(&context, request, &response);
}

grpc::Status InferenceClient::Unload(const std::string& name) {
  grpc::ClientContext context;
  SetDeadline(context, absl::Seconds(60));
  inference::RepositoryModelUnloadRequest request;
  request.set_model_name(name);
  inference::RepositoryModelUnloadResponse response;
  return inference_->RepositoryModelUnload(&context, request, &response);
}

absl::StatusOr<inference::RepositoryIndexResponse> InferenceClient::RepositoryIndex(
    bool ready_only) {
  grpc::ClientContext context;
  SetDeadline(context, absl::Seconds(10));
  inference::RepositoryIndexRequest request;
  request.set_ready(ready_only);
  inference::RepositoryIndexResponse response;
  grpc::Status s = inference_->RepositoryIndex(&context, request, &response);
  if (!s.ok()) return ToAbsl(s);
  return response;
}

grpc::Status InferenceClient::Export(const std::string& job_id, const std::string& name,
                                     const std::string& precision, v1::ModelVersionStatus* model,
                                     std::optional<int> max_batch_size) {
  grpc::ClientContext context;
  SetDeadline(context, absl::Seconds(120));
  v1::ExportModelRequest request;
  request.set_job_id(job_id);
  request.set_name(name);
  request.set_precision(precision);
  if (max_batch_size.has_value()) request.mutable_batching()->set_max_batch_size(*max_batch_size);
  v1::ExportModelResponse response;
  grpc::Status s = models_->ExportModel(&context, request, &response);
  if (model != nullptr) *model = response.model();
  return s;
}

absl::StatusOr<std::vector<v1::ModelStatus>> InferenceClient::ListModels() {
  grpc::ClientContext context;
  SetDeadline(context, absl::Seconds(10));
  v1::ListModelsResponse response;
  grpc::Status s = models_->ListModels(&context, v1::ListModelsRequest(), &response);
  if (!s.ok()) return ToAbsl(s);
  return std::vector<v1::ModelStatus>(response.models().begin(), response.models().end());
}

std::string EncodeFloats(const std::vector<float>& values, const std::string& datatype) {
  std::string bytes;
  if (datatype == "FP32") {
    bytes.resize(values.size() * 4);
    std::memcpy(bytes.data(), values.data(), bytes.size());
    return bytes;
  }
  bytes.resize(values.size() * 2);
  for (size_t i = 0; i < values.size(); ++i) {
    const uint16_t h = datatype == "BF16" ? Fp32ToBf16(values[i]) : Fp32ToFp16(values[i]);
    std::memcpy(bytes.data() + 2 * i, &h, 2);
  }
  return bytes;
}

inference::ModelInferRequest FloatRequest(const std::string& model, const std::string& input,
                                          const std::vector<int64_t>& shape,
                                          const std::vector<float>& values,
                                          const std::string& datatype, bool raw) {
  inference::ModelInferRequest request;
  request.set_model_name(model);
  auto* tensor = request.add_inputs();
  tensor->set_name(input);
  tensor->set_datatype(datatype);
  for (int64_t d : shape) tensor->add_shape(d);
  if (raw) {
    request.add_raw_input_contents(EncodeFloats(values, datatype));
  } else {
    for (float v : values) tensor->mutable_contents()->add_fp32_contents(v);
  }
  return request;
}

void RequestFp32Output(inference::ModelInferRequest* request, const std::string& output) {
  auto* out = request->add_outputs();
  out->set_name(output);
  (*out->mutable_parameters())["datatype"].set_string_param("FP32");
}

absl::StatusOr<std::vector<float>> OutputFloats(const inference::ModelInferResponse& response,
                                                int index) {
  if (index >= response.outputs_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("response has ", response.outputs_size(), " outputs, wanted #", index));
  }
  const auto& tensor = response.outputs(index);
  const int64_t n = Elements(tensor.shape());
  std::vector<float> values;
  if (tensor.contents().fp32_contents_size() > 0) {
    values.assign(tensor.contents().fp32_contents().begin(),
                  tensor.contents().fp32_contents().end());
  } else {
    if (index >= response.raw_output_contents_size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("output ", tensor.name(), ": neither typed nor raw contents"));
    }
    auto decoded = DecodeFloats(response.raw_output_contents(index), tensor.datatype(), n);
    if (!decoded.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("output ", tensor.name(), ": ", decoded.status().message()));
    }
    values = *std::move(decoded);
  }
  if (static_cast<int64_t>(values.size()) != n) {
    return absl::InvalidArgumentError(absl::StrCat("output ", tensor.name(), ": ", values.size(),
                                                   " values for ", n, " elements"));
  }
  return values;
}

std::vector<int> ArgmaxRows(const std::vector<float>& values, int64_t cols) {
  std::vector<int> result;
  for (size_t row = 0; row + cols <= values.size(); row += cols) {
    int best = 0;
    for (int64_t c = 1; c < cols; ++c) {
      if (values[row + c] > values[row + best]) best = static_cast<int>(c);
    }
    result.push_back(best);
  }
  return result;
}

std::vector<float> PseudoRandomFloats(size_t count, uint32_t seed) {
  // A 32-bit LCG: reproducible everywhere, good enough for test inputs.
  uint32_t state = seed * 2654435761u + 1;
  std::vector<float> values(count);
  for (float& v : values) {
    state = state * 1664525u + 1013904223u;
    v = static_cast<float>(state >> 8) / static_cast<float>(1u << 24) * 4.0f - 2.0f;
  }
  return values;
}

namespace {

using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

void WriteShape(JsonWriter& w, const std::vector<int64_t>& shape) {
  w.Key("shape");
  w.StartArray();
  for (int64_t d : shape) w.Int64(d);
  w.EndArray();
}

// Opens the request body and its one input, up to its data or parameters:
// {"inputs": [{"name": ..., "shape": [...], "datatype": ...
void StartOneInput(JsonWriter& w, const std::string& input, const std::vector<int64_t>& shape,
                   const std::string& datatype) {
  w.StartObject();
  w.Key("inputs");
  w.StartArray();
  w.StartObject();
  w.Key("name");
  w.String(input.c_str());
  WriteShape(w, shape);
  w.Key("datatype");
  w.String(datatype.c_str());
}

// {"name": output, "parameters": {"binary_data": true}}, or every output
// binary through the request parameter when `output` is empty.
void WriteBinaryOutput(JsonWriter& w, const std::string& output) {
  if (output.empty()) return;
  w.Key("outputs");
  w.StartArray();
  w.StartObject();
  w.Key("name");
  w.String(output.c_str());
  w.Key("parameters");
  w.StartObject();
  w.Key("binary_data");
  w.Bool(true);
  w.EndObject();
  w.EndObject();
  w.EndArray();
}

}  // namespace

RestClient::RestClient(const std::string& host, int port, const std::string& token,
                       absl::Duration timeout)
    : client_(std::make_unique<httplib::Client>(host, port)) {
  client_->set_keep_alive(true);
  // httplib writes headers and body apart: without TCP_NODELAY, Nagle's
  // algorithm holds the body until the server's delayed ACK (~40 ms).
  client_->set_tcp_nodelay(true);
  const auto usec = absl::ToInt64Microseconds(timeout);
  client_->set_connection_timeout(usec / 1000000, usec % 1000000);
  client_->set_read_timeout(usec / 1000000, usec % 1000000);
  client_->set_write_timeout(usec / 1000000, usec % 1000000);
  if (!token.empty()) client_->set_bearer_token_auth(token.c_str());
}

RestClient::~RestClient() = default;

namespace {

absl::StatusOr<HttpResponse> ToResponse(const httplib::Result& result, const std::string& path) {
  if (!result) {
    return absl::UnavailableError(
        absl::StrCat("HTTP ", path, ": ", httplib::to_string(result.error())));
  }
  HttpResponse response;
  response.status = result->status;
  response.body = result->body;
  response.content_type = result->get_header_value("Content-Type");
  if (result->has_header("Inference-Header-Content-Length")) {
    const std::string value = result->get_header_value("Inference-Header-Content-Length");
    if (!absl::SimpleAtoi(value, &response.header_length) || response.header_length < 0 ||
        response.header_length > static_cast<int64_t>(response.body.size())) {
      return absl::InvalidArgumentError(absl::StrCat("HTTP ", path,
                                                     ": Inference-Header-Content-Length ", value,
                                                     " for a body of ", response.body.size()));
    }
  }
  return response;
}

}  // namespace

absl::StatusOr<HttpResponse> RestClient::Get(const std::string& path) {
  return ToResponse(client_->Get(path.c_str()), path);
}

absl::StatusOr<HttpResponse> RestClient::Post(const std::string& path, const RestRequest& request) {
  httplib::Headers headers;
  for (const auto& [key, value] : request.headers) headers.emplace(key, value);
  return ToResponse(client_->Post(path.c_str(), headers, request.body.data(), request.body.size(),
                                  request.content_type.c_str()),
                    path);
}

absl::StatusOr<HttpResponse> RestClient::Post(const std::string& path,
                                              const std::string& json_body) {
  return Post(path, RestRequest{json_body, "application/json", {}});
}

RestRequest RestJsonInferRequest(const std::string& input, const std::vector<int64_t>& shape,
                                 const std::vector<float>& values, const std::string& datatype,
                                 bool binary_output, const std::string& output) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  StartOneInput(w, input, shape, datatype);
  w.Key("data");
  w.StartArray();
  // Floats widen to doubles exactly, and RapidJSON writes the shortest
  // decimal that reads back as the same double.
  for (float v : values) w.Double(v);
  w.EndArray();
  w.EndObject();
  w.EndArray();
  if (binary_output && output.empty()) {
    w.Key("parameters");
    w.StartObject();
    w.Key("binary_data_output");
    w.Bool(true);
    w.EndObject();
  } else if (binary_output) {
    WriteBinaryOutput(w, output);
  }
  w.EndObject();
  return RestRequest{std::string(buffer.GetString(), buffer.GetSize()), "application/json", {}};
}

RestRequest RestBinaryInferRequest(const std::string& input, const std::vector<int64_t>& shape,
                                   const std::vector<float>& values, const std::string& output,
                                   const std::string& datatype) {
  const std::string bytes = EncodeFloats(values, datatype);
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  StartOneInput(w, input, shape, datatype);
  w.Key("parameters");
  w.StartObject();
  w.Key("binary_data_size");
  w.Uint64(bytes.size());
  w.EndObject();
  w.EndObject();
  w.EndArray();
  WriteBinaryOutput(w, output);
  w.EndObject();
  RestRequest request;
  request.body.assign(buffer.GetString(), buffer.GetSize());
  request.headers.emplace_back("Inference-Header-Content-Length",
                               std::to_string(request.body.size()));
  request.body += bytes;
  request.content_type = "application/octet-stream";
  return request;
}

namespace {

int64_t ShapeElements(const rapidjson::Value& shape) {
  int64_t n = 1;
  for (const auto& d : shape.GetArray()) n *= d.IsInt64() ? d.GetInt64() : -1;
  return n;
}

// Every JSON number of `data`, flattening nested arrays row-major.
bool FlattenNumbers(const rapidjson::Value& data, std::vector<float>& out) {
  if (data.IsNumber()) {
    out.push_back(static_cast<float>(data.GetDouble()));
    return true;
  }
  if (!data.IsArray()) return false;
  for (const auto& v : data.GetArray()) {
    if (!FlattenNumbers(v, out)) return false;
  }
  return true;
}

// Where output `index`'s binary bytes start: after the JSON header and every
// earlier binary output.
absl::StatusOr<size_t> BinaryOffset(const rapidjson::Value& outputs, int index,
                                    const HttpResponse& response) {
  size_t offset = response.header_length;
  for (int i = 0; i < index; ++i) {
    const auto& o = outputs[i];
    if (o.HasMember("parameters") && o["parameters"].IsObject() &&
        o["parameters"].HasMember("binary_data_size") &&
        o["parameters"]["binary_data_size"].IsUint64()) {
      offset += o["parameters"]["binary_data_size"].GetUint64();
    }
  }
  if (offset > response.body.size()) {
    return absl::InvalidArgumentError("binary outputs run past the body");
  }
  return offset;
}

}  // namespace

absl::StatusOr<std::vector<float>> RestOutputFloats(const HttpResponse& response, int index) {
  if (response.status != 200) {
    return absl::InvalidArgumentError(
        absl::StrCat("HTTP status ", response.status, ": ", response.body));
  }
  const size_t json_size =
      response.header_length >= 0 ? response.header_length : response.body.size();
  rapidjson::Document doc;
  doc.Parse(response.body.data(), json_size);
  if (doc.HasParseError() || !doc.IsObject() || !doc.HasMember("outputs") ||
      !doc["outputs"].IsArray()) {
    return absl::InvalidArgumentError(
        absl::StrCat("not an infer response: ", response.body.substr(0, 200)));
  }
  const auto& outputs = doc["outputs"];
  if (index >= static_cast<int>(outputs.Size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("response has ", outputs.Size(), " outputs, wanted #", index));
  }
  const auto& o = outputs[index];
  if (!o.IsObject() || !o.HasMember("shape") || !o["shape"].IsArray() || !o.HasMember("datatype") ||
      !o["datatype"].IsString()) {
    return absl::InvalidArgumentError(absl::StrCat("output #", index, " lacks shape or datatype"));
  }
  const int64_t n = ShapeElements(o["shape"]);
  const std::string datatype = o["datatype"].GetString();
  if (o.HasMember("parameters") && o["parameters"].IsObject() &&
      o["parameters"].HasMember("binary_data_size")) {
    const auto& size = o["parameters"]["binary_data_size"];
    if (response.header_length < 0 || !size.IsUint64()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "output #", index, ": binary_data_size without Inference-Header-Content-Length"));
    }
    auto offset = BinaryOffset(outputs, index, response);
    if (!offset.ok()) return offset.status();
    if (*offset + size.GetUint64() > response.body.size()) {
      return absl::InvalidArgumentError(absl::StrCat("output #", index, " runs past the body"));
    }
    return DecodeFloats(std::string_view(response.body).substr(*offset, size.GetUint64()), datatype,
                        n);
  }
  std::vector<float> values;
  if (!o.HasMember("data") || !FlattenNumbers(o["data"], values) ||
      static_cast<int64_t>(values.size()) != n) {
    return absl::InvalidArgumentError(
        absl::StrCat("output #", index, ": data does not hold ", n, " numbers"));
  }
  return values;
}

}  // namespace mantissa::testing
