#ifndef MANTISSA_SERVER_COMMON_FILE_SYNC_H_
#define MANTISSA_SERVER_COMMON_FILE_SYNC_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace mantissa {

// fsync(2) for atomic writes (write a temporary, flush it, rename it, flush
// the directory): a crash then leaves the old file or the new one. INTERNAL
// naming `path` and the failing call ("open" or "fsync") on error.
absl::Status FsyncFile(const std::string& path);

// Flushes a directory's entries, which makes a rename or a new entry in it
// durable.
absl::Status FsyncDir(const std::string& path);

// Removes every regular file named *.tmp under `dir` (recursively, not
// following symlinks): what atomic writes interrupted by a crash left
// behind. Folders in `keep` (the operator's data, e.g. a --data_root under
// the state folder) are left alone. For start-up, before anything writes;
// where other processes share `dir` (a fleet's workers), only files older
// than `min_age` are taken as left behind. Returns how many.
absl::StatusOr<int> RemoveTempFiles(const std::string& dir,
                                    const std::vector<std::string>& keep = {},
                                    absl::Duration min_age = absl::ZeroDuration());

}  // namespace mantissa

#endif  // MANTISSA_SERVER_COMMON_FILE_SYNC_H_
