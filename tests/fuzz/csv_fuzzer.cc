// Fuzzes the CSV dataset: the input is the file, loaded with the default
// options and with a named label column, no normalisation and a fixed class
// count. A loaded dataset must hand out batches whose targets are classes.

#include <torch/torch.h>

#include <cstddef>
#include <cstdint>

#include "server/data/csv_dataset.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

void LoadAndCheck(const mantissa::CsvDataset::Options& options) {
  absl::StatusOr<mantissa::DatasetSplits> splits = mantissa::CsvDataset::Load(options, 7);
  if (!splits.ok()) return;
  FUZZ_CHECK(splits->train != nullptr && splits->train->size() > 0);
  FUZZ_CHECK(splits->spec.input_shape.size() == 1 && splits->spec.input_shape[0] >= 1);
  FUZZ_CHECK(splits->spec.num_classes >= 1);
  for (const mantissa::Dataset* split : {splits->train.get(), splits->test.get()}) {
    if (split == nullptr) continue;
    const int64_t n = std::min<int64_t>(split->size(), 8);
    mantissa::Batch batch = split->Get(torch::arange(n, torch::kInt64));
    FUZZ_CHECK(batch.inputs.size(0) == n && batch.targets.size(0) == n);
    FUZZ_CHECK(batch.inputs.size(1) == splits->spec.input_shape[0]);
    if (n > 0) {
      FUZZ_CHECK(batch.targets.min().item<int64_t>() >= 0);
      FUZZ_CHECK(batch.targets.max().item<int64_t>() < splits->spec.num_classes);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  torch::set_num_threads(1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const mantissa::fuzz::ScratchFile file("data.csv");
  file.Write(data, size);
  mantissa::CsvDataset::Options defaults;
  defaults.path = file.path();
  LoadAndCheck(defaults);

  mantissa::CsvDataset::Options named = defaults;
  named.label = "label";
  named.test_fraction = 0.5;
  named.normalize = false;
  named.classes = 3;
  LoadAndCheck(named);
  return 0;
}
