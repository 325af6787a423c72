#ifndef MANTISSA_TESTS_TESTING_STATUS_MATCHERS_H_
#define MANTISSA_TESTS_TESTING_STATUS_MATCHERS_H_

#include <gmock/gmock.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace mantissa::testing {

inline const absl::Status& GetStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

// EXPECT_THAT(result, StatusIs(absl::StatusCode::kNotFound, HasSubstr("mlp")))
MATCHER_P2(StatusIs, code, message_matcher, "") {
  const absl::Status& status = GetStatus(arg);
  *result_listener << "status is " << status;
  return status.code() == code &&
         ::testing::ExplainMatchResult(message_matcher, std::string(status.message()),
                                       result_listener);
}

MATCHER(IsOk, "") {
  const absl::Status& status = GetStatus(arg);
  *result_listener << "status is " << status;
  return status.ok();
}

#define ASSERT_OK(expr) ASSERT_THAT((expr), ::mantissa::testing::IsOk())
#define EXPECT_OK(expr) EXPECT_THAT((expr), ::mantissa::testing::IsOk())

}  // namespace mantissa::testing

#endif  // MANTISSA_TESTS_TESTING_STATUS_MATCHERS_H_
