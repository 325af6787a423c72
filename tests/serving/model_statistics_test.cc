#include "server/serving/model_statistics.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "absl/time/clock.h"

namespace mantissa {
namespace {

RequestTiming Timing(int64_t items, int64_t total_us, int64_t queue_us, int64_t input_us,
                     int64_t infer_us, int64_t output_us) {
  RequestTiming t;
  t.items = items;
  t.total = absl::Microseconds(total_us);
  t.queue = absl::Microseconds(queue_us);
  t.compute_input = absl::Microseconds(input_us);
  t.compute_infer = absl::Microseconds(infer_us);
  t.compute_output = absl::Microseconds(output_us);
  return t;
}

inference::ModelStatisticsResponse Get(const ModelStatistics& stats, int64_t version) {
  inference::ModelStatisticsResponse response;
  stats.AppendTo(version, &response);
  return response;
}

TEST(ModelStatisticsTest, SuccessesSumCountsAndNanosecondsPerVersion) {
  ModelStatistics stats("mlp");
  const uint64_t before_ms = static_cast<uint64_t>(absl::ToUnixMillis(absl::Now()));
  stats.RecordSuccess(2, Timing(1, 100, 10, 5, 50, 7));
  stats.RecordSuccess(2, Timing(4, 300, 30, 15, 150, 21));
  const uint64_t after_ms = static_cast<uint64_t>(absl::ToUnixMillis(absl::Now()));

  const inference::ModelStatisticsResponse response = Get(stats, 2);
  ASSERT_EQ(response.model_stats_size(), 1);
  const inference::ModelStatistics& v2 = response.model_stats(0);
  EXPECT_EQ(v2.name(), "mlp");
  EXPECT_EQ(v2.version(), "2");
  EXPECT_EQ(v2.inference_count(), 5u);  // items, not requests
  EXPECT_EQ(v2.execution_count(), 0u);  // forwards come from RecordExecution
  EXPECT_GE(v2.last_inference(), before_ms);
  EXPECT_LE(v2.last_inference(), after_ms);
  const inference::InferStatistics& s = v2.inference_stats();
  EXPECT_EQ(s.success().count(), 2u);
  EXPECT_EQ(s.success().ns(), 400000u);
  EXPECT_EQ(s.queue().count(), 2u);
  EXPECT_EQ(s.queue().ns(), 40000u);
  EXPECT_EQ(s.compute_input().ns(), 20000u);
  EXPECT_EQ(s.compute_infer().ns(), 200000u);
  EXPECT_EQ(s.compute_output().count(), 2u);
  EXPECT_EQ(s.compute_output().ns(), 28000u);
  EXPECT_EQ(s.fail().count(), 0u);
}

TEST(ModelStatisticsTest, FailuresCountSeparatelyAndLeaveLastInference) {
  ModelStatistics stats("mlp");
  stats.RecordFailure(1, absl::Microseconds(3));
  stats.RecordFailure(1, absl::Microseconds(4));
  const inference::ModelStatistics v1 = Get(stats, 1).model_stats(0);
  EXPECT_EQ(v1.inference_stats().fail().count(), 2u);
  EXPECT_EQ(v1.inference_stats().fail().ns(), 7000u);
  EXPECT_EQ(v1.inference_stats().success().count(), 0u);
  EXPECT_EQ(v1.inference_count(), 0u);
  EXPECT_EQ(v1.last_inference(), 0u);  // no request answered
}

TEST(ModelStatisticsTest, ExecutionsGroupByBatchSizeAscending) {
  ModelStatistics stats("mlp");
  stats.RecordExecution(1, 16, absl::Microseconds(160));
  stats.RecordExecution(1, 1, absl::Microseconds(10));
  stats.RecordExecution(1, 4, absl::Microseconds(40));
  stats.RecordExecution(1, 16, absl::Microseconds(170));
  stats.RecordExecution(1, 2, absl::Microseconds(20));

  const inference::ModelStatistics v1 = Get(stats, 1).model_stats(0);
  EXPECT_EQ(v1.execution_count(), 5u);
  ASSERT_EQ(v1.batch_stats_size(), 4);
  std::vector<uint64_t> sizes;
  for (const auto& b : v1.batch_stats()) sizes.push_back(b.batch_size());
  EXPECT_EQ(sizes, (std::vector<uint64_t>{1, 2, 4, 16}));
  const inference::InferBatchStatistics& b16 = v1.batch_stats(3);
  EXPECT_EQ(b16.compute_infer().count(), 2u);
  EXPECT_EQ(b16.compute_infer().ns(), 330000u);
  EXPECT_EQ(b16.compute_input().count(), 2u);
  EXPECT_EQ(b16.compute_output().count(), 2u);
  EXPECT_EQ(v1.batch_stats(0).compute_infer().ns(), 10000u);
}

TEST(ModelStatisticsTest, VersionZeroListsEveryRecordedVersion) {
  ModelStatistics stats("mlp");
  EXPECT_EQ(Get(stats, 0).model_stats_size(), 0);  // nothing recorded yet
  stats.RecordSuccess(3, Timing(1, 1, 1, 1, 1, 1));
  stats.RecordExecution(1, 1, absl::Microseconds(1));

  const inference::ModelStatisticsResponse all = Get(stats, 0);
  ASSERT_EQ(all.model_stats_size(), 2);
  EXPECT_EQ(all.model_stats(0).version(), "1");
  EXPECT_EQ(all.model_stats(0).execution_count(), 1u);
  EXPECT_EQ(all.model_stats(1).version(), "3");
  EXPECT_EQ(all.model_stats(1).inference_count(), 1u);
  for (const auto& m : all.model_stats()) EXPECT_EQ(m.name(), "mlp");
}

TEST(ModelStatisticsTest, AnUnrecordedVersionReadsAsZeros) {
  ModelStatistics stats("mlp");
  stats.RecordSuccess(1, Timing(1, 1, 1, 1, 1, 1));
  const inference::ModelStatisticsResponse response = Get(stats, 7);
  ASSERT_EQ(response.model_stats_size(), 1);
  EXPECT_EQ(response.model_stats(0).name(), "mlp");
  EXPECT_EQ(response.model_stats(0).version(), "7");
  EXPECT_EQ(response.model_stats(0).inference_count(), 0u);
  EXPECT_FALSE(response.model_stats(0).has_inference_stats());
  // Reading did not create it.
  EXPECT_EQ(Get(stats, 0).model_stats_size(), 1);
}

TEST(ModelStatisticsTest, AppendToAddsAfterWhatTheResponseHolds) {
  ModelStatistics a("a");
  ModelStatistics b("b");
  a.RecordFailure(1, absl::Microseconds(1));
  b.RecordFailure(1, absl::Microseconds(1));
  inference::ModelStatisticsResponse response;
  a.AppendTo(0, &response);
  b.AppendTo(0, &response);
  ASSERT_EQ(response.model_stats_size(), 2);
  EXPECT_EQ(response.model_stats(0).name(), "a");
  EXPECT_EQ(response.model_stats(1).name(), "b");
}

TEST(ModelStatisticsTest, ConcurrentRecordsAllCount) {
  ModelStatistics stats("mlp");
  constexpr int kThreads = 8;
  constexpr int kEach = 1000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&stats, t] {
      for (int i = 0; i < kEach; ++i) {
        stats.RecordSuccess(1, Timing(2, 1, 1, 1, 1, 1));
        stats.RecordExecution(1, 1 + (t + i) % 5, absl::Nanoseconds(1));
        if (i % 10 == 0) stats.RecordFailure(1, absl::Nanoseconds(1));
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  const inference::ModelStatistics v1 = Get(stats, 1).model_stats(0);
  EXPECT_EQ(v1.inference_stats().success().count(), uint64_t{kThreads * kEach});
  EXPECT_EQ(v1.inference_count(), uint64_t{2 * kThreads * kEach});
  EXPECT_EQ(v1.inference_stats().fail().count(), uint64_t{kThreads * kEach / 10});
  EXPECT_EQ(v1.execution_count(), uint64_t{kThreads * kEach});
  ASSERT_EQ(v1.batch_stats_size(), 5);
  uint64_t executions = 0;
  for (const auto& b : v1.batch_stats()) executions += b.compute_infer().count();
  EXPECT_EQ(executions, v1.execution_count());
}

}  // namespace
}  // namespace mantissa
