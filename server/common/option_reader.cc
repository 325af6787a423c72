#include "server/common/option_reader.h"

#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace mantissa {

const std::string* OptionReader::Find(const std::string& key) {
  known_.insert(key);
  auto it = options_.find(key);
  return it == options_.end() ? nullptr : &it->second;
}

absl::Status OptionReader::Invalid(const std::string& key, const std::string& value,
                                   const std::string& expected) const {
  return absl::InvalidArgumentError(
      absl::StrCat(field_, "[", key, "]: '", value, "' is not ", expected));
}

absl::StatusOr<int64_t> OptionReader::Int(const std::string& key, int64_t default_value,
                                          int64_t min_value, int64_t max_value) {
  const std::string* value = Find(key);
  if (value == nullptr) return default_value;
  int64_t parsed = 0;
  if (!absl::SimpleAtoi(*value, &parsed)) return Invalid(key, *value, "an integer");
  if (parsed < min_value || parsed > max_value) {
    return Invalid(
        key, *value,
        absl::StrCat("in [", min_value, ", ",
                     max_value == INT64_MAX ? std::string("inf") : std::to_string(max_value), "]"));
  }
  return parsed;
}

absl::StatusOr<double> OptionReader::Double(const std::string& key, double default_value) {
  const std::string* value = Find(key);
  if (value == nullptr) return default_value;
  double parsed = 0;
  if (!absl::SimpleAtod(*value, &parsed)) return Invalid(key, *value, "a number");
  return parsed;
}

absl::StatusOr<std::string> OptionReader::String(const std::string& key,
                                                 std::string default_value) {
  const std::string* value = Find(key);
  return value == nullptr ? std::move(default_value) : *value;
}

absl::StatusOr<std::string> OptionReader::Choice(const std::string& key, std::string default_value,
                                                 const std::vector<std::string>& choices) {
  const std::string* value = Find(key);
  if (value == nullptr) return std::move(default_value);
  for (const std::string& c : choices) {
    if (*value == c) return c;
  }
  return Invalid(key, *value, absl::StrCat("one of ", absl::StrJoin(choices, "|")));
}

absl::StatusOr<std::vector<int64_t>> OptionReader::IntList(const std::string& key,
                                                           std::vector<int64_t> default_value) {
  const std::string* value = Find(key);
  if (value == nullptr) return std::move(default_value);
  std::vector<int64_t> out;
  for (absl::string_view part : absl::StrSplit(*value, ',', absl::SkipWhitespace())) {
    int64_t n = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &n) || n <= 0) {
      return Invalid(key, *value, "a comma-separated list of positive integers");
    }
    out.push_back(n);
  }
  return out;
}

absl::Status OptionReader::CheckAllUsed() const {
  for (const auto& [key, value] : options_) {
    if (known_.count(key) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(field_, ": unknown option '", key, "'; valid options: ",
                       known_.empty() ? std::string("none") : absl::StrJoin(known_, ", ")));
    }
  }
  return absl::OkStatus();
}

}  // namespace mantissa
