#ifndef MANTISSA_SERVER_COMMON_FILE_ROOTS_H_
#define MANTISSA_SERVER_COMMON_FILE_ROOTS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mantissa {

// The folders a client may name files in (datasets, TorchScript modules). A
// path is allowed when its realpath, with "..", "." and every symlink
// resolved, lies inside one of the roots; roots are resolved at each check,
// so one created after start-up counts. Copyable, immutable, thread-safe.
class FileRoots {
 public:
  FileRoots() = default;  // no roots: every path is refused
  // `flag` is the daemon flag that sets the roots, named in refusals.
  FileRoots(std::vector<std::string> roots, std::string flag);

  bool empty() const { return roots_.empty(); }
  const std::vector<std::string>& roots() const { return roots_; }
  const std::string& flag() const { return flag_; }

  // The canonical path of `path`, which must exist and lie under a root.
  // PERMISSION_DENIED otherwise, with one message for a missing path and
  // for a forbidden one, so that a refusal tells nothing about the server's
  // files. `field` names the request field, e.g. "dataset_options[path]".
  absl::StatusOr<std::string> Resolve(absl::string_view field, const std::string& path) const;

  // The refusal Resolve gives for `path`.
  absl::Status Refusal(absl::string_view field, const std::string& path) const;

 private:
  std::vector<std::string> roots_;
  std::string flag_;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_COMMON_FILE_ROOTS_H_
