#ifndef MANTISSA_SERVER_DATA_DATASET_FACTORY_H_
#define MANTISSA_SERVER_DATA_DATASET_FACTORY_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/common/file_roots.h"
#include "server/data/dataset.h"

namespace mantissa {

// Maps JobSpec.dataset + dataset_options to loaded splits.
class DatasetFactory {
 public:
  static std::vector<std::string> Names();

  // NOT_FOUND for an unknown name (listing the valid ones), INVALID_ARGUMENT
  // for bad options, FAILED_PRECONDITION for missing files. Loads nothing.
  static absl::Status Validate(const std::string& name,
                               const std::map<std::string, std::string>& options);

  // `options` with every path they name (csv path; tokens dir, train, val and
  // the files in dir; fashion-mnist and mnist dir and the files in it)
  // replaced by its canonical path. PERMISSION_DENIED, alike for a missing
  // path and a forbidden one, unless each lies under `roots`. Run before
  // Validate, which would otherwise tell a missing file from a present one.
  static absl::StatusOr<std::map<std::string, std::string>> ConfinePaths(
      const std::string& name, std::map<std::string, std::string> options, const FileRoots& roots);

  static absl::StatusOr<DatasetSplits> Load(const std::string& name,
                                            const std::map<std::string, std::string>& options,
                                            uint64_t seed);
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_DATA_DATASET_FACTORY_H_
