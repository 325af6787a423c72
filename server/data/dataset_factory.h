#ifndef MANTISSA_SERVER_DATA_DATASET_FACTORY_H_
#define MANTISSA_SERVER_DATA_DATASET_FACTORY_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
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

  static absl::StatusOr<DatasetSplits> Load(const std::string& name,
                                            const std::map<std::string, std::string>& options,
                                            uint64_t seed);
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_DATA_DATASET_FACTORY_H_
