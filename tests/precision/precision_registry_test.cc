#include "server/precision/precision_registry.h"

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

TEST(PrecisionRegistryTest, ResolvesCanonicalValuesAndAliases) {
  const std::vector<std::pair<std::string, std::string>> cases = {{"", "32-true"},
                                                                  {"32", "32-true"},
                                                                  {"32-true", "32-true"},
                                                                  {"64", "64-true"},
                                                                  {"64-true", "64-true"},
                                                                  {"bf16-true", "bf16-true"},
                                                                  {"bf16-mixed", "bf16-mixed"}};
  for (const auto& [value, canonical] : cases) {
    auto resolved = PrecisionRegistry::Resolve(value, Cpu());
    ASSERT_OK(resolved) << value;
    EXPECT_EQ(resolved->canonical, canonical);
    EXPECT_EQ(resolved->effective, canonical);
    EXPECT_THAT(resolved->warnings, IsEmpty()) << value;
  }
}

TEST(PrecisionRegistryTest, LegacyAliasesWarnAsFabricDoes) {
  auto bf16 = PrecisionRegistry::Resolve("bf16", Cpu());
  ASSERT_OK(bf16);
  EXPECT_EQ(bf16->canonical, "bf16-mixed");
  ASSERT_EQ(bf16->warnings.size(), 1u);
  EXPECT_THAT(bf16->warnings[0], HasSubstr("historical reasons"));
  EXPECT_THAT(bf16->warnings[0], HasSubstr("'bf16-mixed'"));

  auto sixteen = PrecisionRegistry::Resolve("16", Hopper());
  ASSERT_OK(sixteen);
  EXPECT_EQ(sixteen->effective, "16-mixed");
  ASSERT_EQ(sixteen->warnings.size(), 1u);
  EXPECT_THAT(sixteen->warnings[0], HasSubstr("'16-mixed' instead"));
}

TEST(PrecisionRegistryTest, SixteenMixedFallsBackToBf16MixedOnCpu) {
  auto resolved = PrecisionRegistry::Resolve("16-mixed", Cpu());
  ASSERT_OK(resolved);
  EXPECT_EQ(resolved->canonical, "16-mixed");
  EXPECT_EQ(resolved->effective, "bf16-mixed");
  ASSERT_EQ(resolved->warnings.size(), 1u);
  EXPECT_THAT(resolved->warnings[0], HasSubstr("not supported on CPU"));
  // On CUDA it stays itself.
  auto cuda = PrecisionRegistry::Resolve("16-mixed", Hopper());
  ASSERT_OK(cuda);
  EXPECT_EQ(cuda->effective, "16-mixed");
  EXPECT_THAT(cuda->warnings, IsEmpty());
}

TEST(PrecisionRegistryTest, UnknownValueListsEveryValidValue) {
  auto resolved = PrecisionRegistry::Resolve("fp17", Cpu());
  EXPECT_THAT(resolved, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'fp17'")));
  for (const char* v :
       {"32-true", "64-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true",
        "transformer-engine", "transformer-engine-float16", "32", "64", "16", "bf16"}) {
    EXPECT_THAT(std::string(resolved.status().message()), HasSubstr(v));
  }
}

TEST(PrecisionRegistryTest, WhatTheDeviceCannotRunIsFailedPrecondition) {
  EXPECT_THAT(PrecisionRegistry::Resolve("transformer-engine", Cpu()),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("compute capability")));
  EXPECT_THAT(PrecisionRegistry::Resolve("transformer-engine-float16", Cpu()),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("runs on cpu")));
  if (!Cpu().float16) {
    EXPECT_THAT(PrecisionRegistry::Resolve("16-true", Cpu()),
                StatusIs(absl::StatusCode::kFailedPrecondition,
                         HasSubstr("float16 compute is not available on cpu")));
  }
  DeviceCapabilities ampere = Hopper();
  ampere.compute_capability = 80;
  const auto fp8 = PrecisionRegistry::Resolve("transformer-engine", ampere);
  EXPECT_THAT(fp8, StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("8.9")));
}

TEST(PrecisionRegistryTest, ModesListEveryFabricValueInOrder) {
  std::vector<std::string> names;
  for (const PrecisionModeInfo& m : PrecisionRegistry::Modes(Cpu())) {
    names.push_back(m.name);
    EXPECT_EQ(m.supported, !m.runs_as.empty()) << m.name;
    if (!m.supported) EXPECT_FALSE(m.reason.empty()) << m.name;
    if (m.name == "16-mixed") EXPECT_EQ(m.runs_as, "bf16-mixed");
  }
  EXPECT_THAT(names, ElementsAre("32-true", "64-true", "16-mixed", "bf16-mixed", "16-true",
                                 "bf16-true", "transformer-engine", "transformer-engine-float16"));
}

