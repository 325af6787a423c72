#ifndef MANTISSA_CLIENT_TABLE_PRINTER_H_
#define MANTISSA_CLIENT_TABLE_PRINTER_H_

#include <cstddef>
#include <ostream>
#include <string>
#include <vector>

namespace mantissa::cli {

// A plain-text table whose column widths follow the content. Columns are
// separated by two spaces and lines carry no trailing whitespace, so the
// output stays friendly to grep, awk and diff.
class TablePrinter {
 public:
  explicit TablePrinter(std::vector<std::string> header);

  // Right-aligns a column (numbers read better that way).
  void AlignRight(size_t column);
  // Missing cells print empty; cells beyond the header are dropped.
  void AddRow(std::vector<std::string> row);

  size_t row_count() const { return rows_.size(); }
  void Print(std::ostream& out) const;
  std::string ToString() const;

 private:
  std::vector<std::string> header_;
  std::vector<bool> right_aligned_;
  std::vector<std::vector<std::string>> rows_;
};

// Width of `text` on a terminal, counting UTF-8 code points rather than bytes.
size_t DisplayWidth(const std::string& text);

}  // namespace mantissa::cli

#endif  // MANTISSA_CLIENT_TABLE_PRINTER_H_
