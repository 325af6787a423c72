#include "server/common/logging.h"

#include <cstdio>
#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace mantissa {

void Log(LogSeverity severity, absl::string_view message) {
  const char tag = severity == LogSeverity::kInfo      ? 'I'
                   : severity == LogSeverity::kWarning ? 'W'
                                                       : 'E';
  const std::string time =
      absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone());
  // One fprintf per line keeps lines from different threads whole.
  std::fprintf(stderr, "%c %s %.*s\n", tag, time.c_str(), static_cast<int>(message.size()),
               message.data());
}

}  // namespace mantissa
