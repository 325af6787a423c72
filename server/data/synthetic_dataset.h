#ifndef MANTISSA_SERVER_DATA_SYNTHETIC_DATASET_H_
#define MANTISSA_SERVER_DATA_SYNTHETIC_DATASET_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "server/common/option_reader.h"
#include "server/data/dataset.h"

namespace mantissa {

// Gaussian clusters, one per class, fully determined by the seed: the same
// spec always gives the same data, so tests and benchmarks are repeatable.
// dataset_options: train_size, test_size, features, classes, noise.
class SyntheticDataset {
 public:
  static constexpr char kName[] = "synthetic";

  struct Options {
    int64_t train_size = 4096;
    int64_t test_size = 1024;
    int64_t features = 32;
    int64_t classes = 4;
    double noise = 1.0;  // per-feature stddev around the class centre
  };

  static absl::StatusOr<Options> ParseOptions(OptionReader& reader);
  static DatasetSplits Generate(const Options& options, uint64_t seed);
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_DATA_SYNTHETIC_DATASET_H_
