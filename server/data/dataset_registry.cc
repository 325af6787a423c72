#include "server/data/dataset_registry.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/named_entries.h"
#include "server/common/status_macros.h"
#include "server/data/csv_dataset.h"
#include "server/data/idx_dataset.h"
#include "server/data/synthetic_dataset.h"
#include "server/data/synthetic_tokens_dataset.h"
#include "server/data/token_file_dataset.h"

namespace mantissa {

const std::vector<DatasetEntry>& DatasetRegistry::Entries() {
  static const auto* const entries = new std::vector<DatasetEntry>{
      {SyntheticDataset::kName, "Gaussian clusters, generated from the seed",
       &ParseGeneratedDataset<SyntheticDataset>, nullptr},
      {SyntheticTokensDataset::kName, "periodic token sequences, generated from the seed",
       &ParseGeneratedDataset<SyntheticTokensDataset>, nullptr},
      {IdxDataset::kFashionMnistName, "Fashion-MNIST IDX files",
       &IdxDataset::ParseFashionMnistConfig, &IdxDataset::ConfinePaths},
      {IdxDataset::kMnistName, "MNIST IDX files", &IdxDataset::ParseMnistConfig,
       &IdxDataset::ConfinePaths},
      {CsvDataset::kName, "a CSV file of numeric features and a label column",
       &CsvDataset::ParseConfig, &CsvDataset::ConfinePaths},
      {TokenFileDataset::kName, "uint16 token files (nanoGPT's train.bin, val.bin)",
       &TokenFileDataset::ParseConfig, &TokenFileDataset::ConfinePaths},
  };
  return *entries;
}

std::vector<std::string> DatasetRegistry::Names() { return EntryNames(Entries()); }

const DatasetEntry* DatasetRegistry::Find(const std::string& name) {
  return FindEntry(Entries(), name);
}

absl::StatusOr<std::shared_ptr<const DatasetConfig>> DatasetRegistry::Parse(
    const std::string& name, const std::map<std::string, std::string>& options) {
  ASSIGN_OR_RETURN(std::shared_ptr<const DatasetConfig> config,
                   ParseEntryOptions(Entries(), "dataset", name, "dataset_options", options));
  RETURN_IF_ERROR(config->CheckFiles());
  return config;
}

absl::StatusOr<std::map<std::string, std::string>> DatasetRegistry::ConfinePaths(
    const std::string& name, std::map<std::string, std::string> options, const FileRoots& roots) {
  const DatasetEntry* entry = Find(name);
  if (entry != nullptr && entry->confine_paths != nullptr) {
    RETURN_IF_ERROR(entry->confine_paths(options, roots));
  }
  return options;
}

absl::StatusOr<DatasetSplits> DatasetRegistry::Load(
    const std::string& name, const std::map<std::string, std::string>& options, uint64_t seed) {
  ASSIGN_OR_RETURN(std::shared_ptr<const DatasetConfig> config, Parse(name, options));
  return config->Load(seed);
}

}  // namespace mantissa
