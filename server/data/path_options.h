#ifndef MANTISSA_SERVER_DATA_PATH_OPTIONS_H_
#define MANTISSA_SERVER_DATA_PATH_OPTIONS_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "server/common/file_roots.h"

namespace mantissa {

// Path-valued dataset_options confined to the daemon's data roots
// (DatasetRegistry::ConfinePaths); errors name "dataset_options[key]".

// Replaces a path-valued option by its canonical path; absent or empty
// options stay.
absl::Status ConfinePathOption(std::map<std::string, std::string>& options, const std::string& key,
                               const FileRoots& roots);

// A folder option, and each of `files` present in it: a symlink inside an
// allowed folder must not lead out of the roots either. A file that is
// missing is the dataset's own error (its folder is allowed).
absl::Status ConfineFolderOption(std::map<std::string, std::string>& options,
                                 const std::string& key, const std::vector<std::string>& files,
                                 const FileRoots& roots);

}  // namespace mantissa

#endif  // MANTISSA_SERVER_DATA_PATH_OPTIONS_H_
