#include "client/model_commands.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <limits>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/infer_request.h"
#include "client/json_format.h"
#include "client/model_format.h"
#include "client/tensor_bytes.h"
#include "client/training_client.h"

namespace mantissa::cli {
namespace {

// mantissad's ModelMetadata shapes lead with the batch dimension (-1), as
// Triton's do for batching models.
constexpr bool kMetadataHasBatchDim = true;
// Random inputs are seeded, so that two runs send the same request.
constexpr uint64_t kRandomSeed = 0;

void PrintJson(const google::protobuf::Message& message, const CommandIo& io) {
  *io.out << ToJson(message, /*pretty=*/true) << '\n' << std::flush;
}

absl::Status FillServing(const ServingFlags& flags, std::string* precision,
                         v1::BatchingSettings* batching) {
  if (flags.precision) {
    if (flags.precision->empty()) return absl::InvalidArgumentError("--precision is empty");
    *precision = *flags.precision;
  }
  // The daemon checks the ranges; here they only have to fit the fields.
  if (flags.max_batch_size) {
    if (*flags.max_batch_size < std::numeric_limits<int32_t>::min() ||
        *flags.max_batch_size > std::numeric_limits<int32_t>::max()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--max-batch-size: '", *flags.max_batch_size, "' is out of range"));
    }
    batching->set_max_batch_size(static_cast<int32_t>(*flags.max_batch_size));
  }
  if (flags.max_queue_delay_us) batching->set_max_queue_delay_us(*flags.max_queue_delay_us);
  return absl::OkStatus();
}

bool HasServingFlags(const ServingFlags& flags) {
  return flags.precision || flags.max_batch_size || flags.max_queue_delay_us;
}

absl::StatusOr<std::string> ReadInput(const std::string& path) {
  std::ostringstream text;
  if (path == "-") {
    text << std::cin.rdbuf();
    return text.str();
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("--input ", path, ": cannot read: ", std::strerror(errno)));
  }
  text << in.rdbuf();
  return text.str();
}

// The version that a load made current: the latest of `name`.
const v1::ModelVersionStatus* LatestVersion(const v1::ListModelsResponse& models,
                                            const std::string& name) {
  for (const v1::ModelStatus& model : models.models()) {
    if (model.name() == name && !model.versions().empty()) return &*model.versions().rbegin();
  }
  return nullptr;
}

// Prints a version that a call has just loaded; kExitOk if it is READY.
int ReportLoaded(const v1::ModelVersionStatus& model, const CommandIo& io) {
  if (io.json) {
    // The shape of ExportModelResponse and RegisterModelResponse alike.
    v1::ExportModelResponse response;
    *response.mutable_model() = model;
    PrintJson(response, io);
  } else {
    *io.out << FormatModelVersion(model) << std::flush;
  }
  return model.state() == "READY" ? kExitOk : kExitFailure;
}

}  // namespace

absl::StatusOr<v1::ExportModelRequest> BuildExportRequest(const std::string& job_id,
                                                          const ExportOptions& options) {
  if (absl::StripAsciiWhitespace(job_id).empty()) {
    return absl::InvalidArgumentError("JOB is empty; give the id of a SUCCEEDED job");
  }
  if (!options.name || options.name->empty()) {
    return absl::InvalidArgumentError("--name is required: the name to serve the model under");
  }
  v1::ExportModelRequest request;
  request.set_job_id(job_id);
  request.set_name(*options.name);
  if (absl::Status status =
          FillServing(options.serving, request.mutable_precision(), request.mutable_batching());
      !status.ok()) {
    return status;
  }
  if (request.batching().ByteSizeLong() == 0) request.clear_batching();
  return request;
}

