#include "server/common/file_sync.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"

namespace mantissa {
namespace {

absl::Status FsyncPath(const std::string& path, int flags) {
  const int fd = ::open(path.c_str(), flags);
  if (fd < 0) return absl::InternalError(absl::StrCat(path, ": open: ", std::strerror(errno)));
  const int rc = ::fsync(fd);
  const int saved = errno;
  ::close(fd);
  if (rc != 0) return absl::InternalError(absl::StrCat(path, ": fsync: ", std::strerror(saved)));
  return absl::OkStatus();
}

}  // namespace

absl::Status FsyncFile(const std::string& path) { return FsyncPath(path, O_RDONLY); }

absl::Status FsyncDir(const std::string& path) { return FsyncPath(path, O_RDONLY | O_DIRECTORY); }

absl::StatusOr<int> RemoveTempFiles(const std::string& dir, const std::vector<std::string>& keep,
                                    absl::Duration min_age) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return 0;
  // By identity (device and inode), so that any spelling of a folder counts.
  auto kept = [&keep](const fs::path& folder) {
    std::error_code unused;
    return std::any_of(keep.begin(), keep.end(), [&](const std::string& k) {
      return !k.empty() && fs::equivalent(folder, k, unused);
    });
  };
  if (kept(dir)) return 0;
  int removed = 0;
  fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec);
  if (ec) return absl::InternalError(absl::StrCat(dir, ": ", ec.message()));
  for (const fs::recursive_directory_iterator end; it != end; it.increment(ec)) {
    if (ec) return absl::InternalError(absl::StrCat(dir, ": ", ec.message()));
    const fs::path path = it->path();
    if (it->is_directory(ec) && !it->is_symlink(ec)) {
      if (kept(path)) it.disable_recursion_pending();
      continue;
    }
    if (path.extension() != ".tmp" || !it->is_regular_file(ec) || it->is_symlink(ec)) continue;
    if (min_age > absl::ZeroDuration()) {
      const auto written = fs::last_write_time(path, ec);
      if (ec || fs::file_time_type::clock::now() - written < absl::ToChronoSeconds(min_age)) {
        continue;  // another process may be writing it
      }
    }
    if (fs::remove(path, ec)) ++removed;
  }
  return removed;
}

}  // namespace mantissa
