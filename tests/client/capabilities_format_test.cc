#include "client/capabilities_format.h"

#include <string>

#include "gmock/gmock.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"

namespace mantissa::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

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

TEST(CapabilitiesFormatTest, ShowsTheWorkerAndItsJobStoreWhenTheDaemonSaysThem) {
  v1::GetCapabilitiesResponse capabilities;
  capabilities.set_device("cpu");
  capabilities.set_max_concurrent_jobs(1);
  EXPECT_THAT(FormatCapabilities(capabilities), Not(HasSubstr("Worker:")));
  EXPECT_THAT(FormatCapabilities(capabilities), Not(HasSubstr("Job store:")));
  capabilities.set_worker_id("node-a-41-9f3c");
  capabilities.set_job_store("postgresql");
  EXPECT_THAT(FormatCapabilities(capabilities), HasSubstr("Max concurrent jobs:  1\n"
                                                          "Worker:               node-a-41-9f3c\n"
                                                          "Job store:            postgresql\n"));
}

}  // namespace
}  // namespace mantissa::cli
