#include "server/common/file_roots.h"

#include <limits.h>
#include <stdlib.h>

#include <memory>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace mantissa {
namespace {

// realpath(3): symlinks, "." and ".." resolved; empty when the path or a
// folder on its way does not exist or cannot be searched.
std::string RealPath(const std::string& path) {
  if (path.empty()) return "";
  std::unique_ptr<char, decltype(&::free)> resolved(::realpath(path.c_str(), nullptr), &::free);
  return resolved == nullptr ? "" : std::string(resolved.get());
}

bool Inside(const std::string& path, const std::string& root) {
  if (root == "/") return true;
  return path == root || absl::StartsWith(path, absl::StrCat(root, "/"));
}

}  // namespace

FileRoots::FileRoots(std::vector<std::string> roots, std::string flag) : flag_(std::move(flag)) {
  for (std::string& root : roots) {
    if (!root.empty()) roots_.push_back(std::move(root));
  }
}

absl::StatusOr<std::string> FileRoots::Resolve(absl::string_view field,
                                               const std::string& path) const {
  const std::string real = RealPath(path);
  if (real.empty()) return Refusal(field, path);
  for (const std::string& root : roots_) {
    const std::string real_root = RealPath(root);
    if (!real_root.empty() && Inside(real, real_root)) return real;
  }
  return Refusal(field, path);
}

absl::Status FileRoots::Refusal(absl::string_view field, const std::string& path) const {
  if (roots_.empty()) {
    return absl::PermissionDeniedError(absl::StrCat(
        field, ": '", path, "' is not under an allowed folder; none is configured (", flag_, ")"));
  }
  return absl::PermissionDeniedError(absl::StrCat(field, ": '", path,
                                                  "' is not an existing path under an allowed "
                                                  "folder (",
                                                  flag_, ": ", absl::StrJoin(roots_, ", "), ")"));
}

}  // namespace mantissa