absl::StatusOr<v1::TensorSpec> ParseTensorSpec(absl::string_view text) {
  const std::vector<std::string> parts = absl::StrSplit(text, ':');
  if (parts.size() != 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text, "' is not NAME:DATATYPE:SHAPE, e.g. input:FP32:3,32,32"));
  }
  if (parts[0].empty()) return absl::InvalidArgumentError(absl::StrCat("'", text, "': empty name"));
  v1::TensorSpec spec;
  spec.set_name(parts[0]);
  const std::string datatype = absl::AsciiStrToUpper(parts[1]);
  if (DatatypeSize(datatype) == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text, "': datatype '", parts[1], "' is not one of ", kDatatypes));
  }
  spec.set_datatype(datatype);
  if (!parts[2].empty()) {
    for (absl::string_view dim : absl::StrSplit(parts[2], ',')) {
      int64_t size = 0;
      if (!absl::SimpleAtoi(dim, &size) || (size < 1 && size != -1)) {
        return absl::InvalidArgumentError(absl::StrCat("'", text, "': dimension '", dim,
                                                       "' is not a size >= 1 or -1 (variable)"));
      }
      spec.add_shape(size);
    }
  }
  return spec;
}

absl::StatusOr<LoadRequest> BuildLoadRequest(const std::string& name, const LoadOptions& options) {
  if (absl::StripAsciiWhitespace(name).empty()) {
    return absl::InvalidArgumentError("NAME is empty; give the name of a model");
  }
  LoadRequest request;
  request.load.set_model_name(name);
  if (!options.torchscript) {
    if (!options.inputs.empty() || !options.outputs.empty() || HasServingFlags(options.serving)) {
      return absl::InvalidArgumentError(
          "--input, --output, --precision and the batching flags need --torchscript; without "
          "it, load reloads NAME as the repository has it");
    }
    return request;
  }
  if (options.torchscript->empty()) return absl::InvalidArgumentError("--torchscript is empty");
  if (options.inputs.empty() || options.outputs.empty()) {
    return absl::InvalidArgumentError(
        "--torchscript needs at least one --input and one --output, e.g. "
        "--input input:FP32:3,32,32 --output logits:FP32:10");
  }
  v1::RegisterModelRequest& registration = request.registration.emplace();
  registration.set_name(name);
  std::error_code ec;
  const std::filesystem::path path = std::filesystem::absolute(*options.torchscript, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("--torchscript ", *options.torchscript, ": ", ec.message()));
  }
  registration.set_torchscript_path(path.lexically_normal().string());
  for (const std::string& input : options.inputs) {
    absl::StatusOr<v1::TensorSpec> spec = ParseTensorSpec(input);
    if (!spec.ok())
      return absl::InvalidArgumentError(absl::StrCat("--input ", spec.status().message()));
    *registration.add_inputs() = *std::move(spec);
  }
  for (const std::string& output : options.outputs) {
    absl::StatusOr<v1::TensorSpec> spec = ParseTensorSpec(output);
    if (!spec.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--output ", spec.status().message()));
    }
    *registration.add_outputs() = *std::move(spec);
  }
  if (absl::Status status = FillServing(options.serving, registration.mutable_precision(),
                                        registration.mutable_batching());
      !status.ok()) {
    return status;
  }
  if (registration.batching().ByteSizeLong() == 0) registration.clear_batching();
  return request;
}

absl::StatusOr<InferPlan> BuildInferPlan(const std::string& model, const InferOptions& options) {
  if (absl::StripAsciiWhitespace(model).empty()) {
    return absl::InvalidArgumentError("NAME is empty; give the name of a model");
  }
  if (options.input.has_value() == options.random) {
    return absl::InvalidArgumentError(
        "give either --input FILE.json or --random: what to send the model");
  }
  InferPlan plan;
  plan.model = model;
  plan.output_fp32 = options.output_fp32;
  if (options.random) {
    if (options.batch) {
      if (*options.batch < 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("--batch: must be >= 1, got ", *options.batch));
      }
      plan.random_batch = *options.batch;
    }
    return plan;
  }
  if (options.batch) {
    return absl::InvalidArgumentError("--batch goes with --random; --input sets its own shapes");
  }
  absl::StatusOr<std::string> text = ReadInput(*options.input);
  if (!text.ok()) return text.status();
  absl::StatusOr<inference::ModelInferRequest> request = ParseInferRequestJson(*text);
  if (!request.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--input ", *options.input, ": ", request.status().message()));
  }
  request->set_model_name(model);
  plan.request = *std::move(request);
  return plan;
}