// The table's traits are what each plugin does: the decisions taken from
// them (scaler default, FP8 recipe, serving casts, memory estimate) cannot
// drift from the plugins.
TEST(PrecisionRegistryTest, TraitsAgreeWithThePlugins) {
  for (const PrecisionEntry& entry : PrecisionRegistry::Entries()) {
    SCOPED_TRACE(entry.name);
    EXPECT_EQ(PrecisionRegistry::Find(entry.name), &entry);
    EXPECT_NE(std::string(entry.help), "");
    const PrecisionTraits& traits = entry.traits;
    EXPECT_FALSE(traits.true_half && traits.autocast);
    EXPECT_EQ(traits.servable, !traits.autocast && traits.parameter_dtype != torch::kFloat64);
    if (traits.fp8) {
      // The FP8 plugins need CUDA.
      EXPECT_THAT(PrecisionRegistry::Create(entry.name, torch::kCPU),
                  StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("_scaled_mm")));
      EXPECT_TRUE(traits.autocast);
      continue;
    }
    auto plugin = PrecisionRegistry::Create(entry.name, torch::kCPU);
    ASSERT_OK(plugin);
    EXPECT_EQ((*plugin)->name(), entry.name);
    EXPECT_EQ((*plugin)->parameter_dtype(), traits.parameter_dtype);
    EXPECT_EQ((*plugin)->compute_dtype(), traits.compute_dtype);
    EXPECT_EQ(traits.true_half, traits.parameter_dtype == torch::kFloat16 ||
                                    traits.parameter_dtype == torch::kBFloat16);
  }
  EXPECT_EQ(PrecisionRegistry::Find("16"), nullptr);  // aliases are not entries
  EXPECT_THAT(PrecisionRegistry::Create("fp17", torch::kCPU),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("no plugin")));
}

// JobSpec.bf16_update: the true-half modes take every rounding, the others
// only nearest.
TEST(PrecisionRegistryTest, OnlyTheTrueHalfModesRoundTheUpdateOtherwise) {
  const HalfUpdate::Options kahan{UpdateRounding::kKahan, 3};
  for (const std::string name : {"bf16-true", "16-true"}) {
    auto plugin = PrecisionRegistry::Create(name, torch::kCPU, DelayedScaling(), kahan);
    ASSERT_OK(plugin);
    EXPECT_EQ((*plugin)->update_rounding(), "kahan");
  }
  auto stochastic = PrecisionRegistry::Create("bf16-true", torch::kCPU, DelayedScaling(),
                                              {UpdateRounding::kStochastic, 3});
  ASSERT_OK(stochastic);
  EXPECT_EQ((*stochastic)->update_rounding(), "stochastic");
  for (const std::string name : {"32-true", "64-true", "bf16-mixed"}) {
    EXPECT_THAT(PrecisionRegistry::Create(name, torch::kCPU, DelayedScaling(), kahan),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("bf16_update: 'kahan' applies to bf16-true and 16-true only, "
                                   "not '" +
                                   name + "'")));
    auto nearest = PrecisionRegistry::Create(name, torch::kCPU);
    ASSERT_OK(nearest);
    EXPECT_EQ((*nearest)->update_rounding(), "nearest");
    EXPECT_EQ((*nearest)->StateBytes(), 0);
  }
}

TEST(PrecisionRegistryTest, ResolvedTraitsAreTheEffectiveModes) {
  auto sixteen = PrecisionRegistry::Resolve("16-mixed", Cpu());
  ASSERT_OK(sixteen);
  // bf16-mixed on the CPU: no grad scaler by default.
  EXPECT_FALSE(sixteen->traits.scaler_by_default);
  EXPECT_EQ(sixteen->traits.compute_dtype, torch::kBFloat16);
  auto cuda = PrecisionRegistry::Resolve("16-mixed", Hopper());
  ASSERT_OK(cuda);
  EXPECT_TRUE(cuda->traits.scaler_by_default);
  auto fp8 = PrecisionRegistry::Resolve("transformer-engine", Hopper());
  if (fp8.ok()) EXPECT_TRUE(fp8->traits.fp8);  // LibTorch < 2.4 refuses FP8
  auto half = PrecisionRegistry::Resolve("bf16-true", Cpu());
  ASSERT_OK(half);
  EXPECT_TRUE(half->traits.true_half);
  EXPECT_TRUE(half->traits.servable);
}

}  // namespace
}  // namespace mantissa
