#ifndef MANTISSA_CLIENT_MODEL_COMMANDS_H_
#define MANTISSA_CLIENT_MODEL_COMMANDS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "client/cli_command.h"
#include "client/command_io.h"
#include "client/model_client.h"
#include "inference/grpc_service.pb.h"
#include "mantissa/v1/serving.pb.h"

// The serving commands of the `mantissa` CLI: export, load, models, infer,
// delete-model, unload, rollback, version-policy and stats. As in training_commands.h, the Build*
// functions turn flags into requests (INVALID_ARGUMENT = a usage error, nothing sent) and the Run*
// functions make the calls and return the exit code.
namespace mantissa::cli {

// The rows of the command table for these commands, in help order.
absl::Span<const CliCommand> ModelCommands();

// Serving settings shared by export and load --torchscript.
struct ServingFlags {
  std::optional<std::string> precision;
  std::optional<int64_t> max_batch_size;
  std::optional<int64_t> max_queue_delay_us;
};

// When a new version may serve (export and load --torchscript): the
// request's promotion field is set only when a flag is given.
struct PromotionFlags {
  std::optional<double> min_top1_agreement;
  std::optional<double> max_mean_rel_diff;
};

// `mantissa export JOB --name NAME [...]`.
struct ExportOptions {
  std::optional<std::string> name;
  ServingFlags serving;
  PromotionFlags promotion;
};
absl::StatusOr<v1::ExportModelRequest> BuildExportRequest(const std::string& job_id,
                                                          const ExportOptions& options);

// `mantissa load NAME` reloads NAME from the repository (RepositoryModelLoad);
// with --torchscript it registers a TorchScript file as NAME's next version
// (RegisterModel) and needs at least one --input and one --output.
struct LoadOptions {
  std::optional<std::string> torchscript;
  std::vector<std::string> inputs;   // "name:DATATYPE:d1,d2,..."
  std::vector<std::string> outputs;  // the same
  ServingFlags serving;
  PromotionFlags promotion;  // needs --torchscript
};
struct LoadRequest {
  inference::RepositoryModelLoadRequest load;
  std::optional<v1::RegisterModelRequest> registration;  // set with --torchscript
};
// The TorchScript path is made absolute (against the working directory),
// since the daemon resolves paths against its own.
absl::StatusOr<LoadRequest> BuildLoadRequest(const std::string& name, const LoadOptions& options);

// "name:DATATYPE:d1,d2,..." -> TensorSpec. DATATYPE is FP32, FP16, BF16 or
// INT64 (any case); dimensions are >= 1 or -1 (variable), without the batch
// dimension; an empty shape is a scalar item.
absl::StatusOr<v1::TensorSpec> ParseTensorSpec(absl::string_view text);

// `mantissa infer NAME --input FILE.json | --random [...]`.
struct InferOptions {
  std::optional<std::string> input;  // a KServe v2 REST request body; "-" = stdin
  bool random = false;
  std::optional<int64_t> batch;  // items of random input (default 1)
  bool output_fp32 = false;
  std::optional<int64_t> version;  // a served version; unset: the newest served
};
struct InferPlan {
  std::string model;
  // From --input; unset with --random, whose request needs the model's
  // metadata first.
  std::optional<inference::ModelInferRequest> request;
  int64_t random_batch = 1;
  bool output_fp32 = false;
  std::string version;  // empty: the newest version served
};
// Reads and parses --input; file and JSON errors are usage errors naming the
// file and the field.
absl::StatusOr<InferPlan> BuildInferPlan(const std::string& model, const InferOptions& options);

// `mantissa version-policy NAME latest [N] | all | specific V [V...]`:
// `args` are everything after NAME.
absl::StatusOr<v1::SetVersionPolicyRequest> BuildVersionPolicyRequest(
    const std::string& name, const std::vector<std::string>& args);
// `mantissa rollback NAME VERSION`.
absl::StatusOr<v1::RollbackModelRequest> BuildRollbackRequest(const std::string& name,
                                                              const std::string& version);
// `mantissa stats [MODEL] [--version V]`.
absl::StatusOr<inference::ModelStatisticsRequest> BuildStatisticsRequest(
    const std::vector<std::string>& args, const std::optional<int64_t>& version);

// kExitOk only if the new version is READY.
int RunExport(ModelClient& client, const v1::ExportModelRequest& request, const CommandIo& io);
// kExitOk only if the (re)loaded version is READY.
int RunLoad(ModelClient& client, const LoadRequest& request, const CommandIo& io);
int RunModels(ModelClient& client, const CommandIo& io);
int RunInfer(ModelClient& client, const InferPlan& plan, const CommandIo& io);
int RunUnload(ModelClient& client, const std::string& name, const CommandIo& io);
int RunVersionPolicy(ModelClient& client, const v1::SetVersionPolicyRequest& request,
                     const CommandIo& io);
int RunRollback(ModelClient& client, const v1::RollbackModelRequest& request, const CommandIo& io);
int RunStats(ModelClient& client, const inference::ModelStatisticsRequest& request,
             const CommandIo& io);
// Deletes `version` of a model (0: every version and the model).
int RunDeleteModel(ModelClient& client, const std::string& name, int64_t version,
                   const CommandIo& io);

}  // namespace mantissa::cli

#endif  // MANTISSA_CLIENT_MODEL_COMMANDS_H_
