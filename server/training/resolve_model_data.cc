// The model and the dataset: their names, the files they name, their options.
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/option_reader.h"
#include "server/common/status_macros.h"
#include "server/data/dataset_registry.h"
#include "server/models/model_registry.h"
#include "server/training/job_spec_sections.h"
#include "server/training/spec_checks.h"

namespace mantissa {
namespace {

// A model built from a file (a TorchScript module) is code that runs with
// the daemon's rights: off until an operator names the folder trusted
// modules come from.
absl::Status ConfineModelFile(const FileRoots& roots, v1::JobSpec& spec) {
  const ModelEntry* entry = ModelRegistry::Find(spec.model());
  if (entry == nullptr || entry->file_option == nullptr) return absl::OkStatus();
  if (roots.empty()) {
    return absl::FailedPreconditionError(
        "model: torchscript is turned off on this server (a TorchScript module runs arbitrary "
        "code with the server's rights); an operator enables it with mantissad "
        "--torchscript_root=DIR, for modules under DIR");
  }
  auto path = spec.mutable_model_options()->find(entry->file_option);
  if (path == spec.mutable_model_options()->end() || path->second.empty()) {
    return absl::OkStatus();  // ModelRegistry::Parse names the missing option
  }
  ASSIGN_OR_RETURN(
      path->second,
      roots.Resolve(absl::StrCat("model_options[", entry->file_option, "]"), path->second));
  return absl::OkStatus();
}

absl::Status ConfineDatasetFiles(const FileRoots& roots, v1::JobSpec& spec) {
  ASSIGN_OR_RETURN(auto confined, DatasetRegistry::ConfinePaths(
                                      spec.dataset(), ToOptionMap(spec.dataset_options()), roots));
  for (auto& [key, value] : confined) (*spec.mutable_dataset_options())[key] = value;
  return absl::OkStatus();
}

}  // namespace

absl::Status ResolveModelAndData(const ResolveContext& context, ResolvedJob& job) {
  v1::JobSpec& spec = job.spec;
  if (spec.model().empty()) {
    return Invalid("model", absl::StrCat("is required; valid models: ",
                                         absl::StrJoin(ModelRegistry::Names(), ", ")));
  }
  if (spec.dataset().empty()) {
    return Invalid("dataset", absl::StrCat("is required; valid datasets: ",
                                           absl::StrJoin(DatasetRegistry::Names(), ", ")));
  }
  // Paths are confined before anything probes them: a missing file and a
  // forbidden one must read alike.
  RETURN_IF_ERROR(ConfineModelFile(context.torchscript_roots, spec));
  RETURN_IF_ERROR(ConfineDatasetFiles(context.data_roots, spec));
  ASSIGN_OR_RETURN(job.model,
                   ModelRegistry::Parse(spec.model(), ToOptionMap(spec.model_options())));
  ASSIGN_OR_RETURN(job.dataset,
                   DatasetRegistry::Parse(spec.dataset(), ToOptionMap(spec.dataset_options())));
  return absl::OkStatus();
}

}  // namespace mantissa
