#include "client/table_printer.h"

#include <string>

#include "gtest/gtest.h"

namespace mantissa::cli {
namespace {

TEST(TablePrinterTest, WidthsFollowTheWidestCell) {
  TablePrinter table({"ID", "NAME"});
  table.AddRow({"abc", "x"});
  table.AddRow({"a", "longer-name"});
  EXPECT_EQ(table.ToString(),
            "ID   NAME\n"
            "abc  x\n"
            "a    longer-name\n");
}

TEST(TablePrinterTest, RightAlignedColumns) {
  TablePrinter table({"STEP", "LOSS"});
  table.AlignRight(0);
  table.AddRow({"5/100", "0.1"});
  table.AddRow({"100/100", "0.05"});
  EXPECT_EQ(table.ToString(),
            "   STEP  LOSS\n"
            "  5/100  0.1\n"
            "100/100  0.05\n");
}

TEST(TablePrinterTest, NoTrailingWhitespaceAndMissingCellsAreEmpty) {
  TablePrinter table({"A", "B", "C"});
  table.AddRow({"1"});
  table.AddRow({"22", "", "x"});
  const std::string out = table.ToString();
  EXPECT_EQ(out,
            "A   B  C\n"
            "1\n"
            "22     x\n");
  EXPECT_EQ(table.row_count(), 2u);
}

TEST(TablePrinterTest, ExtraCellsAreDropped) {
  TablePrinter table({"A"});
  table.AddRow({"1", "2"});
  EXPECT_EQ(table.ToString(), "A\n1\n");
}

TEST(TablePrinterTest, CountsUtf8CharactersNotBytes) {
  EXPECT_EQ(DisplayWidth("abc"), 3u);
  EXPECT_EQ(DisplayWidth("\xC3\xA9t\xC3\xA9"), 3u);  // "été"
  TablePrinter table({"NAME", "X"});
  table.AddRow({"\xC3\xA9t\xC3\xA9", "1"});
  EXPECT_EQ(table.ToString(),
            "NAME  X\n"
            "\xC3\xA9t\xC3\xA9   1\n");
}

TEST(TablePrinterTest, HeaderOnly) {
  TablePrinter table({"ID", "STATE"});
  EXPECT_EQ(table.ToString(), "ID  STATE\n");
  EXPECT_EQ(table.row_count(), 0u);
}

}  // namespace
}  // namespace mantissa::cli
