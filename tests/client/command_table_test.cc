#include "client/command_table.h"

#include <memory>
#include <set>
#include <string>

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mantissa::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

TEST(CommandTableTest, RowsAreComplete) {
  std::set<absl::string_view> names;
  for (const CliCommand* command : Commands()) {
    EXPECT_TRUE(names.insert(command->name).second) << command->name << " is listed twice";
    EXPECT_FALSE(command->summary.empty()) << command->name;
    EXPECT_FALSE(command->description.empty()) << command->name;
    EXPECT_EQ(command->arguments.empty(), command->argument_count == 0 && !command->more_arguments)
        << command->name;
    ASSERT_NE(command->invoke, nullptr) << command->name;
    EXPECT_NE(command->invoke(), nullptr) << command->name;
    EXPECT_EQ(FindCommand(command->name), command);
  }
  EXPECT_EQ(names.count("help"), 0u) << "help is Main's own";
  EXPECT_EQ(FindCommand("train"), nullptr);
}

TEST(CommandTableTest, UsageListsEveryCommand) {
  const std::string usage = Usage();
  for (const CliCommand* command : Commands()) {
    EXPECT_THAT(usage, HasSubstr(absl::StrCat("\n  ", command->name, " "))) << command->name;
  }
  EXPECT_THAT(usage, HasSubstr("\n  help [COMMAND] "));
}

TEST(CommandTableTest, CommandUsageShowsTheFlagsDeclaredWithTheCommand) {
  const CliCommand* list = FindCommand("list");
  ASSERT_NE(list, nullptr);
  const std::string usage = CommandUsage(*list);
  EXPECT_THAT(usage, StartsWith("Usage: mantissa [GLOBAL FLAGS] list [FLAGS]\n"));
  EXPECT_THAT(usage, HasSubstr("  --state=STATE "));
  EXPECT_THAT(usage, HasSubstr("  --limit=N "));

  const CliCommand* get = FindCommand("get");
  ASSERT_NE(get, nullptr);
  EXPECT_THAT(CommandUsage(*get), StartsWith("Usage: mantissa [GLOBAL FLAGS] get JOB\n"));
}

TEST(CommandTableTest, UnknownCommandListsTheValidOnes) {
  const std::string message = UnknownCommand("train");
  EXPECT_THAT(message, StartsWith("unknown command 'train'\nCommands: submit, resume,"));
  for (const CliCommand* command : Commands()) {
    EXPECT_THAT(message, HasSubstr(std::string(command->name)));
  }
  EXPECT_THAT(message, HasSubstr(" help"));
}

TEST(CommandTableTest, FlagsHintNamesTheCommandsFlags) {
  EXPECT_EQ(FlagsHint(FindCommand("resume")),
            "Flags of resume: --name, --wait, and the global flags");
  EXPECT_THAT(FlagsHint(FindCommand("get")),
              StartsWith("get takes only the global flags: --server, --token-file,"));
  EXPECT_THAT(FlagsHint(nullptr), StartsWith("Flags before a command: --server,"));
}

TEST(CommandTableTest, HintsWrapAtEightyColumns) {
  for (const CliCommand* command : Commands()) {
    for (absl::string_view line : absl::StrSplit(FlagsHint(command), '\n')) {
      EXPECT_LE(line.size(), 80u) << command->name << ": " << line;
    }
  }
  for (absl::string_view line : absl::StrSplit(UnknownCommand("x"), '\n')) {
    EXPECT_LE(line.size(), 80u) << line;
  }
}

}  // namespace
}  // namespace mantissa::cli
