#include "client/model_format.h"

#include <cmath>
#include <cstdlib>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/job_format.h"
#include "client/json_format.h"
#include "client/table_printer.h"
#include "client/tensor_bytes.h"

namespace mantissa::cli {
namespace {

// Values printed per non-2-D output; --json prints them all.
constexpr int kPreviewValues = 8;

// A cast with non-finite outputs has no meaningful difference figures.
std::string MaxDiffCell(const v1::HalfCastValidation& v) {
  if (!v.finite()) return "non-finite";
  return absl::StrFormat("%.3g", v.max_abs_diff());
}
std::string RelDiffCell(const v1::HalfCastValidation& v) {
  if (!v.finite()) return "-";
  return absl::StrFormat("%.3g%%", 100.0 * v.mean_rel_diff());
}

std::string Source(const v1::ModelConfig& config) {
  if (!config.source_job_id().empty()) return config.source_job_id();
  if (config.platform() == "pytorch_libtorch" || config.model() == "torchscript") {
    return "torchscript";
  }
  return config.model().empty() ? "-" : config.model();
}

std::string ShapeString(const google::protobuf::RepeatedField<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

// For people: six significant digits are plenty, and more than a 16-bit
// float holds.
std::string FormatValue(double value, absl::string_view datatype) {
  if (datatype == "INT64") return absl::StrCat(static_cast<int64_t>(value));
  return absl::StrFormat("%.6g", value);
}

// For programs: exact.
std::string JsonNumber(double value, absl::string_view datatype) {
  if (std::isnan(value)) return "\"NaN\"";
  if (std::isinf(value)) return value > 0 ? "\"Infinity\"" : "\"-Infinity\"";
  if (datatype == "INT64") return absl::StrCat(static_cast<int64_t>(value));
  return FormatFloat(value);
}

}  // namespace

std::string FormatFloat(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  const float target = static_cast<float>(value);
  for (int precision = 6; precision < 9; ++precision) {
    std::string text = absl::StrFormat("%.*g", precision, value);
    if (std::strtof(text.c_str(), nullptr) == target) return text;
  }
  return absl::StrFormat("%.9g", value);
}

std::string FormatVersionPolicy(const v1::VersionPolicy& policy) {
  switch (policy.policy_choice_case()) {
    case v1::VersionPolicy::kAll:
      return "all";
    case v1::VersionPolicy::kSpecific:
      return absl::StrCat("specific ", absl::StrJoin(policy.specific().versions(), ", "));
    case v1::VersionPolicy::kLatest:
      return absl::StrCat("latest ", policy.latest().num_versions());
    default:
      return "latest 1";
  }
}

std::vector<std::string> ValidationDetails(const v1::HalfCastValidation& v) {
  std::vector<std::string> lines;
  if (!v.first_divergent_layer().empty()) {
    std::string line = absl::StrCat("first divergent layer: ", v.first_divergent_layer());
    for (const v1::LayerDivergence& layer : v.layers()) {
      if (layer.layer() != v.first_divergent_layer()) continue;
      absl::StrAppend(&line, absl::StrFormat(" (mean rel diff %.3g > tolerance %.3g)",
                                             layer.mean_rel_diff(), v.layer_tolerance()));
    }
    lines.push_back(std::move(line));
  } else if (!v.layers().empty()) {
    lines.push_back(absl::StrFormat("layers: all %d within tolerance %.3g", v.layers_size(),
                                    v.layer_tolerance()));
  }
  if (v.has_fp32_accuracy() && v.has_cast_accuracy()) {
    lines.push_back(absl::StrCat("accuracy: fp32 ", FormatAccuracy(v.fp32_accuracy()), ", cast ",
                                 FormatAccuracy(v.cast_accuracy()), " on ", v.labelled_items(),
                                 " labelled items"));
  }
  return lines;
}

const v1::ModelVersionStatus& ShownVersion(const v1::ModelStatus& model) {
  for (auto it = model.versions().rbegin(); it != model.versions().rend(); ++it) {
    if (it->state() == "READY") return *it;
  }
  return *model.versions().rbegin();
}

namespace {

// Superseded, left out by the policy or unexplained: nothing an operator must
// act on.
bool RoutineReason(const std::string& reason) {
  if (reason.empty()) return true;
  for (absl::string_view prefix :
       {"superseded by version", "not selected by the version policy", "not loaded", "unloaded"}) {
    if (absl::StartsWith(reason, prefix)) return true;
  }
  return false;
}

std::string ServedCell(const v1::ModelStatus& model) {
  return model.served_versions().empty() ? "-" : absl::StrJoin(model.served_versions(), ",");
}

// The notes under the table for one model.
void AddNotes(const v1::ModelStatus& model, const v1::ModelVersionStatus& shown,
              std::vector<std::string>& notes) {
  for (const v1::ModelVersionStatus& version : model.versions()) {
    const std::string prefix =
        absl::StrCat(model.name(), " version ", version.config().version(), ": ");
    if (version.state() != "READY" && (&version == &shown || !RoutineReason(version.reason()))) {
      std::string note =
          absl::StrCat(prefix, version.state().empty() ? "UNKNOWN" : version.state());
      if (!version.reason().empty()) absl::StrAppend(&note, ": ", version.reason());
      notes.push_back(std::move(note));
    }
    if (!version.has_validation()) continue;
    for (const std::string& line : ValidationDetails(version.validation())) {
      notes.push_back(prefix + line);
    }
  }
}

}  // namespace

std::string FormatModelTable(const v1::ListModelsResponse& response) {
  if (response.models().empty()) return "no models\n";
  TablePrinter table({"NAME", "VERSION", "STATE", "PRECISION", "SOURCE", "MAX |DIFF|", "REL DIFF",
                      "TOP-1", "SERVED", "POLICY"});
  for (size_t column : {1, 5, 6, 7}) table.AlignRight(column);
  std::vector<std::string> notes;
  for (const v1::ModelStatus& model : response.models()) {
    const std::string policy = FormatVersionPolicy(model.version_policy());
    if (model.versions().empty()) {
      table.AddRow({model.name(), "-", "-", "-", "-", "-", "-", "-", "-", policy});
      continue;
    }
    const v1::ModelVersionStatus& shown = ShownVersion(model);
    const v1::ModelConfig& config = shown.config();
    const bool validated = shown.has_validation();
    const v1::HalfCastValidation& validation = shown.validation();
    table.AddRow(
        {model.name(), absl::StrCat(config.version()), shown.state(),
         config.precision().empty() ? "-" : config.precision(), Source(config),
         validated ? MaxDiffCell(validation) : "-", validated ? RelDiffCell(validation) : "-",
         validated && validation.has_top1_agreement() ? FormatAccuracy(validation.top1_agreement())
                                                      : "-",
         ServedCell(model), policy});
    AddNotes(model, shown, notes);
  }
  std::string out = table.ToString();
  if (!notes.empty()) absl::StrAppend(&out, "\n", absl::StrJoin(notes, "\n"), "\n");
  return out;
}

std::string FormatModelStatus(const v1::ModelStatus& model) {
  std::string out = absl::StrCat("model ", model.name(), ": policy ",
                                 FormatVersionPolicy(model.version_policy()), "; ");
  if (model.served_versions().empty()) {
    absl::StrAppend(&out, "serving nothing\n");
  } else {
    absl::StrAppend(&out,
                    model.served_versions_size() == 1 ? "serving version " : "serving versions ",
                    absl::StrJoin(model.served_versions(), ", "), "\n");
  }
  for (const v1::ModelVersionStatus& version : model.versions()) {
    if (version.state() == "READY" || RoutineReason(version.reason())) continue;
    absl::StrAppend(&out, "version ", version.config().version(), ": ", version.state(),
                    version.reason().empty() ? "" : absl::StrCat(": ", version.reason()), "\n");
  }
  return out;
}

namespace {

std::string MeanMs(const inference::StatisticDuration& d, uint64_t count) {
  if (count == 0) return "-";
  return absl::StrFormat("%.3f", static_cast<double>(d.ns()) / 1e6 / static_cast<double>(count));
}

}  // namespace

std::string FormatStatistics(const inference::ModelStatisticsResponse& response) {
  if (response.model_stats().empty()) return "no statistics\n";
  TablePrinter table(
      {"MODEL", "VERSION", "OK", "FAILED", "QUEUE MS", "COMPUTE MS", "INFERENCES", "EXECUTIONS"});
  for (size_t column : {1, 2, 3, 4, 5, 6, 7}) table.AlignRight(column);
  std::vector<std::string> batches;
  for (const inference::ModelStatistics& model : response.model_stats()) {
    const inference::InferStatistics& s = model.inference_stats();
    const uint64_t ok = s.success().count();
    inference::StatisticDuration compute;
    compute.set_ns(s.compute_input().ns() + s.compute_infer().ns() + s.compute_output().ns());
    table.AddRow({model.name(), model.version(), absl::StrCat(ok), absl::StrCat(s.fail().count()),
                  MeanMs(s.queue(), ok), MeanMs(compute, ok), absl::StrCat(model.inference_count()),
                  absl::StrCat(model.execution_count())});
    for (const inference::InferBatchStatistics& batch : model.batch_stats()) {
      const uint64_t runs = batch.compute_infer().count();
      batches.push_back(absl::StrCat(model.name(), " version ", model.version(), " batch ",
                                     batch.batch_size(), ": ", runs, " execution",
                                     runs == 1 ? "" : "s", ", mean forward ",
                                     MeanMs(batch.compute_infer(), runs), " ms"));
    }
  }
  std::string out = table.ToString();
  if (!batches.empty()) absl::StrAppend(&out, "\n", absl::StrJoin(batches, "\n"), "\n");
  return out;
}

std::string FormatModelVersion(const v1::ModelVersionStatus& model) {
  const v1::ModelConfig& config = model.config();
  std::string out = absl::StrCat("model ", config.name(), " version ", config.version(), ": ",
                                 model.state().empty() ? "UNKNOWN" : model.state());
  if (!config.precision().empty()) absl::StrAppend(&out, ", ", config.precision());
  absl::StrAppend(&out, "\n");
  if (model.has_validation()) {
    const v1::HalfCastValidation& v = model.validation();
    if (v.finite()) {
      absl::StrAppend(&out, "validation: max |diff| ", MaxDiffCell(v), ", mean rel diff ",
                      RelDiffCell(v));
      if (v.has_top1_agreement()) {
        absl::StrAppend(&out, ", top-1 agreement ", FormatAccuracy(v.top1_agreement()));
      }
    } else {
      absl::StrAppend(&out, "validation: NON-FINITE outputs");
    }
    // The source names the items already ("..., first 256 items").
    const std::string source = v.calibration_source().empty()
                                   ? absl::StrCat(v.calibration_items(), " calibration items")
                                   : v.calibration_source();
    // Small models validate in milliseconds, which "0.0s" would hide.
    const double seconds = v.duration_seconds();
    const std::string took =
        seconds < 1 ? absl::StrFormat("%.0f ms", seconds * 1000) : FormatDuration(seconds);
    absl::StrAppend(&out, "\n  on ", source, " in ", took, "\n");
    for (const std::string& line : ValidationDetails(v)) absl::StrAppend(&out, line, "\n");
  }
  if (model.state() != "READY" && !model.reason().empty()) {
    absl::StrAppend(&out, "reason: ", model.reason(), "\n");
  }
  return out;
}

absl::StatusOr<std::vector<double>> OutputValues(const inference::ModelInferResponse& response,
                                                 int index) {
  const auto& output = response.outputs(index);
  if (index < response.raw_output_contents_size()) {
    absl::StatusOr<std::vector<double>> values =
        DecodeValues(output.datatype(), response.raw_output_contents(index));
    if (!values.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("output ", output.name(), ": ", values.status().message()));
    }
    return values;
  }
  const inference::InferTensorContents& contents = output.contents();
  if (!contents.fp32_contents().empty()) {
    return std::vector<double>(contents.fp32_contents().begin(), contents.fp32_contents().end());
  }
  if (!contents.int64_contents().empty()) {
    return std::vector<double>(contents.int64_contents().begin(), contents.int64_contents().end());
  }
  if (!contents.fp64_contents().empty()) {
    return std::vector<double>(contents.fp64_contents().begin(), contents.fp64_contents().end());
  }
  return std::vector<double>();
}

absl::StatusOr<std::string> FormatInferResponse(const inference::ModelInferResponse& response) {
  std::string out = absl::StrCat("model ", response.model_name());
  if (!response.model_version().empty())
    absl::StrAppend(&out, " version ", response.model_version());
  if (!response.id().empty()) absl::StrAppend(&out, " (id ", response.id(), ")");
  absl::StrAppend(&out, "\n");
  for (int i = 0; i < response.outputs_size(); ++i) {
    const auto& output = response.outputs(i);
    absl::StatusOr<std::vector<double>> values = OutputValues(response, i);
    if (!values.ok()) return values.status();
    absl::StrAppend(&out, "output ", output.name(), " ", output.datatype(), " ",
                    ShapeString(output.shape()), "\n");
    const auto& shape = output.shape();
    if (shape.size() == 2 && shape[1] > 0 &&
        static_cast<int64_t>(values->size()) == shape[0] * shape[1]) {
      for (int64_t item = 0; item < shape[0]; ++item) {
        const double* row = values->data() + item * shape[1];
        int64_t best = 0;
        for (int64_t k = 1; k < shape[1]; ++k) {
          // NaN never wins, unless every value is NaN.
          if (row[k] > row[best] || std::isnan(row[best])) best = k;
        }
        absl::StrAppend(&out, "  item ", item, ": argmax ", best, " (",
                        FormatValue(row[best], output.datatype()), ")\n");
      }
      continue;
    }
    std::vector<std::string> preview;
    for (size_t k = 0; k < values->size() && k < kPreviewValues; ++k) {
      preview.push_back(FormatValue((*values)[k], output.datatype()));
    }
    absl::StrAppend(&out, "  values: ", absl::StrJoin(preview, ", "));
    if (values->size() > kPreviewValues) {
      absl::StrAppend(&out, ", ... (", values->size(), " values; --json prints them all)");
    }
    absl::StrAppend(&out, "\n");
  }
  return out;
}

absl::StatusOr<std::string> FormatInferResponseJson(const inference::ModelInferResponse& response) {
  std::vector<std::string> outputs;
  for (int i = 0; i < response.outputs_size(); ++i) {
    const auto& output = response.outputs(i);
    absl::StatusOr<std::vector<double>> values = OutputValues(response, i);
    if (!values.ok()) return values.status();
    std::vector<std::string> data;
    data.reserve(values->size());
    for (double value : *values) data.push_back(JsonNumber(value, output.datatype()));
    outputs.push_back(absl::StrCat("    {\"name\": ", JsonString(output.name()),
                                   ", \"datatype\": ", JsonString(output.datatype()),
                                   ", \"shape\": [", absl::StrJoin(output.shape(), ", "),
                                   "], \"data\": [", absl::StrJoin(data, ", "), "]}"));
  }
  return absl::StrCat("{\n  \"model_name\": ", JsonString(response.model_name()),
                      ",\n  \"model_version\": ", JsonString(response.model_version()),
                      ",\n  \"id\": ", JsonString(response.id()), ",\n  \"outputs\": [",
                      outputs.empty() ? "" : "\n", absl::StrJoin(outputs, ",\n"),
                      outputs.empty() ? "]" : "\n  ]", "\n}\n");
}

}  // namespace mantissa::cli
