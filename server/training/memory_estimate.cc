#include "server/training/memory_estimate.h"

#include <algorithm>
#include <fstream>
#include <limits>
#include <sstream>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "server/precision/precision_registry.h"
#include "server/runtime/torch_runtime.h"
#include "server/training/optimizer_registry.h"

namespace mantissa {
namespace {

constexpr char kAdmissionPayload[] = "type.mantissa.dev/admission";

absl::Status Refuse(std::string message) {
  absl::Status status = absl::ResourceExhaustedError(std::move(message));
  status.SetPayload(kAdmissionPayload, absl::Cord("1"));
  return status;
}

std::string Bytes(double bytes) { return absl::StrFormat("%.1f MiB", bytes / (1024.0 * 1024.0)); }

}  // namespace

int64_t EstimateTrainingBytes(const ModelSizeEstimate& size, int64_t batch_size,
                              const std::string& precision, const std::string& optimizer,
                              bool compensation) {
  const PrecisionEntry* entry = PrecisionRegistry::Find(precision);
  const PrecisionTraits traits = entry != nullptr ? entry->traits : PrecisionTraits();
  // The FP8 modes keep float32 master weights beside their half copies.
  const double weight = traits.parameter_dtype == torch::kFloat64 ? 8 : traits.true_half ? 2 : 4;
  // Adam keeps two moments, SGD one momentum buffer (at most).
  const OptimizerEntry* optimizer_entry = OptimizerRegistry::Find(optimizer);
  const double states = optimizer_entry != nullptr ? optimizer_entry->state_per_parameter : 1;
  const double activation = static_cast<double>(torch::elementSize(traits.compute_dtype));
  const double copies = 2 + states + (compensation ? 1 : 0);
  const double bytes = size.parameters * weight * copies +
                       size.activations_per_item * static_cast<double>(batch_size) * activation;
  return bytes >= 9.2e18 ? std::numeric_limits<int64_t>::max() : static_cast<int64_t>(bytes);
}

absl::StatusOr<int64_t> ParseMeminfoAvailableBytes(absl::string_view meminfo) {
  for (absl::string_view line : absl::StrSplit(meminfo, '\n')) {
    if (!absl::ConsumePrefix(&line, "MemAvailable:")) continue;
    line = absl::StripAsciiWhitespace(line);
    if (!absl::ConsumeSuffix(&line, "kB")) break;
    int64_t kib = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(line), &kib)) break;
    return kib * 1024;
  }
  return absl::UnavailableError("/proc/meminfo: no MemAvailable line");
}

absl::StatusOr<int64_t> FreeMemoryBytes(const torch::Device& device) {
  if (device.is_cpu()) {
    std::ifstream in("/proc/meminfo");
    std::stringstream text;
    text << in.rdbuf();
    return ParseMeminfoAvailableBytes(text.str());
  }
  absl::StatusOr<DeviceMemory> memory = CudaMemoryReader(device.str())();
  if (!memory.ok()) return memory.status();
  return memory->total_bytes - memory->used_bytes;
}

bool IsAdmissionRefusal(const absl::Status& status) {
  return status.GetPayload(kAdmissionPayload).has_value();
}

absl::Status CheckModelSize(const ModelSizeEstimate& size, int64_t batch_size,
                            const std::string& precision, const std::string& optimizer,
                            int64_t free_bytes, const std::string& device, const SpecLimits& limits,
                            bool compensation) {
  if (size.parameters > static_cast<double>(limits.max_model_parameters)) {
    return Refuse(absl::StrFormat(
        "model_options: the model would have %.0f parameters; at most %d are allowed "
        "(--max_model_parameters)",
        size.parameters, limits.max_model_parameters));
  }
  if (!limits.check_free_memory || free_bytes < 0) return absl::OkStatus();
  const int64_t estimate =
      EstimateTrainingBytes(size, batch_size, precision, optimizer, compensation);
  if (estimate <= free_bytes) return absl::OkStatus();
  return Refuse(absl::StrCat(
      "training needs an estimated ", Bytes(static_cast<double>(estimate)), " on ", device, " (",
      absl::StrFormat("%.0f", size.parameters), " parameters with gradients and ", optimizer,
      " state in ", precision, ", activations of batch_size ", batch_size, "), but only ",
      Bytes(static_cast<double>(free_bytes)),
      " is free; try a smaller model or batch_size, or a half-precision mode"));
}

}  // namespace mantissa
