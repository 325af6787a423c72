// Per-model statistics through the real daemon: Triton's ModelStatistics
// over gRPC counts every answered and refused request, the items, the
// forwards per merged batch size and where the time went; /metrics shows
// the same requests in the queue-wait and compute histograms, and the
// queue-depth gauge returns to 0 once every request is answered.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "tests/testing/serving_daemon_test.h"

namespace mantissa {
namespace {

using ::testing::Contains;
using testing::GrpcStatusIs;
using ::testing::HasSubstr;

class ServingStatisticsTest : public testing::ServingDaemonTest {
 protected:
  grpc::Status Statistics(const std::string& name, const std::string& version,
                          inference::ModelStatisticsResponse* response) {
    grpc::ClientContext context;
    inference::ModelStatisticsRequest request;
    request.set_name(name);
    request.set_version(version);
    return client_->inference().ModelStatistics(&context, request, response);
  }
};

TEST_F(ServingStatisticsTest, CountsRequestsItemsForwardsAndTimes) {
  const std::string job = Train(testing::SyntheticMlpSpec(10));
  ASSERT_FALSE(job.empty());
  Export(job, "m", "32-true");
  ASSERT_FALSE(HasFailure());

  // Concurrent clients, so that some requests share a forward: half send a
  // batch of 1, half a batch of 4; every fifth request has the wrong shape.
  constexpr int kThreads = 4;
  constexpr int kEach = 10;
  std::atomic<int> ok{0}, bad{0}, items{0}, unexpected{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        const int64_t n = t % 2 == 0 ? 1 : 4;
        const bool wrong = i % 5 == 4;
        const int64_t width = wrong ? 31 : 32;
        inference::ModelInferResponse response;
        const grpc::Status s = client_->Infer(
            testing::FloatRequest("m", "input", {n, width},
                                  testing::PseudoRandomFloats(n * width, 10 * t + i)),
            &response);
        if (wrong && s.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
          ++bad;
        } else if (!wrong && s.ok()) {
          ++ok;
          items += static_cast<int>(n);
        } else {
          ++unexpected;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  ASSERT_EQ(unexpected.load(), 0);
  ASSERT_EQ(ok.load(), kThreads * kEach * 4 / 5);
  ASSERT_EQ(bad.load(), kThreads * kEach / 5);

  inference::ModelStatisticsResponse response;
  ASSERT_TRUE(Statistics("m", "", &response).ok());
  ASSERT_EQ(response.model_stats_size(), 1) << response.DebugString();
  const inference::ModelStatistics& v1 = response.model_stats(0);
  EXPECT_EQ(v1.name(), "m");
  EXPECT_EQ(v1.version(), "1");
  const inference::InferStatistics& s = v1.inference_stats();
  EXPECT_EQ(s.success().count(), static_cast<uint64_t>(ok.load()));
  EXPECT_EQ(s.fail().count(), static_cast<uint64_t>(bad.load()));
  EXPECT_EQ(v1.inference_count(), static_cast<uint64_t>(items.load()));
  EXPECT_GE(v1.execution_count(), 1u);
  EXPECT_LE(v1.execution_count(), static_cast<uint64_t>(ok.load()));
  EXPECT_GT(v1.last_inference(), 0u);
  for (const inference::StatisticDuration& d :
       {s.success(), s.queue(), s.compute_input(), s.compute_infer(), s.compute_output()}) {
    EXPECT_EQ(d.count(), static_cast<uint64_t>(ok.load()));
    EXPECT_GT(d.ns(), 0u);
  }
  // Each forward is in exactly one batch size, and the batches hold every item.
  uint64_t executions = 0, batched_items = 0, previous = 0;
  for (const inference::InferBatchStatistics& b : v1.batch_stats()) {
    EXPECT_GT(b.batch_size(), previous);  // ascending
    previous = b.batch_size();
    EXPECT_GT(b.compute_infer().ns(), 0u);
    executions += b.compute_infer().count();
    batched_items += b.batch_size() * b.compute_infer().count();
  }
  EXPECT_EQ(executions, v1.execution_count());
  EXPECT_EQ(batched_items, v1.inference_count());

  // The same version by number; every model when the name is empty.
  inference::ModelStatisticsResponse by_version;
  ASSERT_TRUE(Statistics("m", "1", &by_version).ok());
  ASSERT_EQ(by_version.model_stats_size(), 1);
  EXPECT_EQ(by_version.model_stats(0).inference_count(), v1.inference_count());
  inference::ModelStatisticsResponse every;
  ASSERT_TRUE(Statistics("", "", &every).ok());
  EXPECT_EQ(every.model_stats_size(), 1);

  // /metrics: both histograms time every answered request; nothing waits.
  absl::StatusOr<std::string> metrics = daemon_->ScrapeMetrics();
  ASSERT_OK(metrics);
  for (const char* name : {"mantissa_inference_queue_duration_seconds_count",
                           "mantissa_inference_compute_duration_seconds_count"}) {
    EXPECT_EQ(testing::FindSample(*metrics, name, {"model=\"m\""}), static_cast<double>(ok.load()))
        << name;
  }
  EXPECT_EQ(testing::FindSample(*metrics, "mantissa_inference_queue_depth", {"model=\"m\""}), 0);
  EXPECT_EQ(testing::FindSample(*metrics, "mantissa_inference_batch_size_count", {"model=\"m\""}),
            static_cast<double>(v1.execution_count()));
}

TEST_F(ServingStatisticsTest, UnknownModelsAndVersionsAreNotFound) {
  inference::ServerMetadataResponse server;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(client_->inference()
                    .ServerMetadata(&context, inference::ServerMetadataRequest(), &server)
                    .ok());
  }
  EXPECT_THAT(server.extensions(), Contains("statistics"));

  inference::ModelStatisticsResponse response;
  EXPECT_THAT(Statistics("nope", "", &response),
              GrpcStatusIs(grpc::StatusCode::NOT_FOUND, HasSubstr("nope")));
  const std::string job = Train(testing::SyntheticMlpSpec(10));
  ASSERT_FALSE(job.empty());
  Export(job, "m", "32-true");
  ASSERT_FALSE(HasFailure());
  EXPECT_THAT(Statistics("m", "7", &response),
              GrpcStatusIs(grpc::StatusCode::NOT_FOUND, HasSubstr("7")));
}

}  // namespace
}  // namespace mantissa
