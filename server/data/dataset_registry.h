#ifndef MANTISSA_SERVER_DATA_DATASET_REGISTRY_H_
#define MANTISSA_SERVER_DATA_DATASET_REGISTRY_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/common/file_roots.h"
#include "server/common/option_reader.h"
#include "server/data/dataset_config.h"

namespace mantissa {

// One dataset: JobSpec.dataset's value, a line of help, the parser of its
// dataset_options and, for datasets that read files, the confinement of its
// path-valued options. The table is in dataset_registry.cc.
struct DatasetEntry {
  const char* name;
  const char* help;
  absl::StatusOr<std::shared_ptr<const DatasetConfig>> (*parse)(OptionReader& reader);
  // Replaces each path the options name by its canonical path under
  // `roots`; null for datasets that read no files.
  absl::Status (*confine_paths)(std::map<std::string, std::string>& options,
                                const FileRoots& roots);
};

// JobSpec.dataset + dataset_options -> a parsed DatasetConfig. Adding a
// dataset means one file whose class has a ParseConfig, and one row.
class DatasetRegistry {
 public:
  static const std::vector<DatasetEntry>& Entries();
  static std::vector<std::string> Names();
  // The entry of `name`, or null.
  static const DatasetEntry* Find(const std::string& name);

  // NOT_FOUND for an unknown name (listing the valid ones), INVALID_ARGUMENT
  // for bad or unknown options, FAILED_PRECONDITION for missing files
  // (DatasetConfig::CheckFiles). Loads nothing.
  static absl::StatusOr<std::shared_ptr<const DatasetConfig>> Parse(
      const std::string& name, const std::map<std::string, std::string>& options);

  // Parse, then DatasetConfig::Load: one call for tests and tools (the
  // daemon keeps the parsed config instead).
  static absl::StatusOr<DatasetSplits> Load(const std::string& name,
                                            const std::map<std::string, std::string>& options,
                                            uint64_t seed);

  // `options` with every path they name (csv path; tokens dir, train, val and
  // the files in dir; fashion-mnist and mnist dir and the files in it)
  // replaced by its canonical path. PERMISSION_DENIED, alike for a missing
  // path and a forbidden one, unless each lies under `roots`. Run before
  // Parse, which would otherwise tell a missing file from a present one.
  // Unknown names come back unchanged (Parse refuses them).
  static absl::StatusOr<std::map<std::string, std::string>> ConfinePaths(
      const std::string& name, std::map<std::string, std::string> options, const FileRoots& roots);
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_DATA_DATASET_REGISTRY_H_
