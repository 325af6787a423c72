#include "server/serving/half_cast_validator.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cstdio>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/artifacts/export_artifact.h"
#include "server/common/logging.h"
#include "server/common/status_macros.h"
#include "server/common/torch_status.h"
#include "server/precision/precision_registry.h"

namespace mantissa {
namespace {

bool IsLanguageModel(const v1::ModelConfig& config) { return config.task() == "language_model"; }

// Token windows covering at most kMaxLanguageModelTokens tokens, at least one.
int64_t LanguageModelWindows(const v1::ModelConfig& config, int64_t items) {
  const int64_t seq_len = std::max<int64_t>(config.seq_len(), 1);
  const int64_t budget = std::max<int64_t>(1, HalfCastValidator::kMaxLanguageModelTokens / seq_len);
  return std::max<int64_t>(1, std::min(items, budget));
}

// printf-style formatting of one figure, e.g. Figure("%.4f", 0.995).
std::string Figure(const char* format, double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), format, value);
  return buffer;
}

std::string ShapeString(torch::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// How far the cast's tensors are from fp32's, summed over the chunks: the
// outputs' (Compare) or one layer's (CompareLayers).
struct DiffSums {
  std::string layer;  // CompareLayers: the layer they are of
  double max_abs_diff = 0.0;
  double sum_abs_diff = 0.0;
  double sum_abs_reference = 0.0;
  int64_t non_finite = 0;   // cast elements non-finite where fp32's are finite
  bool cast_finite = true;  // every cast element finite

  // `r` fp32's tensor, `c` the cast's, both float32 on the CPU. The
  // differences are over the elements finite in both; sums in double (bf16
  // and fp16 widen to fp32 exactly).
  void Add(const torch::Tensor& r, const torch::Tensor& c) {
    const torch::Tensor r_finite = torch::isfinite(r);
    const torch::Tensor c_finite = torch::isfinite(c);
    if (cast_finite && !c_finite.all().item<bool>()) cast_finite = false;
    non_finite += (r_finite & c_finite.logical_not()).sum().item<int64_t>();
    const torch::Tensor both = r_finite & c_finite;
    const torch::Tensor diff = (c - r).abs().masked_select(both);
    if (diff.numel() == 0) return;
    max_abs_diff = std::max(max_abs_diff, diff.max().item<double>());
    sum_abs_diff += diff.sum(torch::kFloat64).item<double>();
    sum_abs_reference += r.abs().masked_select(both).sum(torch::kFloat64).item<double>();
  }

  double MeanRelDiff() const {
    if (sum_abs_reference > 0) return sum_abs_diff / sum_abs_reference;
    return sum_abs_diff > 0 ? std::numeric_limits<double>::infinity() : 0.0;
  }

  void To(v1::LayerDivergence* out) const {
    out->set_layer(layer);
    out->set_max_abs_diff(max_abs_diff);
    out->set_mean_rel_diff(MeanRelDiff());
  }
};

// The first items of the version's calibration sample, as ForVersion
// describes.
absl::StatusOr<CalibrationBatch> FromSample(const v1::ModelConfig& config, const std::string& path,
                                            int64_t items) {
  ASSIGN_OR_RETURN(const CalibrationSample sample, ReadCalibrationSample(path));
  if (sample.items() == 0) return absl::FailedPreconditionError("it holds no items");
  const bool lm = IsLanguageModel(config);
  const int64_t n = std::min(lm ? LanguageModelWindows(config, items) : std::max<int64_t>(items, 1),
                             sample.items());
  CalibrationBatch batch;
  for (const v1::TensorSpec& spec : config.inputs()) {
    auto it = std::find_if(sample.inputs.begin(), sample.inputs.end(),
                           [&](const auto& input) { return input.first == spec.name(); });
    if (it == sample.inputs.end()) {
      return absl::InvalidArgumentError(absl::StrCat("it holds no input ", spec.name()));
    }
    torch::Tensor x = it->second.narrow(0, 0, n);
    if (lm) {
      if (x.scalar_type() != torch::kInt64 || x.dim() != 2 || x.size(1) > config.seq_len()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "it gives inputs ", ShapeString(x.sizes()), " of ", c10::toString(x.scalar_type()),
            "; the model takes int64 token windows of at most ", config.seq_len(), " tokens"));
      }
    } else {
      const std::vector<int64_t> want(spec.shape().begin(), spec.shape().end());
      bool fits = x.dim() == static_cast<int64_t>(want.size()) + 1 && x.is_floating_point();
      for (size_t d = 0; fits && d < want.size(); ++d) {
        fits = want[d] == -1 || want[d] == x.size(static_cast<int64_t>(d) + 1);
      }
      if (!fits) {
        return absl::InvalidArgumentError(absl::StrCat("it gives items ",
                                                       ShapeString(x.sizes().slice(1)),
                                                       ", the model takes ", ShapeString(want)));
      }
      x = x.to(torch::kFloat32);
    }
    batch.inputs.push_back(x.contiguous());
  }
  batch.items = n;
  if (!lm && sample.labels.defined()) batch.labels = sample.labels.narrow(0, 0, n).contiguous();
  batch.source = absl::StrCat(
      sample.origin, ", first ", n,
      lm ? absl::StrCat(" token windows of ", batch.inputs[0].size(1)) : std::string(" items"));
  return batch;
}

}  // namespace

