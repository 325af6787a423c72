#include "client/capabilities_format.h"

#include <string>

#include "gmock/gmock.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"

namespace mantissa::cli {
namespace {

using ::testing::HasSubstr;

TEST(CapabilitiesFormatTest, RunsAsColumnWithDashWhenEmpty) {
  v1::GetCapabilitiesResponse capabilities;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(
      R"pb(
        device: "cpu"
        precisions { precision: "32-true" supported: true runs_as: "32-true" aliases: "32" }
        precisions {
          precision: "16-mixed"
          supported: true
          runs_as: "bf16-mixed"
          aliases: "16"
          reason: "runs as bf16-mixed on cpu"
        }
        precisions { precision: "16-true" reason: "no fp16 kernels on cpu" }
      )pb",
      &capabilities));
  EXPECT_THAT(FormatCapabilities(capabilities),
              HasSubstr("PRECISION  SUPPORTED  RUNS AS     ALIASES  REASON\n"
                        "32-true    yes        32-true     32\n"
                        "16-mixed   yes        bf16-mixed  16       runs as bf16-mixed on cpu\n"
                        "16-true    no         -           -        no fp16 kernels on cpu\n"));
}

}  // namespace
}  // namespace mantissa::cli
