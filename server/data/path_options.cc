#include "server/data/path_options.h"

#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"

namespace mantissa {

absl::Status ConfinePathOption(std::map<std::string, std::string>& options, const std::string& key,
                               const FileRoots& roots) {
  auto it = options.find(key);
  if (it == options.end() || it->second.empty()) return absl::OkStatus();
  ASSIGN_OR_RETURN(it->second,
                   roots.Resolve(absl::StrCat("dataset_options[", key, "]"), it->second));
  return absl::OkStatus();
}

absl::Status ConfineFolderOption(std::map<std::string, std::string>& options,
                                 const std::string& key, const std::vector<std::string>& files,
                                 const FileRoots& roots) {
  RETURN_IF_ERROR(ConfinePathOption(options, key, roots));
  auto it = options.find(key);
  if (it == options.end() || it->second.empty()) return absl::OkStatus();
  for (const std::string& file : files) {
    const std::string path = absl::StrCat(it->second, "/", file);
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) continue;
    RETURN_IF_ERROR(roots.Resolve(absl::StrCat("dataset_options[", key, "]"), path).status());
  }
  return absl::OkStatus();
}

}  // namespace mantissa
