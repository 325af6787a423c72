#include "server/precision/precision_factory.h"

#include <gtest/gtest.h>

#include "tests/testing/status_matchers.h"

namespace mantissa {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using testing::StatusIs;

const DeviceCapabilities& Cpu() {
  static const DeviceCapabilities* const caps =
      new DeviceCapabilities(DeviceCapabilities::Probe(torch::kCPU));
  return *caps;
}

// A CUDA device as a probe on an H100 would describe it; no GPU needed to
// build the struct.
DeviceCapabilities Hopper() {
  DeviceCapabilities caps;
  caps.device = torch::Device(torch::kCUDA, 0);
  caps.device_name = "cuda:0 (H100, sm_90)";
  caps.float64 = caps.bfloat16 = caps.float16 = true;
  caps.autocast_bfloat16 = caps.autocast_float16 = true;
  caps.compute_capability = 90;
  return caps;
}

TEST(DeviceCapabilitiesTest, ProbesTheCpu) {
  // LibTorch on CPU computes float64 and bfloat16 and autocasts to bfloat16.
  EXPECT_TRUE(Cpu().float64);
  EXPECT_TRUE(Cpu().bfloat16);
  EXPECT_TRUE(Cpu().autocast_bfloat16);
  EXPECT_FALSE(Cpu().autocast_float16);
  EXPECT_EQ(Cpu().compute_capability, 0);
  if (!Cpu().float16) EXPECT_FALSE(Cpu().Failure("float16").empty());
}

TEST(PrecisionFactoryTest, ResolvesCanonicalValuesAndAliases) {
  const std::vector<std::pair<std::string, std::string>> cases = {{"", "32-true"},
                                                                  {"32", "32-true"},
                                                                  {"32-true", "32-true"},
                                                                  {"64", "64-true"},
                                                                  {"64-true", "64-true"},
                                                                  {"bf16-true", "bf16-true"},
                                                                  {"bf16-mixed", "bf16-mixed"}};
  for (const auto& [value, canonical] : cases) {
    auto resolved = PrecisionFactory::Resolve(value, Cpu());
    ASSERT_OK(resolved) << value;
    EXPECT_EQ(resolved->canonical, canonical);
    EXPECT_EQ(resolved->effective, canonical);
    EXPECT_THAT(resolved->warnings, IsEmpty()) << value;
  }
}

TEST(PrecisionFactoryTest, LegacyAliasesWarnAsFabricDoes) {
  auto bf16 = PrecisionFactory::Resolve("bf16", Cpu());
  ASSERT_OK(bf16);
  EXPECT_EQ(bf16->canonical, "bf16-mixed");
  ASSERT_EQ(bf16->warnings.size(), 1u);
  EXPECT_THAT(bf16->warnings[0], HasSubstr("historical reasons"));
  EXPECT_THAT(bf16->warnings[0], HasSubstr("'bf16-mixed'"));

  auto sixteen = PrecisionFactory::Resolve("16", Hopper());
  ASSERT_OK(sixteen);
  EXPECT_EQ(sixteen->effective, "16-mixed");
  ASSERT_EQ(sixteen->warnings.size(), 1u);
  EXPECT_THAT(sixteen->warnings[0], HasSubstr("'16-mixed' instead"));
}

TEST(PrecisionFactoryTest, SixteenMixedFallsBackToBf16MixedOnCpu) {
  auto resolved = PrecisionFactory::Resolve("16-mixed", Cpu());
  ASSERT_OK(resolved);
  EXPECT_EQ(resolved->canonical, "16-mixed");
  EXPECT_EQ(resolved->effective, "bf16-mixed");
  ASSERT_EQ(resolved->warnings.size(), 1u);
  EXPECT_THAT(resolved->warnings[0], HasSubstr("not supported on CPU"));
  // On CUDA it stays itself.
  auto cuda = PrecisionFactory::Resolve("16-mixed", Hopper());
  ASSERT_OK(cuda);
  EXPECT_EQ(cuda->effective, "16-mixed");
  EXPECT_THAT(cuda->warnings, IsEmpty());
}

TEST(PrecisionFactoryTest, UnknownValueListsEveryValidValue) {
  auto resolved = PrecisionFactory::Resolve("fp17", Cpu());
  EXPECT_THAT(resolved, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'fp17'")));
  for (const char* v :
       {"32-true", "64-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true",
        "transformer-engine", "transformer-engine-float16", "32", "64", "16", "bf16"}) {
    EXPECT_THAT(std::string(resolved.status().message()), HasSubstr(v));
  }
}

TEST(PrecisionFactoryTest, WhatTheDeviceCannotRunIsFailedPrecondition) {
  EXPECT_THAT(PrecisionFactory::Resolve("transformer-engine", Cpu()),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("compute capability")));
  EXPECT_THAT(PrecisionFactory::Resolve("transformer-engine-float16", Cpu()),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("runs on cpu")));
  if (!Cpu().float16) {
    EXPECT_THAT(PrecisionFactory::Resolve("16-true", Cpu()),
                StatusIs(absl::StatusCode::kFailedPrecondition,
                         HasSubstr("float16 compute is not available on cpu")));
  }
  DeviceCapabilities ampere = Hopper();
  ampere.compute_capability = 80;
  const auto fp8 = PrecisionFactory::Resolve("transformer-engine", ampere);
  EXPECT_THAT(fp8, StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("8.9")));
}

TEST(PrecisionFactoryTest, ModesListEveryFabricValueInOrder) {
  std::vector<std::string> names;
  for (const PrecisionModeInfo& m : PrecisionFactory::Modes(Cpu())) {
    names.push_back(m.name);
    EXPECT_EQ(m.supported, !m.runs_as.empty()) << m.name;
    if (!m.supported) EXPECT_FALSE(m.reason.empty()) << m.name;
    if (m.name == "16-mixed") EXPECT_EQ(m.runs_as, "bf16-mixed");
  }
  EXPECT_THAT(names, ElementsAre("32-true", "64-true", "16-mixed", "bf16-mixed", "16-true",
                                 "bf16-true", "transformer-engine", "transformer-engine-float16"));
}

}  // namespace
}  // namespace mantissa
