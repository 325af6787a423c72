#include "client/capabilities_format.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/detail_list.h"
#include "client/table_printer.h"

namespace mantissa::cli {
namespace {

std::string JoinOrDash(const google::protobuf::RepeatedPtrField<std::string>& names) {
  return names.empty() ? "-" : absl::StrJoin(names, ", ");
}

std::string OrDash(const std::string& text) { return text.empty() ? "-" : text; }

// "gloo; up to 2 devices per node: 2 GPUs visible; multi-node: no (needs the
// PostgreSQL job store)". Semicolons, since the daemon's reason may carry
// parentheses of its own.
std::string FormatDataParallel(const v1::GetCapabilitiesResponse& capabilities) {
  const v1::DataParallelSupport& support = capabilities.data_parallel();
  std::string out = absl::StrCat(OrDash(support.backend()), "; up to ", support.max_devices(),
                                 support.max_devices() == 1 ? " device" : " devices", " per node");
  if (!support.reason().empty()) absl::StrAppend(&out, ": ", support.reason());
  absl::StrAppend(&out, "; multi-node: ", support.multi_node() ? "yes" : "no");
  if (!support.multi_node() && capabilities.job_store() == "sqlite") {
    absl::StrAppend(&out, " (needs the PostgreSQL job store)");
  }
  return out;
}

}  // namespace

std::string FormatCapabilities(const v1::GetCapabilitiesResponse& capabilities) {
  DetailList details;
  details.Add("Device", OrDash(capabilities.device()));
  details.Add("Device name", OrDash(capabilities.device_name()));
  details.Add("LibTorch", OrDash(capabilities.libtorch_version()));
  details.Add("mantissad", OrDash(capabilities.mantissa_version()));
  details.Add("Intra-op threads", absl::StrCat(capabilities.intra_op_threads()));
  details.Add("Max concurrent jobs", absl::StrCat(capabilities.max_concurrent_jobs()));
  // Daemons from before the shared job store leave these out.
  if (!capabilities.worker_id().empty()) details.Add("Worker", capabilities.worker_id());
  if (!capabilities.job_store().empty()) details.Add("Job store", capabilities.job_store());
  if (capabilities.has_data_parallel()) {
    details.Add("Data parallel", FormatDataParallel(capabilities));
  }
  std::string out = details.Render();

  TablePrinter precisions({"PRECISION", "SUPPORTED", "RUNS AS", "ALIASES", "REASON"});
  for (const v1::PrecisionSupport& precision : capabilities.precisions()) {
    precisions.AddRow({precision.precision(), precision.supported() ? "yes" : "no",
                       OrDash(precision.runs_as()), JoinOrDash(precision.aliases()),
                       precision.reason()});
  }
  absl::StrAppend(&out, "\n", precisions.ToString(), "\n");

  DetailList lists;
  lists.Add("Models", JoinOrDash(capabilities.models()));
  lists.Add("Datasets", JoinOrDash(capabilities.datasets()));
  lists.Add("Optimizers", JoinOrDash(capabilities.optimizers()));
  absl::StrAppend(&out, lists.Render());
  return out;
}

}  // namespace mantissa::cli
