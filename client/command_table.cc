#include "client/command_table.h"

#include <algorithm>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/global_flags.h"
#include "client/model_commands.h"
#include "client/training_commands.h"

namespace mantissa::cli {
namespace {

constexpr absl::string_view kHelpCommand = "help";
constexpr size_t kLineWidth = 80;

std::vector<const CliCommand*> AllCommands() {
  std::vector<const CliCommand*> commands;
  for (absl::Span<const CliCommand> group : {TrainingCommands(), ModelCommands()}) {
    for (const CliCommand& command : group) commands.push_back(&command);
  }
  return commands;
}

std::string GlobalFlagsHelp() {
  GlobalOptions unused;
  ArgParser parser;
  AddGlobalFlags(parser, &unused);
  return parser.Help();
}

std::vector<std::string> GlobalFlagNames() {
  GlobalOptions unused;
  ArgParser parser;
  AddGlobalFlags(parser, &unused);
  return parser.FlagNames();
}

// `intro` and then `items`, comma-separated and wrapped at kLineWidth with
// the continuation lines indented.
std::string WrappedList(std::string intro, const std::vector<std::string>& items,
                        absl::string_view end) {
  std::string out = std::move(intro);
  const size_t last_newline = out.rfind('\n');
  size_t line_start = last_newline == std::string::npos ? 0 : last_newline + 1;
  for (size_t i = 0; i < items.size(); ++i) {
    const std::string item = absl::StrCat(items[i], i + 1 < items.size() ? "," : end);
    if (out.size() - line_start + 1 + item.size() > kLineWidth) {
      absl::StrAppend(&out, "\n ");
      line_start = out.size() - 1;
    }
    absl::StrAppend(&out, " ", item);
  }
  return out;
}

}  // namespace

absl::Span<const CliCommand* const> Commands() {
  static const auto* const commands = new std::vector<const CliCommand*>(AllCommands());
  return *commands;
}

const CliCommand* FindCommand(absl::string_view name) {
  for (const CliCommand* command : Commands()) {
    if (command->name == name) return command;
  }
  return nullptr;
}

std::string UnknownCommand(absl::string_view name) {
  std::vector<std::string> names;
  for (const CliCommand* command : Commands()) names.emplace_back(command->name);
  names.emplace_back(kHelpCommand);
  return WrappedList(absl::StrCat("unknown command '", name, "'\nCommands:"), names, "");
}

std::string Usage() {
  std::string out =
      "Usage: mantissa [--server=HOST:PORT] [--json] COMMAND [ARGS]\n"
      "\n"
      "Submits, follows and manages training jobs on a mantissad daemon, and serves\n"
      "the trained models for inference.\n"
      "\n"
      "Commands:\n";
  std::vector<std::pair<std::string, absl::string_view>> lines;
  size_t width = 0;
  for (const CliCommand* command : Commands()) {
    std::string left = std::string(command->name);
    if (!command->arguments.empty()) absl::StrAppend(&left, " ", command->arguments);
    width = std::max(width, left.size());
    lines.emplace_back(std::move(left), command->summary);
  }
  lines.emplace_back(absl::StrCat(kHelpCommand, " [COMMAND]"), "show help for a command");
  width = std::max(width, lines.back().first.size());
  for (const auto& [left, summary] : lines) {
    absl::StrAppend(&out, "  ", left, std::string(width - left.size() + 2, ' '), summary, "\n");
  }
  absl::StrAppend(&out,
                  "\n"
                  "Global flags (before or after the command):\n",
                  GlobalFlagsHelp(),
                  "\n"
                  "Flags take --flag=value or --flag value.\n"
                  "Exit status: 0 on success, 1 when a call fails or a watched job does not\n"
                  "succeed, 2 for a usage error.\n");
  return out;
}

std::string CommandUsage(const CliCommand& command) {
  std::string out = absl::StrCat("Usage: mantissa [GLOBAL FLAGS] ", command.name);
  ArgParser parser;
  const std::unique_ptr<Invocation> unused = command.invoke();
  unused->DefineFlags(parser);
  const std::string flags = parser.Help();
  if (!flags.empty()) absl::StrAppend(&out, " [FLAGS]");
  if (!command.arguments.empty()) absl::StrAppend(&out, " ", command.arguments);
  absl::StrAppend(&out, "\n\n", command.description, "\n");
  if (!flags.empty()) absl::StrAppend(&out, "\nFlags:\n", flags);
  absl::StrAppend(&out, "\nGlobal flags:\n", GlobalFlagsHelp());
  return out;
}

std::string FlagsHint(const CliCommand* command) {
  if (command == nullptr) return WrappedList("Flags before a command:", GlobalFlagNames(), "");
  ArgParser parser;
  const std::unique_ptr<Invocation> unused = command->invoke();
  unused->DefineFlags(parser);
  const std::vector<std::string> names = parser.FlagNames();
  if (names.empty()) {
    return WrappedList(absl::StrCat(command->name, " takes only the global flags:"),
                       GlobalFlagNames(), "");
  }
  return WrappedList(absl::StrCat("Flags of ", command->name, ":"), names,
                     ", and the global flags");
}

}  // namespace mantissa::cli
