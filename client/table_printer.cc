#include "client/table_printer.h"

#include <algorithm>
#include <sstream>
#include <utility>

namespace mantissa::cli {

size_t DisplayWidth(const std::string& text) {
  // Continuation bytes (10xxxxxx) do not start a new character.
  return std::count_if(text.begin(), text.end(),
                       [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; });
}

TablePrinter::TablePrinter(std::vector<std::string> header)
    : header_(std::move(header)), right_aligned_(header_.size(), false) {}

void TablePrinter::AlignRight(size_t column) {
  if (column < right_aligned_.size()) right_aligned_[column] = true;
}

void TablePrinter::AddRow(std::vector<std::string> row) {
  row.resize(header_.size());
  rows_.push_back(std::move(row));
}

void TablePrinter::Print(std::ostream& out) const {
  std::vector<size_t> widths(header_.size());
  for (size_t c = 0; c < header_.size(); ++c) {
    widths[c] = DisplayWidth(header_[c]);
    for (const auto& row : rows_) widths[c] = std::max(widths[c], DisplayWidth(row[c]));
  }
  const auto print_line = [&](const std::vector<std::string>& cells) {
    std::string line;
    for (size_t c = 0; c < cells.size(); ++c) {
      if (c > 0) line += "  ";
      const std::string padding(widths[c] - DisplayWidth(cells[c]), ' ');
      line += right_aligned_[c] ? padding + cells[c] : cells[c] + padding;
    }
    line.erase(line.find_last_not_of(' ') + 1);
    out << line << '\n';
  };
  print_line(header_);
  for (const auto& row : rows_) print_line(row);
}

std::string TablePrinter::ToString() const {
  std::ostringstream out;
  Print(out);
  return out.str();
}

}  // namespace mantissa::cli
