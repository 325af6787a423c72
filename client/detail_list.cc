#include "client/detail_list.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace mantissa::cli {

std::string DetailList::Render() const {
  size_t width = 0;
  for (const auto& row : rows_) width = std::max(width, row.first.size() + 1);
  const std::string indent(width + 2, ' ');
  std::string out;
  for (const auto& [label, value] : rows_) {
    bool first = true;
    for (absl::string_view line : absl::StrSplit(value, '\n')) {
      if (first) {
        const std::string head = label + ":";
        absl::StrAppend(&out, head, std::string(width + 2 - head.size(), ' '), line, "\n");
        first = false;
      } else {
        absl::StrAppend(&out, indent, line, "\n");
      }
    }
  }
  return out;
}

}  // namespace mantissa::cli
