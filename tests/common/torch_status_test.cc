#include "server/common/torch_status.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/testing/status_matchers.h"

namespace mantissa {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::StatusIs;

TEST(GuardTorchTest, TurnsC10ErrorIntoStatusWithContext) {
  absl::Status status = GuardTorch("job abc", [] {
    // A shape mismatch: LibTorch throws c10::Error.
    torch::matmul(torch::ones({2, 3}), torch::ones({4, 5}));
    return absl::OkStatus();
  });
  EXPECT_THAT(status,
              StatusIs(absl::StatusCode::kInternal,
                       AllOf(HasSubstr("job abc: "), HasSubstr("shapes cannot be multiplied"),
                             Not(HasSubstr("\n")))));
}

TEST(GuardTorchTest, PassesThroughStatusAndStdExceptions) {
  EXPECT_THAT(GuardTorch("x", [] { return absl::NotFoundError("nope"); }),
              StatusIs(absl::StatusCode::kNotFound, "nope"));
  EXPECT_THAT(GuardTorch("ctx", []() -> absl::Status { throw std::runtime_error("boom"); }),
              StatusIs(absl::StatusCode::kInternal, "ctx: boom"));
  EXPECT_THAT(GuardTorch("ctx", []() -> absl::Status { throw std::bad_alloc(); }),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("out of host memory")));
}

}  // namespace
}  // namespace mantissa
