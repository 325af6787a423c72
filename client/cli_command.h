#ifndef MANTISSA_CLIENT_CLI_COMMAND_H_
#define MANTISSA_CLIENT_CLI_COMMAND_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "client/arg_parser.h"
#include "client/command_io.h"
#include "client/model_client.h"
#include "client/training_client.h"

// One row of the `mantissa` command table, and what a row runs. Main parses
// the global flags, finds the row, lets an Invocation bind and check the
// command's flags, makes the client the row names and runs it.
namespace mantissa::cli {

// The daemon service a command talks to; Main connects only that one.
enum class ClientKind { kTraining, kModel };

// The client of the command's kind; the other is null.
struct CommandClients {
  TrainingClient* training = nullptr;
  ModelClient* models = nullptr;
};

// What a command waits for, which Ctrl-C stops (the daemon's work goes on).
enum class Waiting {
  kNothing,
  kOneJob,    // draws a live progress line
  kManyJobs,  // reports on stderr only
};

// One run of a command, from its flags to its exit code.
class Invocation {
 public:
  virtual ~Invocation() = default;

  // Binds the command's flags to this invocation's fields.
  virtual void DefineFlags(ArgParser& parser) {}
  // Turns the positional arguments (as many as the row says) and the flags
  // into what Run sends. An error is a usage error: nothing was sent yet.
  virtual absl::Status Prepare(const std::vector<std::string>& args) = 0;
  virtual Waiting waiting() const { return Waiting::kNothing; }
  virtual int Run(const CommandClients& clients, const CommandIo& io) = 0;
};

struct CliCommand {
  absl::string_view name;
  absl::string_view arguments;  // positional arguments, as shown in usage
  int argument_count;  // exactly this many positional arguments (at least, with more_arguments)
  absl::string_view summary;  // one line, in 'mantissa help'
  absl::string_view description;
  ClientKind client;
  std::unique_ptr<Invocation> (*invoke)();
  // Takes further positional arguments after the first argument_count.
  bool more_arguments = false;
};

// For CliCommand::invoke.
template <typename T>
std::unique_ptr<Invocation> Invoke() {
  return std::make_unique<T>();
}

// Moves a prepared value into `out`, or returns why there is none.
template <typename T>
absl::Status Store(absl::StatusOr<T> value, T& out) {
  if (!value.ok()) return value.status();
  out = *std::move(value);
  return absl::OkStatus();
}

}  // namespace mantissa::cli

#endif  // MANTISSA_CLIENT_CLI_COMMAND_H_
