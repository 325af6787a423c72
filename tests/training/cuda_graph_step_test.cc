#include "server/training/cuda_graph_step.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/testing/status_matchers.h"

namespace mantissa {
namespace {

using ::testing::HasSubstr;
using testing::StatusIs;

// Only the options are inspected: a CUDA device needs no GPU here.
struct Fixture {
  torch::Tensor w = torch::zeros({2}).set_requires_grad(true);
  torch::optim::SGD sgd{std::vector<torch::Tensor>{w}, torch::optim::SGDOptions(0.1)};
  FusedAdamW fused{std::vector<torch::Tensor>{w}, torch::optim::AdamWOptions(0.1)};

  CudaGraphStep::Options Options(torch::Device device, torch::optim::Optimizer* optimizer,
                                 const std::string& name) {
    CudaGraphStep::Options options;
    options.device = device;
    options.optimizer = optimizer;
    options.optimizer_name = name;
    return options;
  }
};

TEST(CudaGraphStepTest, SaysWhyAJobCannotBeCaptured) {
  Fixture s;
  EXPECT_EQ(CudaGraphStep::UnsupportedReason(s.Options(torch::kCPU, &s.fused, "adamw")),
            "the job runs on cpu, CUDA graphs need a CUDA device");

  CudaGraphStep::Options accumulating = s.Options(torch::kCUDA, &s.fused, "adamw");
  accumulating.accumulate_grad_batches = 4;
  EXPECT_EQ(CudaGraphStep::UnsupportedReason(accumulating),
            "accumulate_grad_batches is 4, a captured step takes exactly one batch");

  EXPECT_THAT(CudaGraphStep::UnsupportedReason(s.Options(torch::kCUDA, &s.sgd, "sgd")),
              HasSubstr("optimizer sgd has no fused CUDA kernel"));

  CudaGraphStep::Options shared = s.Options(torch::Device(torch::kCUDA, 1), &s.fused, "adamw");
  shared.device_shared = true;
  EXPECT_EQ(CudaGraphStep::UnsupportedReason(shared),
            "other jobs may run on cuda:1 at the same time (--max_concurrent_jobs > 1), and a "
            "capture would break their random number draws");

#ifndef MANTISSA_WITH_CUDA
  EXPECT_EQ(CudaGraphStep::UnsupportedReason(s.Options(torch::kCUDA, &s.fused, "adamw")),
            "this mantissad was built without CUDA");
#else
  EXPECT_EQ(CudaGraphStep::UnsupportedReason(s.Options(torch::kCUDA, &s.fused, "adamw")), "");
#endif
}

TEST(CudaGraphStepTest, CreateRefusesWithTheReason) {
  Fixture s;
  bool called = false;
  auto created = CudaGraphStep::Create(s.Options(torch::kCPU, &s.fused, "adamw"),
                                       [&](const torch::Tensor&, const torch::Tensor&) {
                                         called = true;
                                         return CudaGraphStep::Output{};
                                       });
  EXPECT_THAT(created, StatusIs(absl::StatusCode::kFailedPrecondition,
                                HasSubstr("cuda_graph: the job runs on cpu, CUDA graphs need a "
                                          "CUDA device; training eagerly")));
  EXPECT_FALSE(called);
}

}  // namespace
}  // namespace mantissa
