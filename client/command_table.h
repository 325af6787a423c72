#ifndef MANTISSA_CLIENT_COMMAND_TABLE_H_
#define MANTISSA_CLIENT_COMMAND_TABLE_H_

#include <string>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "client/cli_command.h"

// Every command of the `mantissa` CLI, and the help texts made from them.
namespace mantissa::cli {

// The training commands' rows, then the model commands'; help lists them in
// this order.
absl::Span<const CliCommand* const> Commands();

// nullptr if there is no such command.
const CliCommand* FindCommand(absl::string_view name);

// "unknown command 'NAME'", with the list of the valid ones.
std::string UnknownCommand(absl::string_view name);

// `mantissa help`: every command with its summary, and the global flags.
std::string Usage();

// `mantissa help COMMAND`: its arguments, description and flags.
std::string CommandUsage(const CliCommand& command);

// For ArgParser::set_unknown_flag_hint: the flags valid for `command`, or,
// for nullptr, those valid before a command.
std::string FlagsHint(const CliCommand* command);

}  // namespace mantissa::cli

#endif  // MANTISSA_CLIENT_COMMAND_TABLE_H_
