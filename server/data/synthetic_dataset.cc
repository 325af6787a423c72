#include "server/data/synthetic_dataset.h"

#include <ATen/CPUGeneratorImpl.h>

#include "server/common/status_macros.h"

namespace mantissa {

absl::StatusOr<SyntheticDataset::Options> SyntheticDataset::ParseOptions(OptionReader& reader) {
  Options o;
  ASSIGN_OR_RETURN(o.train_size, reader.Int("train_size", o.train_size, 1, 10'000'000));
  ASSIGN_OR_RETURN(o.test_size, reader.Int("test_size", o.test_size, 0, 10'000'000));
  ASSIGN_OR_RETURN(o.features, reader.Int("features", o.features, 1, 65536));
  ASSIGN_OR_RETURN(o.classes, reader.Int("classes", o.classes, 2, 65536));
  ASSIGN_OR_RETURN(o.noise, reader.Double("noise", o.noise));
  if (o.noise < 0) return absl::InvalidArgumentError("dataset_options[noise]: must be >= 0");
  return o;
}

DatasetSplits SyntheticDataset::Generate(const Options& o, uint64_t seed) {
  // A private generator: concurrent jobs must not disturb each other's data.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  // Explicit dtype: a concurrent job's module-init guard may have changed the
  // process-wide default for a moment.
  const auto f32 = torch::TensorOptions(torch::kFloat32);
  const torch::Tensor centres = torch::randn({o.classes, o.features}, gen, f32) * 2.0;
  const auto make_split = [&](int64_t n) {
    torch::Tensor targets = torch::randint(0, o.classes, {n}, gen, torch::kInt64);
    torch::Tensor inputs =
        centres.index_select(0, targets) + torch::randn({n, o.features}, gen, f32) * o.noise;
    return std::make_unique<TensorDataset>(inputs, targets);
  };
  DatasetSplits splits;
  splits.train = make_split(o.train_size);
  if (o.test_size > 0) splits.test = make_split(o.test_size);
  splits.spec.input_shape = {o.features};
  splits.spec.num_classes = o.classes;
  return splits;
}

}  // namespace mantissa
