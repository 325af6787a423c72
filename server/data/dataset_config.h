#ifndef MANTISSA_SERVER_DATA_DATASET_CONFIG_H_
#define MANTISSA_SERVER_DATA_DATASET_CONFIG_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/common/option_reader.h"
#include "server/data/dataset.h"

namespace mantissa {

// One dataset's parsed dataset_options (DatasetRegistry::Parse), so that
// loading does not parse them again. Immutable and shared.
class DatasetConfig {
 public:
  virtual ~DatasetConfig() = default;

  // The registry name, e.g. "csv".
  const std::string& name() const { return name_; }

  // FAILED_PRECONDITION for a missing file, INVALID_ARGUMENT for a file that
  // cannot hold one item. Reads no data.
  virtual absl::Status CheckFiles() const = 0;

  // The splits; `seed` draws synthetic data and random test splits.
  virtual absl::StatusOr<DatasetSplits> Load(uint64_t seed) const = 0;

 protected:
  explicit DatasetConfig(std::string name) : name_(std::move(name)) {}

 private:
  std::string name_;
};

// A DatasetConfig over a dataset class's Options and its static functions.
template <typename Options>
class DatasetConfigOf final : public DatasetConfig {
 public:
  using CheckFn = absl::Status (*)(const Options&);
  using LoadFn = absl::StatusOr<DatasetSplits> (*)(const Options&, uint64_t seed);

  // `check_files` null: the dataset reads no files.
  DatasetConfigOf(std::string name, Options options, CheckFn check_files, LoadFn load)
      : DatasetConfig(std::move(name)),
        options_(std::move(options)),
        check_files_(check_files),
        load_(load) {}

  const Options& options() const { return options_; }
  absl::Status CheckFiles() const override {
    return check_files_ == nullptr ? absl::OkStatus() : check_files_(options_);
  }
  absl::StatusOr<DatasetSplits> Load(uint64_t seed) const override { return load_(options_, seed); }

 private:
  Options options_;
  CheckFn check_files_;
  LoadFn load_;
};

// Deduces Options from `options` only, so that captureless lambdas convert.
template <typename Options>
std::shared_ptr<const DatasetConfig> MakeDatasetConfig(
    std::string name, Options options, typename DatasetConfigOf<Options>::CheckFn check_files,
    typename DatasetConfigOf<Options>::LoadFn load) {
  return std::make_shared<const DatasetConfigOf<Options>>(std::move(name), std::move(options),
                                                          check_files, load);
}

// The registry's parser for a dataset generated from the seed, reading no
// files: T's kName, Options, ParseOptions and Generate.
template <typename T>
absl::StatusOr<std::shared_ptr<const DatasetConfig>> ParseGeneratedDataset(OptionReader& reader) {
  absl::StatusOr<typename T::Options> options = T::ParseOptions(reader);
  if (!options.ok()) return options.status();
  return MakeDatasetConfig(
      T::kName, *std::move(options), nullptr,
      [](const typename T::Options& o, uint64_t seed) -> absl::StatusOr<DatasetSplits> {
        return T::Generate(o, seed);
      });
}

}  // namespace mantissa

#endif  // MANTISSA_SERVER_DATA_DATASET_CONFIG_H_