CalibrationBatch HalfCastValidator::RandomInputs(const v1::ModelConfig& config, int64_t items,
                                                 uint64_t seed) {
  const bool lm = IsLanguageModel(config);
  int64_t n = lm ? LanguageModelWindows(config, items) : std::max<int64_t>(items, 1);
  int64_t variable = lm && config.seq_len() > 0 ? config.seq_len() : kVariableDim;
  // One item's elements over all inputs; nullopt when the product overflows.
  auto item_elements = [&config](int64_t variable_dim) -> std::optional<int64_t> {
    int64_t total = 0;
    for (const v1::TensorSpec& spec : config.inputs()) {
      int64_t elements = 1;
      for (int64_t d : spec.shape()) {
        if (__builtin_mul_overflow(elements, d == -1 ? variable_dim : std::max<int64_t>(d, 1),
                                   &elements)) {
          return std::nullopt;
        }
      }
      if (__builtin_add_overflow(total, elements, &total)) return std::nullopt;
    }
    return total;
  };
  std::optional<int64_t> per_item = item_elements(variable);
  if (!lm && (!per_item.has_value() || *per_item > kMaxCalibrationElements)) {
    variable = 1;  // many variable dimensions: one element each
    per_item = item_elements(variable);
  }
  if (per_item.has_value() && *per_item > 0) {
    n = std::clamp<int64_t>(kMaxCalibrationElements / *per_item, 1, n);
  }
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  CalibrationBatch batch;
  batch.items = n;
  for (const v1::TensorSpec& spec : config.inputs()) {
    std::vector<int64_t> shape = {n};
    for (int64_t d : spec.shape()) shape.push_back(d != -1 ? d : variable);
    if (spec.datatype() == "INT64") {
      batch.inputs.push_back(lm && config.vocab_size() > 0
                                 ? torch::randint(0, config.vocab_size(), shape, gen,
                                                  torch::TensorOptions(torch::kInt64))
                                 : torch::zeros(shape, torch::kInt64));
    } else {
      batch.inputs.push_back(torch::rand(shape, gen, torch::TensorOptions(torch::kFloat32)));
    }
  }
  batch.source = absl::StrCat("random inputs, ", n, lm ? " token windows" : " items");
  return batch;
}

CalibrationBatch HalfCastValidator::ForVersion(const v1::ModelConfig& config,
                                               const std::string& version_dir, int64_t items) {
  if (config.platform() != "mantissa_libtorch") return RandomInputs(config, items, config.seed());
  const std::string path = absl::StrCat(version_dir, "/", kCalibrationFile);
  absl::StatusOr<CalibrationBatch> batch;
  const absl::Status read = GuardTorch("reading the calibration items", [&] {
    batch = FromSample(config, path, items);
    return absl::OkStatus();
  });
  if (!read.ok()) batch = read;
  if (batch.ok()) return *std::move(batch);
  const std::string why =
      absl::IsNotFound(batch.status())
          ? std::string(
                "the version has no calibration sample: it was exported before versions "
                "kept one; export its job again to calibrate on the job's data")
          : absl::StrCat("its calibration sample gave no batch: ", batch.status().message());
  LogWarning(absl::StrCat("model ", config.name(), " version ", config.version(),
                          ": calibrating on random inputs; ", why));
  CalibrationBatch random = RandomInputs(config, items, config.seed());
  absl::StrAppend(&random.source, " (", why, ")");
  return random;
}

namespace {

// Runs `visit` on each chunk of at most `chunk` items of `batch` (inputs
// narrowed to [begin, begin + n)), under InferenceMode and the c10::Error
// boundary, whose errors name `context`.
absl::Status ForEachChunk(const CalibrationBatch& batch, int64_t chunk, const std::string& context,
                          const std::function<absl::Status(const std::vector<torch::Tensor>& inputs,
                                                           int64_t begin, int64_t n)>& visit) {
  return GuardTorch(context, [&]() -> absl::Status {
    c10::InferenceMode inference_mode;
    for (int64_t begin = 0; begin < batch.items; begin += chunk) {
      const int64_t n = std::min(chunk, batch.items - begin);
      std::vector<torch::Tensor> inputs;
      for (const torch::Tensor& t : batch.inputs) inputs.push_back(t.narrow(0, begin, n));
      RETURN_IF_ERROR(visit(inputs, begin, n));
    }
    return absl::OkStatus();
  });
}

}  // namespace