int RunExport(ModelClient& client, const v1::ExportModelRequest& request, const CommandIo& io) {
  absl::StatusOr<v1::ExportModelResponse> response = client.ExportModel(request);
  if (!response.ok()) return ReportError(response.status(), io);
  return ReportLoaded(response->model(), io);
}

int RunLoad(ModelClient& client, const LoadRequest& request, const CommandIo& io) {
  if (request.registration) {
    absl::StatusOr<v1::RegisterModelResponse> response =
        client.RegisterModel(*request.registration);
    if (!response.ok()) return ReportError(response.status(), io);
    return ReportLoaded(response->model(), io);
  }
  const std::string& name = request.load.model_name();
  absl::StatusOr<inference::RepositoryModelLoadResponse> loaded =
      client.RepositoryModelLoad(request.load);
  if (!loaded.ok()) return ReportError(loaded.status(), io);
  // The load answers nothing but OK; the listing shows what it loaded.
  absl::StatusOr<v1::ListModelsResponse> models = client.ListModels(v1::ListModelsRequest());
  const v1::ModelVersionStatus* model = models.ok() ? LatestVersion(*models, name) : nullptr;
  if (model == nullptr) {
    if (io.json) {
      PrintJson(*loaded, io);
    } else {
      *io.out << "model " << name << " loaded\n" << std::flush;
    }
    return kExitOk;
  }
  return ReportLoaded(*model, io);
}

int RunModels(ModelClient& client, const CommandIo& io) {
  absl::StatusOr<v1::ListModelsResponse> response = client.ListModels(v1::ListModelsRequest());
  if (!response.ok()) return ReportError(response.status(), io);
  if (io.json) {
    PrintJson(*response, io);
  } else {
    *io.out << FormatModelTable(*response) << std::flush;
  }
  return kExitOk;
}

int RunInfer(ModelClient& client, const InferPlan& plan, const CommandIo& io) {
  inference::ModelInferRequest request;
  if (plan.request) {
    request = *plan.request;
  } else {
    inference::ModelMetadataRequest metadata_request;
    metadata_request.set_name(plan.model);
    absl::StatusOr<inference::ModelMetadataResponse> metadata =
        client.ModelMetadata(metadata_request);
    if (!metadata.ok()) return ReportError(metadata.status(), io);
    absl::StatusOr<inference::ModelInferRequest> random =
        RandomInferRequest(*metadata, plan.random_batch, kMetadataHasBatchDim, kRandomSeed);
    if (!random.ok()) return ReportError(random.status(), io);
    request = *std::move(random);
    request.set_model_name(plan.model);
  }
  if (plan.output_fp32) RequestFp32Outputs(&request);
  absl::StatusOr<inference::ModelInferResponse> response = client.ModelInfer(request);
  if (!response.ok()) return ReportError(response.status(), io);
  absl::StatusOr<std::string> text =
      io.json ? FormatInferResponseJson(*response) : FormatInferResponse(*response);
  if (!text.ok()) return ReportError(text.status(), io);
  *io.out << *text << std::flush;
  return kExitOk;
}

int RunDeleteModel(ModelClient& client, const std::string& name, int64_t version,
                   const CommandIo& io) {
  v1::DeleteModelVersionRequest request;
  request.set_name(name);
  request.set_version(version);
  absl::StatusOr<v1::DeleteModelVersionResponse> response = client.DeleteModelVersion(request);
  if (!response.ok()) return ReportError(response.status(), io);
  if (io.json) {
    PrintJson(*response, io);
  } else if (version == 0) {
    *io.out << "model " << name << " deleted (every version)\n" << std::flush;
  } else {
    *io.out << "model " << name << " version " << version << " deleted\n" << std::flush;
  }
  return kExitOk;
}

int RunUnload(ModelClient& client, const std::string& name, const CommandIo& io) {
  inference::RepositoryModelUnloadRequest request;
  request.set_model_name(name);
  absl::StatusOr<inference::RepositoryModelUnloadResponse> response =
      client.RepositoryModelUnload(request);
  if (!response.ok()) return ReportError(response.status(), io);
  if (io.json) {
    PrintJson(*response, io);
  } else {
    *io.out << "model " << name << " unloaded\n" << std::flush;
  }
  return kExitOk;
}

}  // namespace mantissa::cli
