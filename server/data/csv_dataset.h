#ifndef MANTISSA_SERVER_DATA_CSV_DATASET_H_
#define MANTISSA_SERVER_DATA_CSV_DATASET_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "server/common/file_roots.h"
#include "server/common/option_reader.h"
#include "server/data/dataset.h"
#include "server/data/dataset_config.h"

namespace mantissa {

// Tabular classification from a CSV file: a header row of column names, then
// one row per example with numeric features and a label column. Labels that
// are all non-negative integers are used as they are; any other labels are
// sorted and numbered 0..K-1. The rows are split into train and test by a
// permutation drawn from the job's seed, and features are standardised with
// the training split's statistics (the test split must not leak into them).
// dataset_options: path (required), label (default: the last column),
// test_fraction (0.2), normalize (true|false), classes (default: max label + 1).
// No quoting beyond a pair of double quotes around a whole field.
class CsvDataset {
 public:
  static constexpr char kName[] = "csv";

  struct Options {
    std::string path;
    std::string label;  // empty: the last column
    double test_fraction = 0.2;
    bool normalize = true;
    int64_t classes = 0;  // 0: max label + 1
  };

  static absl::StatusOr<Options> ParseOptions(OptionReader& reader);
  // FAILED_PRECONDITION when the file is missing; reads nothing.
  static absl::Status CheckFile(const Options& options);
  static absl::StatusOr<DatasetSplits> Load(const Options& options, uint64_t seed);
  // The registry's parser: options parsed into a DatasetConfig.
  static absl::StatusOr<std::shared_ptr<const DatasetConfig>> ParseConfig(OptionReader& reader);
  // The registry's confinement of the path-valued options.
  static absl::Status ConfinePaths(std::map<std::string, std::string>& options,
                                   const FileRoots& roots);
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_DATA_CSV_DATASET_H_
