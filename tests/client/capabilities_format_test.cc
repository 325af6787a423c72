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

TEST(CapabilitiesFormatTest, ShowsDataParallelSupportWhenTheDaemonSaysIt) {
  v1::GetCapabilitiesResponse capabilities;
  capabilities.set_device("cpu");
  capabilities.set_job_store("sqlite");
  EXPECT_THAT(FormatCapabilities(capabilities), Not(HasSubstr("Data parallel:")));
  v1::DataParallelSupport& support = *capabilities.mutable_data_parallel();
  support.set_backend("gloo");
  support.set_max_devices(8);
  support.set_reason("8 hardware threads (at least 2 ranks on the CPU)");
  EXPECT_THAT(FormatCapabilities(capabilities),
              HasSubstr("Job store:            sqlite\n"
                        "Data parallel:        gloo; up to 8 devices per node: 8 hardware threads "
                        "(at least 2 ranks on the CPU); multi-node: no (needs the PostgreSQL job "
                        "store)\n"));

  capabilities.set_job_store("postgresql");
  support.set_backend("nccl");
  support.set_max_devices(1);
  support.set_multi_node(true);
  support.clear_reason();
  EXPECT_THAT(FormatCapabilities(capabilities),
              HasSubstr("Data parallel:        nccl; up to 1 device per node; multi-node: yes\n"));
}

}  // namespace
}  // namespace mantissa::cli
