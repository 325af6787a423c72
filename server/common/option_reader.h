#ifndef MANTISSA_SERVER_COMMON_OPTION_READER_H_
#define MANTISSA_SERVER_COMMON_OPTION_READER_H_

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace mantissa {

// Reads typed values from a `key=value` option map (JobSpec.model_options,
// dataset_options) and rejects keys nobody asked for, so a typo such as
// `hiden=128` is an INVALID_ARGUMENT instead of a silently ignored option.
//
//   OptionReader r("model_options", spec.model_options());
//   ASSIGN_OR_RETURN(int64_t n, r.Int("layers", 2, /*min=*/1));
//   RETURN_IF_ERROR(r.CheckAllUsed());
class OptionReader {
 public:
  // `field` names the map in error messages, e.g. "model_options".
  template <typename Map>
  OptionReader(std::string field, const Map& options)
      : field_(std::move(field)), options_(options.begin(), options.end()) {}

  absl::StatusOr<int64_t> Int(const std::string& key, int64_t default_value,
                              int64_t min_value = INT64_MIN, int64_t max_value = INT64_MAX);
  absl::StatusOr<double> Double(const std::string& key, double default_value);
  absl::StatusOr<std::string> String(const std::string& key, std::string default_value);
  // One of `choices`; the error lists them.
  absl::StatusOr<std::string> Choice(const std::string& key, std::string default_value,
                                     const std::vector<std::string>& choices);
  // A comma-separated list of positive integers, e.g. "256,128".
  absl::StatusOr<std::vector<int64_t>> IntList(const std::string& key,
                                               std::vector<int64_t> default_value);

  // INVALID_ARGUMENT naming any key that no accessor read, and the valid keys.
  absl::Status CheckAllUsed() const;

 private:
  const std::string* Find(const std::string& key);
  absl::Status Invalid(const std::string& key, const std::string& value,
                       const std::string& expected) const;

  std::string field_;
  std::map<std::string, std::string> options_;
  std::set<std::string> known_;
};

// A std::map copy of any string map (e.g. a protobuf Map field), the form the
// model and dataset registries take.
template <typename Map>
std::map<std::string, std::string> ToOptionMap(const Map& options) {
  return std::map<std::string, std::string>(options.begin(), options.end());
}

}  // namespace mantissa

#endif  // MANTISSA_SERVER_COMMON_OPTION_READER_H_
