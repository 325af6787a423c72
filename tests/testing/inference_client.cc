#include "tests/testing/inference_client.h"

#include <chrono>
#include <cstring>

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
    const std::string& raw = response.raw_output_contents(index);
    const size_t width = tensor.datatype() == "FP32" ? 4 : 2;
    if (tensor.datatype() != "FP32" && tensor.datatype() != "BF16" && tensor.datatype() != "FP16") {
      return absl::InvalidArgumentError(
          absl::StrCat("output ", tensor.name(), ": datatype ", tensor.datatype()));
    }
    if (raw.size() != static_cast<size_t>(n) * width) {
      return absl::InvalidArgumentError(absl::StrCat("output ", tensor.name(), ": ", raw.size(),
                                                     " raw bytes for ", n, " ", tensor.datatype(),
                                                     " elements"));
    }
    values.resize(n);
    for (int64_t i = 0; i < n; ++i) {
      if (width == 4) {
        std::memcpy(&values[i], raw.data() + 4 * i, 4);
      } else {
        uint16_t h;
        std::memcpy(&h, raw.data() + 2 * i, 2);
        values[i] = tensor.datatype() == "BF16" ? Bf16ToFp32(h) : Fp16ToFp32(h);
      }
    }
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

}  // namespace mantissa::testing
