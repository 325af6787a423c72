// mantissa: the command-line client of the mantissad daemon: training jobs and
// served models. Main parses the global flags, finds the command in the
// table (client/command_table.h), parses its flags and runs it with the
// client it names.

#include <sys/ioctl.h>
#include <unistd.h>

#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "client/arg_parser.h"
#include "client/cli_command.h"
#include "client/command_io.h"
#include "client/command_table.h"
#include "client/daemon_channel.h"
#include "client/global_flags.h"
#include "client/interrupt_notice.h"
#include "client/model_client.h"
#include "client/training_client.h"

namespace mantissa::cli {
namespace {

int UsageError(const CliCommand* command, absl::string_view message) {
  if (command == nullptr) {
    std::cerr << "mantissa: " << message << "\nRun 'mantissa --help' for usage.\n";
  } else {
    std::cerr << "mantissa " << command->name << ": " << message << "\nRun 'mantissa help "
              << command->name << "' for usage.\n";
  }
  return kExitUsage;
}

int TerminalWidth() {
  winsize size{};
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 0) return size.ws_col;
  return 80;
}

// `mantissa help [COMMAND]`.
int RunHelp(const std::vector<std::string>& args) {
  if (args.empty()) {
    std::cout << Usage();
    return kExitOk;
  }
  if (args.size() > 1) return UsageError(nullptr, "help takes at most one command");
  const CliCommand* command = FindCommand(args.front());
  if (command == nullptr) return UsageError(nullptr, UnknownCommand(args.front()));
  std::cout << CommandUsage(*command);
  return kExitOk;
}

absl::Status CheckArgumentCount(const CliCommand& command, const std::vector<std::string>& args) {
  const size_t expected = static_cast<size_t>(command.argument_count);
  if (args.size() > expected && !command.more_arguments) {
    return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", args[expected], "'"));
  }
  if (args.size() < expected) {
    return absl::InvalidArgumentError(absl::StrCat("missing ", command.arguments));
  }
  return absl::OkStatus();
}

// Connects to the daemon with the client `command` names and runs it.
int Connect(const CliCommand& command, Invocation& invocation, const GlobalOptions& global) {
  const std::string server = ServerAddress(global);
  if (server.empty()) return UsageError(&command, "--server is empty");
  absl::StatusOr<ChannelOptions> channel_options = BuildChannelOptions(global, server);
  if (!channel_options.ok()) return UsageError(&command, channel_options.status().message());
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = CreateDaemonChannel(*channel_options);
  if (!channel.ok()) return UsageError(&command, channel.status().message());

  CommandIo io;
  io.json = global.json;
  io.terminal = isatty(STDOUT_FILENO) != 0;
  io.terminal_width = TerminalWidth();
  NoticeInterrupts(invocation.waiting(), /*clear_line=*/io.terminal && !io.json);

  std::unique_ptr<TrainingClient> training;
  std::unique_ptr<ModelClient> models;
  CommandClients clients;
  switch (command.client) {
    case ClientKind::kTraining:
      training = std::make_unique<TrainingClient>(*channel, server);
      clients.training = training.get();
      break;
    case ClientKind::kModel:
      models = std::make_unique<ModelClient>(*channel, server);
      clients.models = models.get();
      break;
  }
  return invocation.Run(clients, io);
}

// Parses the command's flags (global flags may follow the command too),
// checks everything before any call, so that a usage error never half-runs,
// and runs it.
int RunCommand(const CliCommand& command, const std::vector<std::string>& args,
               GlobalOptions& global) {
  const std::unique_ptr<Invocation> invocation = command.invoke();
  ArgParser parser;
  invocation->DefineFlags(parser);
  AddGlobalFlags(parser, &global);
  parser.set_unknown_flag_hint(FlagsHint(&command));
  absl::StatusOr<std::vector<std::string>> positional = parser.Parse(args);
  if (!positional.ok()) return UsageError(&command, positional.status().message());
  if (global.help) {
    std::cout << CommandUsage(command);
    return kExitOk;
  }
  if (absl::Status status = CheckArgumentCount(command, *positional); !status.ok()) {
    return UsageError(&command, status.message());
  }
  if (absl::Status status = invocation->Prepare(*positional); !status.ok()) {
    return UsageError(&command, status.message());
  }
  return Connect(command, *invocation, global);
}

int Main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  GlobalOptions global;
  ArgParser leading;
  AddGlobalFlags(leading, &global);
  leading.set_stop_at_positional(true);
  leading.set_unknown_flag_hint(FlagsHint(nullptr));
  absl::StatusOr<std::vector<std::string>> rest = leading.Parse(args);
  if (!rest.ok()) return UsageError(nullptr, rest.status().message());
  if (rest->empty()) {
    (global.help ? std::cout : std::cerr) << Usage();
    return global.help ? kExitOk : kExitUsage;
  }
  const std::string& name = rest->front();
  const std::vector<std::string> command_args(rest->begin() + 1, rest->end());
  if (name == "help") return RunHelp(command_args);
  const CliCommand* command = FindCommand(name);
  if (command == nullptr) return UsageError(nullptr, UnknownCommand(name));
  return RunCommand(*command, command_args, global);
}

}  // namespace
}  // namespace mantissa::cli

int main(int argc, char** argv) { return mantissa::cli::Main(argc, argv); }