absl::StatusOr<HalfCastValidator::Result> HalfCastValidator::Compare(const Options& options,
                                                                     const CalibrationBatch& batch,
                                                                     const ForwardFn& reference,
                                                                     const ForwardFn& cast) {
  Result result;
  v1::HalfCastValidation& v = result.validation;
  v.set_calibration_source(batch.source);
  v.set_calibration_items(batch.items);
  const absl::Time start = absl::Now();
  const int64_t chunk = std::max<int64_t>(options.chunk_items, 1);

  DiffSums sums;  // every output's elements together
  int64_t agree = 0;
  int64_t predictions = 0;
  int64_t fp32_correct = 0;
  int64_t cast_correct = 0;
  int64_t labelled = 0;
  const std::string context = absl::StrCat(options.model, ": validating the ", options.precision,
                                           " cast on ", batch.source);
  RETURN_IF_ERROR(ForEachChunk(
      batch, chunk, context, [&](const auto& inputs, int64_t begin, int64_t n) -> absl::Status {
        ASSIGN_OR_RETURN(std::vector<torch::Tensor> want, reference(inputs));
        ASSIGN_OR_RETURN(std::vector<torch::Tensor> got, cast(inputs));
        if (want.size() != got.size()) {
          return absl::InternalError(absl::StrCat(context, ": the fp32 model gave ", want.size(),
                                                  " outputs, the cast one ", got.size()));
        }
        for (size_t i = 0; i < want.size(); ++i) {
          const torch::Tensor r = want[i].to(torch::kCPU).to(torch::kFloat32);
          const torch::Tensor c = got[i].to(torch::kCPU).to(torch::kFloat32);
          if (r.sizes() != c.sizes()) {
            return absl::InternalError(absl::StrCat(context, ": output ", i, " is ",
                                                    ShapeString(r.sizes()), " in fp32 but ",
                                                    ShapeString(c.sizes()), " cast"));
          }
          result.elements += r.numel();
          sums.Add(r, c);
          if (i == 0 && options.top1_agreement && r.dim() >= 2) {
            const torch::Tensor same = r.argmax(-1) == c.argmax(-1);
            agree += same.sum().item<int64_t>();
            predictions += same.numel();
            if (batch.labels.defined() && r.dim() == 2) {
              const torch::Tensor labels = batch.labels.narrow(0, begin, n).to(torch::kInt64);
              fp32_correct += (r.argmax(-1) == labels).sum().item<int64_t>();
              cast_correct += (c.argmax(-1) == labels).sum().item<int64_t>();
              labelled += n;
            }
          }
        }
        return absl::OkStatus();
      }));

  result.non_finite = sums.non_finite;
  v.set_max_abs_diff(sums.max_abs_diff);
  v.set_mean_rel_diff(sums.MeanRelDiff());
  if (options.top1_agreement && predictions > 0) {
    v.set_top1_agreement(static_cast<double>(agree) / static_cast<double>(predictions));
  }
  if (labelled > 0) {
    v.set_fp32_accuracy(static_cast<double>(fp32_correct) / static_cast<double>(labelled));
    v.set_cast_accuracy(static_cast<double>(cast_correct) / static_cast<double>(labelled));
    v.set_labelled_items(labelled);
  }
  v.set_finite(sums.cast_finite);
  v.set_duration_seconds(absl::ToDoubleSeconds(absl::Now() - start));
  return result;
}

absl::Status HalfCastValidator::CompareLayers(const Options& options, const CalibrationBatch& batch,
                                              const TraceFn& reference, const TraceFn& cast,
                                              Result* result) {
  std::vector<DiffSums> sums;
  const absl::Time start = absl::Now();
  const int64_t chunk = std::max<int64_t>(options.chunk_items, 1);
  const std::string context = absl::StrCat(options.model, ": tracing the layers of the ",
                                           options.precision, " cast on ", batch.source);
  RETURN_IF_ERROR(ForEachChunk(
      batch, chunk, context, [&](const auto& inputs, int64_t, int64_t) -> absl::Status {
        ASSIGN_OR_RETURN(Layers want, reference(inputs));
        ASSIGN_OR_RETURN(Layers got, cast(inputs));
        if (sums.empty()) {
          for (const auto& [layer, t] : want) sums.push_back({layer});
        }
        if (want.size() != sums.size() || got.size() != sums.size()) {
          return absl::InternalError(absl::StrCat(context, ": the fp32 model gave ", want.size(),
                                                  " layers, the cast one ", got.size()));
        }
        for (size_t i = 0; i < want.size(); ++i) {
          const torch::Tensor r = want[i].second.to(torch::kCPU).to(torch::kFloat32);
          const torch::Tensor c = got[i].second.to(torch::kCPU).to(torch::kFloat32);
          if (want[i].first != sums[i].layer || got[i].first != sums[i].layer ||
              r.sizes() != c.sizes()) {
            return absl::InternalError(absl::StrCat(
                context, ": layer ", i, " is ", want[i].first, " ", ShapeString(r.sizes()),
                " in fp32 but ", got[i].first, " ", ShapeString(c.sizes()), " cast"));
          }
          sums[i].Add(r, c);
        }
        return absl::OkStatus();
      }));
  v1::HalfCastValidation& v = result->validation;
  v.clear_layers();
  v.clear_first_divergent_layer();
  v.set_layer_tolerance(options.layer_tolerance);
  for (const DiffSums& layer : sums) {
    v1::LayerDivergence* out = v.add_layers();
    layer.To(out);
    // An overflow leaves few elements finite in both: it diverges whatever
    // the remaining ones say.
    if (v.first_divergent_layer().empty() &&
        (out->mean_rel_diff() > options.layer_tolerance || layer.non_finite > 0)) {
      v.set_first_divergent_layer(layer.layer);
    }
  }
  v.set_duration_seconds(v.duration_seconds() + absl::ToDoubleSeconds(absl::Now() - start));
  return absl::OkStatus();
}

