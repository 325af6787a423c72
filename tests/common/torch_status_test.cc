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

TEST(GuardTorchTest, CpuAllocatorFailureIsResourceExhausted) {
  // 2^50 floats: LibTorch's CPU allocator refuses with a plain c10::Error.
  absl::Status status = GuardTorch("job big", [] {
    torch::empty({int64_t{1} << 50});
    return absl::OkStatus();
  });
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("job big: ")));
  EXPECT_EQ(RequestedAllocation(status.message()), "4.00 PiB");
}

TEST(GuardTorchTest, CudaAllocationFailuresWithoutTheOomTypeAreResourceExhausted) {
  // Raised as plain c10::Errors by CUDA error checks and cuBLAS handles.
  for (const char* message : {"CUDA error: out of memory",
                              "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate"}) {
    absl::Status status = GuardTorch("job gpu", [message]() -> absl::Status {
      TORCH_CHECK(false, message);
      return absl::OkStatus();
    });
    EXPECT_THAT(status, StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr(message)));
  }
}

TEST(RequestedAllocationTest, ReadsCudaAndCpuAllocatorMessages) {
  EXPECT_EQ(RequestedAllocation("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a "
                                "total capacity of 79.11 GiB"),
            "20.00 GiB");
  EXPECT_EQ(RequestedAllocation("DefaultCPUAllocator: not enough memory: you tried to allocate "
                                "4000000000000 bytes."),
            "3.64 TiB");
  EXPECT_EQ(RequestedAllocation("you tried to allocate 512 bytes."), "512 bytes");
  EXPECT_EQ(RequestedAllocation("shapes cannot be multiplied"), "");
}

}  // namespace
}  // namespace mantissa
