#include "client/model_commands.h"

#include <cerrno>
#include <cmath>
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

// Sets `promotion` only when a flag is given; the daemon checks the ranges
// too, this saves a round trip.
absl::Status FillPromotion(const PromotionFlags& flags, v1::PromotionPolicy* promotion,
                           bool* given) {
  *given = flags.min_top1_agreement || flags.max_mean_rel_diff;
  if (flags.min_top1_agreement) {
    const double x = *flags.min_top1_agreement;
    if (!(x >= 0 && x <= 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--min-top1-agreement: must be in [0, 1], got ", x));
    }
    promotion->set_min_top1_agreement(x);
  }
  if (flags.max_mean_rel_diff) {
    const double x = *flags.max_mean_rel_diff;
    if (!(x >= 0) || std::isinf(x)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--max-mean-rel-diff: must be finite and >= 0, got ", x));
    }
    promotion->set_max_mean_rel_diff(x);
  }
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

// The version `name` serves (ShownVersion); null when it is not listed.
const v1::ModelVersionStatus* ServingVersion(const v1::ListModelsResponse& models,
                                             const std::string& name) {
  for (const v1::ModelStatus& model : models.models()) {
    if (model.name() == name && !model.versions().empty()) return &ShownVersion(model);
  }
  return nullptr;
}

// Prints a version that a call has just loaded; kExitOk if it is READY.
int ReportLoaded(const v1::ModelVersionStatus& model, const CommandIo& io) {
  if (io.json) {
    // The shape of ExportModelResponse and RegisterModelResponse alike.
    v1::ExportModelResponse response;
    *response.mutable_model() = model;
    PrintJson(response, /*pretty=*/true, io);
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
  bool promotion = false;
  if (absl::Status status =
          FillPromotion(options.promotion, request.mutable_promotion(), &promotion);
      !status.ok()) {
    return status;
  }
  if (!promotion) request.clear_promotion();
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
    if (!options.inputs.empty() || !options.outputs.empty() || HasServingFlags(options.serving) ||
        options.promotion.min_top1_agreement || options.promotion.max_mean_rel_diff) {
      return absl::InvalidArgumentError(
          "--input, --output, --precision, the batching and the promotion flags need "
          "--torchscript; without it, load reloads NAME as the repository has it");
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
  bool promotion = false;
  if (absl::Status status =
          FillPromotion(options.promotion, registration.mutable_promotion(), &promotion);
      !status.ok()) {
    return status;
  }
  if (!promotion) registration.clear_promotion();
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
  if (options.version) {
    if (*options.version < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--version: must be >= 1, got ", *options.version));
    }
    plan.version = std::to_string(*options.version);
  }
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
  const v1::ModelVersionStatus* model = models.ok() ? ServingVersion(*models, name) : nullptr;
  if (model == nullptr) {
    if (io.json) {
      PrintJson(*loaded, /*pretty=*/true, io);
    } else {
      *io.out << "model " << name << " loaded\n" << std::flush;
    }
    return kExitOk;
  }
  return ReportLoaded(*model, io);
}

int RunModels(ModelClient& client, const CommandIo& io) {
  return PrintResponse(client.ListModels(v1::ListModelsRequest()), FormatModelTable, io);
}

int RunInfer(ModelClient& client, const InferPlan& plan, const CommandIo& io) {
  inference::ModelInferRequest request;
  if (plan.request) {
    request = *plan.request;
  } else {
    inference::ModelMetadataRequest metadata_request;
    metadata_request.set_name(plan.model);
    metadata_request.set_version(plan.version);
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
  request.set_model_version(plan.version);
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
    PrintJson(*response, /*pretty=*/true, io);
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
    PrintJson(*response, /*pretty=*/true, io);
  } else {
    *io.out << "model " << name << " unloaded\n" << std::flush;
  }
  return kExitOk;
}

namespace {

constexpr char kEmptyName[] = "NAME is empty; give the name of a model";
constexpr char kPolicyUsage[] = "give latest [N], all, or specific V [V...]";

absl::StatusOr<int64_t> ParseVersionArgument(absl::string_view what, const std::string& text) {
  int64_t version = 0;
  if (!absl::SimpleAtoi(text, &version) || version < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": '", text, "' is not a version (an integer >= 1)"));
  }
  return version;
}

}  // namespace

absl::StatusOr<v1::SetVersionPolicyRequest> BuildVersionPolicyRequest(
    const std::string& name, const std::vector<std::string>& args) {
  if (absl::StripAsciiWhitespace(name).empty()) return absl::InvalidArgumentError(kEmptyName);
  if (args.empty())
    return absl::InvalidArgumentError(absl::StrCat("missing policy; ", kPolicyUsage));
  v1::SetVersionPolicyRequest request;
  request.set_name(name);
  v1::VersionPolicy& policy = *request.mutable_version_policy();
  const std::string& kind = args.front();
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (kind == "latest") {
    if (rest.size() > 1) {
      return absl::InvalidArgumentError("latest takes at most one number, N (default 1)");
    }
    int64_t n = 1;
    if (!rest.empty() && (!absl::SimpleAtoi(rest[0], &n) || n < 1 || n > 1000000)) {
      return absl::InvalidArgumentError(
          absl::StrCat("latest: '", rest[0], "' is not a number of versions (>= 1)"));
    }
    policy.mutable_latest()->set_num_versions(static_cast<uint32_t>(n));
  } else if (kind == "all") {
    if (!rest.empty()) return absl::InvalidArgumentError("all takes no versions");
    policy.mutable_all();
  } else if (kind == "specific") {
    if (rest.empty()) {
      return absl::InvalidArgumentError("specific needs at least one version, e.g. specific 1 3");
    }
    for (const std::string& text : rest) {
      absl::StatusOr<int64_t> version = ParseVersionArgument("specific", text);
      if (!version.ok()) return version.status();
      policy.mutable_specific()->add_versions(*version);
    }
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unknown policy '", kind, "'; ", kPolicyUsage));
  }
  return request;
}

absl::StatusOr<v1::RollbackModelRequest> BuildRollbackRequest(const std::string& name,
                                                              const std::string& version) {
  if (absl::StripAsciiWhitespace(name).empty()) return absl::InvalidArgumentError(kEmptyName);
  absl::StatusOr<int64_t> parsed = ParseVersionArgument("VERSION", version);
  if (!parsed.ok()) return parsed.status();
  v1::RollbackModelRequest request;
  request.set_name(name);
  request.set_version(*parsed);
  return request;
}

absl::StatusOr<inference::ModelStatisticsRequest> BuildStatisticsRequest(
    const std::vector<std::string>& args, const std::optional<int64_t>& version) {
  if (args.size() > 1) {
    return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", args[1], "'"));
  }
  inference::ModelStatisticsRequest request;
  if (!args.empty()) {
    if (absl::StripAsciiWhitespace(args[0]).empty()) return absl::InvalidArgumentError(kEmptyName);
    request.set_name(args[0]);
  }
  if (version) {
    if (request.name().empty()) {
      return absl::InvalidArgumentError("--version needs a MODEL: the model it is a version of");
    }
    if (*version < 1) {
      return absl::InvalidArgumentError(absl::StrCat("--version: must be >= 1, got ", *version));
    }
    request.set_version(absl::StrCat(*version));
  }
  return request;
}

int RunVersionPolicy(ModelClient& client, const v1::SetVersionPolicyRequest& request,
                     const CommandIo& io) {
  absl::StatusOr<v1::SetVersionPolicyResponse> response = client.SetVersionPolicy(request);
  if (!response.ok()) return ReportError(response.status(), io);
  if (io.json) {
    PrintJson(*response, /*pretty=*/true, io);
  } else {
    *io.out << FormatModelStatus(response->model()) << std::flush;
  }
  return kExitOk;
}

int RunRollback(ModelClient& client, const v1::RollbackModelRequest& request, const CommandIo& io) {
  absl::StatusOr<v1::RollbackModelResponse> response = client.RollbackModel(request);
  if (!response.ok()) return ReportError(response.status(), io);
  if (io.json) {
    PrintJson(*response, /*pretty=*/true, io);
  } else {
    *io.out << FormatModelStatus(response->model()) << std::flush;
  }
  return kExitOk;
}

int RunStats(ModelClient& client, const inference::ModelStatisticsRequest& request,
             const CommandIo& io) {
  return PrintResponse(client.ModelStatistics(request), FormatStatistics, io);
}

namespace {

// How a served model runs; shared by export and load --torchscript.
void DefineServingFlags(ArgParser& parser, ServingFlags& o) {
  parser.AddString("precision", &o.precision,
                   "serving precision: bf16-true, 16-true or 32-true (default 16-true where the "
                   "device computes fp16, else bf16-true)",
                   "NAME");
  parser.AddInt("max-batch-size", &o.max_batch_size,
                "most items merged into one forward, and per request (default 64)");
  parser.AddInt("max-queue-delay-us", &o.max_queue_delay_us,
                "how long a request waits for others to batch with, in microseconds "
                "(default 500)");
}

// When the new version may serve; checked at this and every later load.
void DefinePromotionFlags(ArgParser& parser, PromotionFlags& o) {
  parser.AddDouble("min-top1-agreement", &o.min_top1_agreement,
                   "refuse the version unless its cast agrees with fp32 on at least this "
                   "fraction of top-1 predictions, in [0, 1]",
                   "X");
  parser.AddDouble("max-mean-rel-diff", &o.max_mean_rel_diff,
                   "refuse the version if its cast's mean relative difference from fp32 "
                   "exceeds this, >= 0",
                   "Y");
}

class Export : public Invocation {
 public:
  void DefineFlags(ArgParser& parser) override {
    parser.AddString("name", &options_.name, "serve the model under this name; required", "NAME");
    DefineServingFlags(parser, options_.serving);
    DefinePromotionFlags(parser, options_.promotion);
  }
  absl::Status Prepare(const std::vector<std::string>& args) override {
    return Store(BuildExportRequest(args.front(), options_), request_);
  }
  int Run(const CommandClients& clients, const CommandIo& io) override {
    return RunExport(*clients.models, request_, io);
  }

 private:
  ExportOptions options_;
  v1::ExportModelRequest request_;
};

class Load : public Invocation {
 public:
  void DefineFlags(ArgParser& parser) override {
    parser.AddString("torchscript", &options_.torchscript,
                     "register this TorchScript file as NAME's next version", "FILE");
    parser.AddRepeated("input", &options_.inputs,
                       "an input of the TorchScript model's forward(), in order, without the "
                       "batch dimension; -1 = variable; repeatable",
                       "NAME:DATATYPE:D1,D2,...");
    parser.AddRepeated("output", &options_.outputs, "an output, in order; repeatable",
                       "NAME:DATATYPE:D1,D2,...");
    DefineServingFlags(parser, options_.serving);
    DefinePromotionFlags(parser, options_.promotion);
  }
  absl::Status Prepare(const std::vector<std::string>& args) override {
    return Store(BuildLoadRequest(args.front(), options_), request_);
  }
  int Run(const CommandClients& clients, const CommandIo& io) override {
    return RunLoad(*clients.models, request_, io);
  }

 private:
  LoadOptions options_;
  LoadRequest request_;
};

class Models : public Invocation {
 public:
  absl::Status Prepare(const std::vector<std::string>&) override { return absl::OkStatus(); }
  int Run(const CommandClients& clients, const CommandIo& io) override {
    return RunModels(*clients.models, io);
  }
};

class Infer : public Invocation {
 public:
  void DefineFlags(ArgParser& parser) override {
    parser.AddString("input", &options_.input,
                     "send this KServe v2 REST request body; - reads stdin", "FILE.json");
    parser.AddBool("random", &options_.random,
                   "send seeded random inputs of the model's declared shapes");
    parser.AddInt("batch", &options_.batch, "items in the --random request (default 1)");
    parser.AddBool("output-fp32", &options_.output_fp32,
                   "return outputs as FP32 instead of the model's datatype");
    parser.AddInt("version", &options_.version,
                  "a version the model serves (default: the newest it serves)");
  }
  absl::Status Prepare(const std::vector<std::string>& args) override {
    return Store(BuildInferPlan(args.front(), options_), plan_);
  }
  int Run(const CommandClients& clients, const CommandIo& io) override {
    return RunInfer(*clients.models, plan_, io);
  }

 private:
  InferOptions options_;
  InferPlan plan_;
};

class DeleteModel : public Invocation {
 public:
  void DefineFlags(ArgParser& parser) override {
    parser.AddInt("version", &version_, "the version to delete (default: every version)");
  }
  absl::Status Prepare(const std::vector<std::string>& args) override {
    name_ = args.front();
    if (name_.empty()) return absl::InvalidArgumentError(kEmptyName);
    if (version_ && *version_ < 1) {
      return absl::InvalidArgumentError(
          "--version must be >= 1 (leave it out to delete every version)");
    }
    return absl::OkStatus();
  }
  int Run(const CommandClients& clients, const CommandIo& io) override {
    return RunDeleteModel(*clients.models, name_, version_.value_or(0), io);
  }

 private:
  std::string name_;
  std::optional<int64_t> version_;
};

class Unload : public Invocation {
 public:
  absl::Status Prepare(const std::vector<std::string>& args) override {
    name_ = args.front();
    if (name_.empty()) return absl::InvalidArgumentError(kEmptyName);
    return absl::OkStatus();
  }
  int Run(const CommandClients& clients, const CommandIo& io) override {
    return RunUnload(*clients.models, name_, io);
  }

 private:
  std::string name_;
};

class VersionPolicy : public Invocation {
 public:
  absl::Status Prepare(const std::vector<std::string>& args) override {
    return Store(BuildVersionPolicyRequest(args.front(),
                                           std::vector<std::string>(args.begin() + 1, args.end())),
                 request_);
  }
  int Run(const CommandClients& clients, const CommandIo& io) override {
    return RunVersionPolicy(*clients.models, request_, io);
  }

 private:
  v1::SetVersionPolicyRequest request_;
};

class Rollback : public Invocation {
 public:
  absl::Status Prepare(const std::vector<std::string>& args) override {
    return Store(BuildRollbackRequest(args[0], args[1]), request_);
  }
  int Run(const CommandClients& clients, const CommandIo& io) override {
    return RunRollback(*clients.models, request_, io);
  }

 private:
  v1::RollbackModelRequest request_;
};

class Stats : public Invocation {
 public:
  void DefineFlags(ArgParser& parser) override {
    parser.AddInt("version", &version_, "only this version of MODEL");
  }
  absl::Status Prepare(const std::vector<std::string>& args) override {
    return Store(BuildStatisticsRequest(args, version_), request_);
  }
  int Run(const CommandClients& clients, const CommandIo& io) override {
    return RunStats(*clients.models, request_, io);
  }

 private:
  std::optional<int64_t> version_;
  inference::ModelStatisticsRequest request_;
};

constexpr ClientKind kModel = ClientKind::kModel;

const CliCommand kModelCommands[] = {
    {"export", "JOB", 1, "serve a succeeded job's model",
     "Copies JOB's final weights into the daemon's model repository as the next\n"
     "version of --name, casts them to the serving precision, validates the cast\n"
     "against fp32 on a calibration batch of the job's dataset and serves it as\n"
     "the model's version policy says (by default in place of the version served\n"
     "before). --min-top1-agreement and --max-mean-rel-diff refuse a cast that\n"
     "misses them: the version is kept but not served, and the one serving keeps\n"
     "serving. Prints the validation figures. Exits 0 only if the new version is\n"
     "READY.",
     kModel, Invoke<Export>},
    {"load", "NAME", 1, "reload a model, or register a TorchScript model",
     "Without --torchscript: (re)loads what the version policy of NAME selects from\n"
     "the model repository (by default its latest version); a version it replaces\n"
     "finishes the requests it holds.\n"
     "\n"
     "With --torchscript FILE: copies FILE into the repository as the next version of\n"
     "NAME and serves it. forward() takes the --input tensors in order and returns\n"
     "the --output tensors (a tensor or a tuple). DATATYPE is FP32, FP16, BF16 or\n"
     "INT64; shapes leave out the batch dimension, e.g.\n"
     "  mantissa load net --torchscript net.pt --input image:FP32:3,32,32 \\\n"
     "      --output logits:FP32:10\n"
     "\n"
     "Exits 0 only if the loaded version is READY.",
     kModel, Invoke<Load>},
    {"models", "", 0, "list the served models",
     "Lists the models in the daemon's repository: the newest served version of\n"
     "each (else its latest), its state and serving precision, where it came from,\n"
     "how its cast to that precision compared with fp32 (max |diff|, mean relative\n"
     "difference, top-1 agreement), the versions served and the version policy.\n"
     "Versions that are not READY follow with the reason, and versions whose\n"
     "validation measured layers or labelled accuracy with the first divergent\n"
     "layer and fp32 vs cast accuracy.",
     kModel, Invoke<Models>},
    {"infer", "NAME", 1, "run a served model on some inputs",
     "Sends one inference request to NAME over the Open Inference Protocol and prints\n"
     "each output's datatype and shape, and for [batch, classes] outputs each item's\n"
     "argmax. --input takes a KServe v2 REST request body, data flat or nested:\n"
     "  {\"inputs\": [{\"name\": \"input\", \"shape\": [1, 4], \"datatype\": \"FP32\",\n"
     "               \"data\": [[0.1, 0.2, 0.3, 0.4]]}]}\n"
     "FP32, FP16, BF16 and INT64 inputs are sent as raw little-endian bytes. --random\n"
     "sends uniform [0, 1) floats (token ids 0 or 1) of the declared shapes, variable\n"
     "dimensions as 8. --json prints the KServe v2 REST response body.",
     kModel, Invoke<Infer>},
    {"delete-model", "NAME", 1, "delete a model version from the repository",
     "Deletes --version N of model NAME from the daemon's repository, or with no\n"
     "--version every version and the model. A version being served cannot be\n"
     "deleted: run 'mantissa unload NAME' first, or delete a version not served.",
     kModel, Invoke<DeleteModel>},
    {"unload", "NAME", 1, "stop serving a model",
     "Stops serving NAME; requests already taken complete. Its files stay in the\n"
     "repository, so 'mantissa load NAME' serves it again.",
     kModel, Invoke<Unload>},
    {"rollback", "NAME VERSION", 2, "serve an earlier version of a model again",
     "Serves VERSION of NAME alone (the version policy 'specific VERSION'), loading\n"
     "it first; the versions served before finish the requests they hold. The\n"
     "policy is kept in the repository, so it survives a restart; 'mantissa\n"
     "version-policy NAME latest' returns to serving the newest version.",
     kModel, Invoke<Rollback>},
    {"version-policy", "NAME POLICY", 2, "choose which versions of a model serve",
     "Sets which versions of NAME serve, as Triton's version_policy:\n"
     "  latest [N]          the N newest versions that load and pass their\n"
     "                      promotion policy (default 1)\n"
     "  all                 every version that loads\n"
     "  specific V [V...]   exactly these versions\n"
     "Requests without a version go to the newest version served; a request may\n"
     "name any served version. Nothing changes unless a selected version serves.",
     kModel, Invoke<VersionPolicy>, /*more_arguments=*/true},
    {"stats", "[MODEL]", 0, "show per-model request and batch statistics",
     "Prints, per model version, the requests answered and failed, their mean time\n"
     "queued and computing (decode + forward + encode), items inferred and forwards\n"
     "run, and per batch size the forwards and their mean time (the Open Inference\n"
     "Protocol's ModelStatistics). Give a MODEL to see only it, and --version V for\n"
     "one version.",
     kModel, Invoke<Stats>, /*more_arguments=*/true},
};

}  // namespace

absl::Span<const CliCommand> ModelCommands() { return kModelCommands; }

}  // namespace mantissa::cli
