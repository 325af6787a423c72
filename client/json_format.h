#ifndef MANTISSA_CLIENT_JSON_FORMAT_H_
#define MANTISSA_CLIENT_JSON_FORMAT_H_

#include <string>

#include "absl/strings/string_view.h"
#include "google/protobuf/message.h"

namespace mantissa::cli {

// `message` in protobuf's JSON mapping, with zero-valued fields printed too
// (scripts read fields like progress.step even while they are still 0) and
// without a trailing newline.
std::string ToJson(const google::protobuf::Message& message, bool pretty);

// `text` as a quoted JSON string, for the few documents built by hand.
std::string JsonString(absl::string_view text);

}  // namespace mantissa::cli

#endif  // MANTISSA_CLIENT_JSON_FORMAT_H_
