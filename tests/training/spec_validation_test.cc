// Every way a submitted spec can be refused, in-process through
// ResolveJobSpec with the test daemon's context: the status code SubmitJob
// answers with and the words its message must name. A few of these also go
// through the real daemon (tests/integration/training_service_test.cc), which
// checks that a refusal stores nothing and the daemon keeps serving.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/training/job_spec_resolver.h"
#include "tests/testing/bad_spec_cases.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/daemon_resolve_context.h"

namespace mantissa {
namespace {

using ::testing::HasSubstr;
using testing::SyntheticMlpSpec;

class SpecValidationTest : public ::testing::TestWithParam<testing::BadSpecCase> {};

TEST_P(SpecValidationTest, IsRejectedWithCodeAndMessage) {
  v1::JobSpec spec = SyntheticMlpSpec(10);
  ASSERT_TRUE(ResolveJobSpec(spec, testing::DaemonResolveContext()).ok());
  GetParam().mutate(spec);
  const auto resolved = ResolveJobSpec(spec, testing::DaemonResolveContext());
  ASSERT_FALSE(resolved.ok());
  EXPECT_EQ(resolved.status().code(), GetParam().code) << resolved.status();
  for (const std::string& part : GetParam().message_parts) {
    EXPECT_THAT(std::string(resolved.status().message()), HasSubstr(part));
  }
}

INSTANTIATE_TEST_SUITE_P(AllBadInputs, SpecValidationTest,
                         ::testing::ValuesIn(testing::BadSpecCases()),
                         [](const ::testing::TestParamInfo<testing::BadSpecCase>& info) {
                           return info.param.name;
                         });

// Data parallelism against a CPU worker of 4 hardware threads, and a CUDA
// worker with 2 GPUs visible.
class WorldSizeValidationTest : public ::testing::Test {
 protected:
  static ResolveContext Context(int max_devices) {
    ResolveContext context = testing::DaemonResolveContext();
    context.max_devices = max_devices;
    return context;
  }
};

TEST_F(WorldSizeValidationTest, DefaultsToOneRankOnOneNode) {
  const auto resolved = ResolveJobSpec(SyntheticMlpSpec(10), Context(4));
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_EQ(resolved->spec.devices(), 1);
  EXPECT_EQ(resolved->spec.num_nodes(), 1);
  // Resolved again: unchanged.
  const auto again = ResolveJobSpec(resolved->spec, Context(4));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->spec.SerializeAsString(), resolved->spec.SerializeAsString());
}

TEST_F(WorldSizeValidationTest, AcceptsDevicesUpToTheWorkersAndNodesUpTo64) {
  v1::JobSpec spec = SyntheticMlpSpec(10);
  spec.set_devices(4);
  spec.set_num_nodes(64);
  const auto resolved = ResolveJobSpec(spec, Context(4));
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_EQ(resolved->spec.devices(), 4);
  EXPECT_EQ(resolved->spec.num_nodes(), 64);
}

TEST_F(WorldSizeValidationTest, RefusesDevicesOutsideOneToMaxDevicesNamingTheRange) {
  for (int devices : {0, -1, 5}) {
    v1::JobSpec spec = SyntheticMlpSpec(10);
    spec.set_devices(devices);
    const auto resolved = ResolveJobSpec(spec, Context(4));
    ASSERT_FALSE(resolved.ok()) << devices;
    EXPECT_EQ(resolved.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(resolved.status().message()),
                HasSubstr(absl::StrCat("devices: must be in [1, 4] on this worker (one rank per "
                                       "hardware thread, at least 2), got ",
                                       devices)));
  }
}

TEST_F(WorldSizeValidationTest, RefusesNumNodesOutsideOneTo64) {
  for (int nodes : {0, 65}) {
    v1::JobSpec spec = SyntheticMlpSpec(10);
    spec.set_num_nodes(nodes);
    const auto resolved = ResolveJobSpec(spec, Context(4));
    ASSERT_FALSE(resolved.ok()) << nodes;
    EXPECT_EQ(resolved.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(resolved.status().message()),
                HasSubstr(absl::StrCat("num_nodes: must be in [1, 64], got ", nodes)));
  }
}

TEST_F(WorldSizeValidationTest, OnCudaTheLimitIsTheVisibleGpus) {
  ResolveContext context = Context(2);
  context.caps.device = torch::Device(torch::kCUDA, 0);
  v1::JobSpec spec = SyntheticMlpSpec(10);
  spec.set_devices(3);
  spec.set_precision("32-true");
  const auto resolved = ResolveJobSpec(spec, context);
  ASSERT_FALSE(resolved.ok());
  EXPECT_THAT(std::string(resolved.status().message()),
              HasSubstr("devices: must be in [1, 2] on this worker (2 GPUs visible), got 3"));
}

// JobSpec.bf16_update: an unknown value, and a rounding other than nearest
// with a precision whose weights are not half.
TEST(Bf16UpdateValidationTest, RefusesUnknownValuesAndPrecisionsWithoutHalfWeights) {
  v1::JobSpec spec = SyntheticMlpSpec(10);
  spec.set_precision("bf16-true");
  spec.set_bf16_update("round-up");
  auto resolved = ResolveJobSpec(spec, testing::DaemonResolveContext());
  ASSERT_FALSE(resolved.ok());
  EXPECT_EQ(resolved.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(resolved.status().message(),
            "bf16_update: unknown value 'round-up'; valid values: nearest, stochastic, kahan");
  for (const std::string precision : {"bf16-mixed", "32-true", "16-mixed", "64"}) {
    for (const std::string rounding : {"kahan", "stochastic"}) {
      spec.set_precision(precision);
      spec.set_bf16_update(rounding);
      resolved = ResolveJobSpec(spec, testing::DaemonResolveContext());
      ASSERT_FALSE(resolved.ok()) << precision << " " << rounding;
      EXPECT_EQ(resolved.status().code(), absl::StatusCode::kInvalidArgument);
      // The canonical name of the precision submitted ("64" is 64-true).
      const std::string canonical = precision == "64" ? "64-true" : precision;
      EXPECT_EQ(resolved.status().message(),
                absl::StrCat("bf16_update: '", rounding,
                             "' applies to bf16-true and 16-true only, not '", canonical, "'"));
    }
    spec.set_bf16_update("nearest");
    EXPECT_TRUE(ResolveJobSpec(spec, testing::DaemonResolveContext()).ok()) << precision;
  }
}

}  // namespace
}  // namespace mantissa
