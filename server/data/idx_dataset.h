#ifndef MANTISSA_SERVER_DATA_IDX_DATASET_H_
#define MANTISSA_SERVER_DATA_IDX_DATASET_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/common/file_roots.h"
#include "server/common/option_reader.h"
#include "server/data/dataset.h"
#include "server/data/dataset_config.h"

namespace mantissa {

// MNIST-layout image classification from IDX files (train-images-idx3-ubyte,
// train-labels-idx1-ubyte, t10k-*), gzipped or not, any number of items.
// dataset_options: dir, train_limit, test_limit (0 = all items).
class IdxDataset {
 public:
  static constexpr char kFashionMnistName[] = "fashion-mnist";
  static constexpr char kMnistName[] = "mnist";

  struct Options {
    std::string dir;
    int64_t train_limit = 0;
    int64_t test_limit = 0;
    int64_t num_classes = 10;
    TensorDataset::Normalization normalization;
    // Appended to the missing-files error: where to get the files.
    std::string install_hint;
  };

  // `default_dir` is where the dataset's Debian package installs it (or
  // would); `install_hint` says how to get the files when they are missing.
  static absl::StatusOr<Options> ParseOptions(OptionReader& reader, const std::string& default_dir,
                                              TensorDataset::Normalization normalization,
                                              std::string install_hint);
  // Every file name Load may open in Options.dir (each stem, plain or .gz).
  static std::vector<std::string> FileNames();
  // Checks that the four files exist, without reading them.
  static absl::Status CheckFiles(const Options& options);
  static absl::StatusOr<DatasetSplits> Load(const Options& options);
  // The registry's parsers, with each dataset's default dir and statistics.
  static absl::StatusOr<std::shared_ptr<const DatasetConfig>> ParseFashionMnistConfig(
      OptionReader& reader);
  static absl::StatusOr<std::shared_ptr<const DatasetConfig>> ParseMnistConfig(
      OptionReader& reader);
  // The registry's confinement of the path-valued options.
  static absl::Status ConfinePaths(std::map<std::string, std::string>& options,
                                   const FileRoots& roots);

  // Reads one IDX file: uint8 images [N, rows, cols] or labels [N].
  // `limit` > 0 keeps the first `limit` items.
  static absl::StatusOr<torch::Tensor> ReadIdx(const std::string& path, int expected_dims,
                                               int64_t limit);
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_DATA_IDX_DATASET_H_
