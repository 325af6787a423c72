#ifndef MANTISSA_CLIENT_COMMAND_IO_H_
#define MANTISSA_CLIENT_COMMAND_IO_H_

#include <iostream>
#include <ostream>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "google/protobuf/message.h"

// Where the commands of the `mantissa` CLI write, and their exit codes.
namespace mantissa::cli {

inline constexpr int kExitOk = 0;
// A failed call, or a watched job that did not succeed.
inline constexpr int kExitFailure = 1;
// Bad command line; nothing was sent to the daemon.
inline constexpr int kExitUsage = 2;

struct CommandIo {
  std::ostream* out = &std::cout;
  std::ostream* err = &std::cerr;
  // Print responses in protobuf's JSON mapping (watch: one event per line).
  bool json = false;
  // `out` is a terminal: draw a live progress line instead of one per event.
  bool terminal = false;
  int terminal_width = 80;
  absl::TimeZone time_zone = absl::LocalTimeZone();
};

// Prints "mantissa: <error>" on `io.err` and returns kExitFailure.
int ReportError(const absl::Status& status, const CommandIo& io);

// Prints `message` in protobuf's JSON mapping on `io.out`; one line unless
// `pretty`.
void PrintJson(const google::protobuf::Message& message, bool pretty, const CommandIo& io);

// Prints a call's response: in JSON with --json, else as `format` renders
// it. The error of a failed call is reported instead.
template <typename Response, typename Format>
int PrintResponse(const absl::StatusOr<Response>& response, Format format, const CommandIo& io) {
  if (!response.ok()) return ReportError(response.status(), io);
  if (io.json) {
    PrintJson(*response, /*pretty=*/true, io);
  } else {
    *io.out << format(*response) << std::flush;
  }
  return kExitOk;
}

}  // namespace mantissa::cli

#endif  // MANTISSA_CLIENT_COMMAND_IO_H_
