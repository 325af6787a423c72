#ifndef MANTISSA_SERVER_COMMON_LOGGING_H_
#define MANTISSA_SERVER_COMMON_LOGGING_H_

#include "absl/strings/string_view.h"

namespace mantissa {

// One line to stderr, prefixed with severity and UTC time, e.g.
// "I 2026-11-23T10:00:00.123Z job 3f2a started". Abseil 20220623 has no
// absl/log yet; this is all the daemon needs.
enum class LogSeverity { kInfo, kWarning, kError };
void Log(LogSeverity severity, absl::string_view message);

inline void LogInfo(absl::string_view message) { Log(LogSeverity::kInfo, message); }
inline void LogWarning(absl::string_view message) { Log(LogSeverity::kWarning, message); }
inline void LogError(absl::string_view message) { Log(LogSeverity::kError, message); }

}  // namespace mantissa

#endif  // MANTISSA_SERVER_COMMON_LOGGING_H_