void HalfCastValidator::OutputAsLayer(const Options& options, Result* result) {
  v1::HalfCastValidation& v = result->validation;
  v.clear_layers();
  v.set_layer_tolerance(options.layer_tolerance);
  v1::LayerDivergence* out = v.add_layers();
  out->set_layer("output");
  out->set_max_abs_diff(v.max_abs_diff());
  out->set_mean_rel_diff(v.mean_rel_diff());
  if (v.mean_rel_diff() > options.layer_tolerance || result->non_finite > 0) {
    v.set_first_divergent_layer("output");
  } else {
    v.clear_first_divergent_layer();
  }
}

double HalfCastValidator::LayerTolerance(const v1::PromotionPolicy& policy) {
  return policy.has_max_mean_rel_diff() ? policy.max_mean_rel_diff() : kDefaultLayerTolerance;
}

absl::Status HalfCastValidator::Promote(const Options& options, const Result& result,
                                        const v1::PromotionPolicy& policy) {
  const v1::HalfCastValidation& v = result.validation;
  if (policy.has_min_top1_agreement() && !v.has_top1_agreement()) {
    return absl::FailedPreconditionError(absl::StrCat(
        options.model, ": its promotion policy sets min_top1_agreement ",
        Figure("%.4f", policy.min_top1_agreement()),
        ", but the model gives no top-1 agreement (only classifiers and language models do); "
        "export or register it again without promotion.min_top1_agreement"));
  }
  std::vector<std::string> missed;
  // Negated comparisons: a NaN figure or threshold misses.
  if (policy.has_min_top1_agreement() && !(v.top1_agreement() >= policy.min_top1_agreement())) {
    missed.push_back(absl::StrCat("top1_agreement ", Figure("%.4f", v.top1_agreement()),
                                  " < min_top1_agreement ",
                                  Figure("%.4f", policy.min_top1_agreement())));
  }
  if (policy.has_max_mean_rel_diff() && !(v.mean_rel_diff() <= policy.max_mean_rel_diff())) {
    missed.push_back(absl::StrCat("mean_rel_diff ", Figure("%.4g", v.mean_rel_diff()),
                                  " > max_mean_rel_diff ",
                                  Figure("%g", policy.max_mean_rel_diff())));
  }
  if (missed.empty()) return absl::OkStatus();
  std::string message =
      absl::StrCat(options.model, ": the ", options.precision,
                   " cast misses its promotion policy: ", absl::StrJoin(missed, ", "), " (on ",
                   v.calibration_source(), ")");
  if (!v.first_divergent_layer().empty()) {
    absl::StrAppend(&message, "; first divergent layer: ", v.first_divergent_layer());
  }
  return absl::UnavailableError(message);
}

absl::Status HalfCastValidator::Verdict(const Options& options, const Result& result) {
  if (result.non_finite == 0) return absl::OkStatus();
  const PrecisionEntry* mode = PrecisionRegistry::Find(options.precision);
  const torch::Dtype dtype = mode != nullptr ? mode->traits.parameter_dtype : torch::kFloat32;
  const char* hint = dtype == torch::kFloat16    ? "fp16 overflow?"
                     : dtype == torch::kBFloat16 ? "bf16 overflow?"
                                                 : "overflow?";
  return absl::FailedPreconditionError(absl::StrCat(
      options.model, ": casting to ", options.precision, " gives non-finite outputs (",
      result.non_finite, " of ", result.elements, "; ", hint, ") on ",
      result.validation.calibration_source(), "; the fp32 model's outputs are finite there"));
}

}  // namespace mantissa
