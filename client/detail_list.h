#ifndef MANTISSA_CLIENT_DETAIL_LIST_H_
#define MANTISSA_CLIENT_DETAIL_LIST_H_

#include <string>
#include <utility>
#include <vector>

namespace mantissa::cli {

// "Label:  value" lines with the values aligned; a value with newlines
// continues under its first line. Adding a field to a view is one Add().
class DetailList {
 public:
  void Add(std::string label, std::string value) {
    rows_.emplace_back(std::move(label), std::move(value));
  }
  std::string Render() const;

 private:
  std::vector<std::pair<std::string, std::string>> rows_;
};

}  // namespace mantissa::cli

#endif  // MANTISSA_CLIENT_DETAIL_LIST_H_
