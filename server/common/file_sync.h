#ifndef MANTISSA_SERVER_COMMON_FILE_SYNC_H_
#define MANTISSA_SERVER_COMMON_FILE_SYNC_H_

#include <string>

#include "absl/status/status.h"

namespace mantissa {

// fsync(2) for atomic writes (write a temporary, flush it, rename it, flush
// the directory): a crash then leaves the old file or the new one. INTERNAL
// naming `path` and the failing call ("open" or "fsync") on error.
absl::Status FsyncFile(const std::string& path);

// Flushes a directory's entries, which makes a rename or a new entry in it
// durable.
absl::Status FsyncDir(const std::string& path);

}  // namespace mantissa

#endif  // MANTISSA_SERVER_COMMON_FILE_SYNC_H_
