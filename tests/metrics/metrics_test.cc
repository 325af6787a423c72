#include "server/metrics/metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "prometheus/text_serializer.h"

namespace mantissa {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string Text(const Metrics& metrics) {
  prometheus::TextSerializer serializer;
  return serializer.Serialize(metrics.registry()->Collect());
}

// The series line of `name` with exactly `labels`, followed by a space, so
// that job "j1" does not match job "j10".
std::string Series(const std::string& name, const std::string& labels) {
  return absl::StrCat(name, "{", labels, "} ");
}

std::string StepsSeries(const std::string& job) {
  return Series("mantissa_train_steps_total",
                absl::StrCat("job=\"", job, "\",model=\"mlp\",precision=\"32-true\""));
}

TEST(MetricsTest, GaugesStartAtZero) {
  Metrics metrics;
  const std::string text = Text(metrics);
  EXPECT_THAT(text, HasSubstr("# TYPE mantissa_jobs_running gauge\n"));
  EXPECT_THAT(text, HasSubstr("\nmantissa_jobs_running 0\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE mantissa_jobs_queued gauge\n"));
  EXPECT_THAT(text, HasSubstr("\nmantissa_jobs_queued 0\n"));
}

TEST(MetricsTest, GaugesReportLastValue) {
  Metrics metrics;
  metrics.SetJobsRunning(5);
  metrics.SetJobsQueued(7);
  metrics.SetJobsRunning(2);
  const std::string text = Text(metrics);
  EXPECT_THAT(text, HasSubstr("\nmantissa_jobs_running 2\n"));
  EXPECT_THAT(text, HasSubstr("\nmantissa_jobs_queued 7\n"));
}

TEST(MetricsTest, NoJobCountersBeforeTheFirstJob) {
  Metrics metrics;
  const std::string text = Text(metrics);
  EXPECT_THAT(text, Not(HasSubstr("mantissa_jobs_submitted_total{")));
  EXPECT_THAT(text, Not(HasSubstr("mantissa_jobs_finished_total{")));
  EXPECT_THAT(text, Not(HasSubstr("mantissa_train_steps_total{")));
}

TEST(MetricsTest, JobSubmittedCountsByPrecision) {
  Metrics metrics;
  metrics.JobSubmitted("32-true");
  metrics.JobSubmitted("bf16-mixed");
  metrics.JobSubmitted("32-true");
  const std::string text = Text(metrics);
  EXPECT_THAT(text, HasSubstr("# TYPE mantissa_jobs_submitted_total counter\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_jobs_submitted_total{precision=\"32-true\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_jobs_submitted_total{precision=\"bf16-mixed\"} 1\n"));
}

TEST(MetricsTest, JobFinishedCountsByStateAndPrecision) {
  Metrics metrics;
  metrics.JobFinished("SUCCEEDED", "32-true");
  metrics.JobFinished("SUCCEEDED", "32-true");
  metrics.JobFinished("FAILED", "32-true");
  metrics.JobFinished("SUCCEEDED", "bf16-mixed");
  const std::string text = Text(metrics);
  EXPECT_THAT(text, HasSubstr("# TYPE mantissa_jobs_finished_total counter\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_jobs_finished_total{precision=\"32-true\","
                              "state=\"SUCCEEDED\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_jobs_finished_total{precision=\"32-true\","
                              "state=\"FAILED\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_jobs_finished_total{precision=\"bf16-mixed\","
                              "state=\"SUCCEEDED\"} 1\n"));
  EXPECT_THAT(text, Not(HasSubstr("state=\"CANCELLED\"")));
}

TEST(MetricsTest, StartJobCreatesLabelledSeries) {
  Metrics metrics;
  std::shared_ptr<JobMetrics> job = metrics.StartJob("job1", "mlp", "bf16-mixed");
  ASSERT_NE(job, nullptr);
  job->ObserveStep(0.003);
  job->ObserveStep(0.004);
  job->SetLoss(0.5);
  job->SetItemsPerSecond(1024);

  const std::string text = Text(metrics);
  EXPECT_THAT(text, HasSubstr("# TYPE mantissa_train_steps_total counter\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_train_steps_total{job=\"job1\",model=\"mlp\","
                              "precision=\"bf16-mixed\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE mantissa_train_loss gauge\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_train_loss{job=\"job1\"} 0.5\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE mantissa_train_items_per_second gauge\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_train_items_per_second{job=\"job1\"} 1024\n"));
}

TEST(MetricsTest, JobGaugesAppearOnlyOnceMeasured) {
  Metrics metrics;
  std::shared_ptr<JobMetrics> job = metrics.StartJob("job1", "mlp", "32-true");
  std::string text = Text(metrics);
  // The counters exist at 0 from the start, so rate() sees the first increase.
  EXPECT_THAT(text, HasSubstr(StepsSeries("job1") + "0\n"));
  EXPECT_THAT(text, HasSubstr(Series("mantissa_grad_scaler_skipped_steps_total",
                                     "job=\"job1\",model=\"mlp\",precision=\"32-true\"") +
                              "0\n"));
  // No gauge reads 0 before it was measured: a scale of 0 would look like a
  // collapsed scaler, a savings ratio of 0 like a measured one.
  for (const char* name :
       {"mantissa_train_loss{", "mantissa_train_items_per_second{", "mantissa_train_grad_norm{",
        "mantissa_grad_scaler_scale{", "mantissa_memory_peak_bytes{",
        "mantissa_memory_fp32_baseline_peak_bytes{", "mantissa_memory_savings_ratio{"}) {
    EXPECT_THAT(text, Not(HasSubstr(name))) << name;
  }

  // A job without a baseline reports its peak only.
  job->SetMemory(4096, 0, 0);
  text = Text(metrics);
  EXPECT_THAT(text,
              HasSubstr(Series("mantissa_memory_peak_bytes", "job=\"job1\",precision=\"32-true\"") +
                        "4096\n"));
  EXPECT_THAT(text, Not(HasSubstr("mantissa_memory_fp32_baseline_peak_bytes{")));
  EXPECT_THAT(text, Not(HasSubstr("mantissa_memory_savings_ratio{")));
  EXPECT_THAT(text, Not(HasSubstr("mantissa_grad_scaler_scale{")));

  job->SetMemory(2048, 8192, 0.75);
  job->SetGradScaler(3, 8192);
  text = Text(metrics);
  EXPECT_THAT(text, HasSubstr(Series("mantissa_memory_fp32_baseline_peak_bytes", "job=\"job1\"") +
                              "8192\n"));
  EXPECT_THAT(text, HasSubstr(Series("mantissa_memory_savings_ratio",
                                     "job=\"job1\",precision=\"32-true\"") +
                              "0.75\n"));
  EXPECT_THAT(text, HasSubstr(Series("mantissa_grad_scaler_scale", "job=\"job1\"") + "8192\n"));
  EXPECT_THAT(text, HasSubstr(Series("mantissa_grad_scaler_skipped_steps_total",
                                     "job=\"job1\",model=\"mlp\",precision=\"32-true\"") +
                              "3\n"));
}

TEST(MetricsTest, RetiringRemovesEveryGaugeThatWasSet) {
  Metrics metrics(Metrics::Options{/*max_finished_jobs=*/0});
  std::shared_ptr<JobMetrics> job = metrics.StartJob("gone", "mlp", "32-true");
  job->SetLoss(1);
  job->SetItemsPerSecond(2);
  job->SetGradScaler(1, 4);
  job->SetMemory(5, 6, 0.5);
  job->SetGradNorm(7);
  ASSERT_THAT(Text(metrics), HasSubstr(Series("mantissa_train_grad_norm", "job=\"gone\"") + "7\n"));
  metrics.RetireJob("gone");
  EXPECT_THAT(Text(metrics), Not(HasSubstr("job=\"gone\"")));
}

// The gauge holds the interval's largest norm as the last report gave it: a
// later, smaller interval replaces a spike (the alert compares it with the
// median of its own history), and it carries the worker label like the rest.
TEST(MetricsTest, GradNormGaugeFollowsTheLastReport) {
  Metrics::Options options;
  options.worker = "w1";
  Metrics metrics(options);
  std::shared_ptr<JobMetrics> job = metrics.StartJob("job1", "mlp", "bf16-mixed");
  std::shared_ptr<JobMetrics> other = metrics.StartJob("job2", "mlp", "bf16-mixed");
  job->SetGradNorm(1.5);
  std::string text = Text(metrics);
  EXPECT_THAT(text, HasSubstr("# TYPE mantissa_train_grad_norm gauge\n"));
  EXPECT_THAT(
      text, HasSubstr(Series("mantissa_train_grad_norm", "worker=\"w1\",job=\"job1\"") + "1.5\n"));
  EXPECT_THAT(text, Not(HasSubstr("mantissa_train_grad_norm{worker=\"w1\",job=\"job2\"}")));

  job->SetGradNorm(4096);
  job->SetGradNorm(0.25);
  other->SetGradNorm(3);
  text = Text(metrics);
  EXPECT_THAT(
      text, HasSubstr(Series("mantissa_train_grad_norm", "worker=\"w1\",job=\"job1\"") + "0.25\n"));
  EXPECT_THAT(text,
              HasSubstr(Series("mantissa_train_grad_norm", "worker=\"w1\",job=\"job2\"") + "3\n"));
}

TEST(MetricsTest, NoDeviceMemoryWithoutAReader) {
  Metrics metrics;
  metrics.RefreshDeviceMemory();
  EXPECT_THAT(Text(metrics), Not(HasSubstr("mantissa_device_memory_used_bytes{")));
}

TEST(MetricsTest, DeviceMemoryIsReadAtEachRefresh) {
  Metrics metrics;
  int64_t used = 100;
  metrics.SetDeviceMemoryReader("cpu", [&used]() -> absl::StatusOr<DeviceMemory> {
    return DeviceMemory{used, 1000};
  });
  metrics.SetDeviceMemoryReader("cuda:0", []() -> absl::StatusOr<DeviceMemory> {
    return DeviceMemory{7, 80};
  });
  // Nothing is read until a refresh (a scrape) asks.
  EXPECT_THAT(Text(metrics), Not(HasSubstr("mantissa_device_memory_used_bytes{")));

  metrics.RefreshDeviceMemory();
  std::string text = Text(metrics);
  EXPECT_THAT(text, HasSubstr("# TYPE mantissa_device_memory_used_bytes gauge\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_device_memory_used_bytes{device=\"cpu\"} 100\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_device_memory_total_bytes{device=\"cpu\"} 1000\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_device_memory_used_bytes{device=\"cuda:0\"} 7\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_device_memory_total_bytes{device=\"cuda:0\"} 80\n"));

  used = 300;
  metrics.RefreshDeviceMemory();
  EXPECT_THAT(Text(metrics), HasSubstr("mantissa_device_memory_used_bytes{device=\"cpu\"} 300\n"));
}

TEST(MetricsTest, FailingDeviceReaderDropsItsGaugesUntilItRecovers) {
  Metrics metrics;
  bool fail = false;
  metrics.SetDeviceMemoryReader("cuda:0", [&fail]() -> absl::StatusOr<DeviceMemory> {
    if (fail) return absl::UnavailableError("driver gone");
    return DeviceMemory{1, 2};
  });
  metrics.RefreshDeviceMemory();
  EXPECT_THAT(Text(metrics), HasSubstr("mantissa_device_memory_used_bytes{device=\"cuda:0\"} 1"));

  fail = true;
  metrics.RefreshDeviceMemory();
  std::string text = Text(metrics);
  EXPECT_THAT(text, Not(HasSubstr("mantissa_device_memory_used_bytes{")));
  EXPECT_THAT(text, Not(HasSubstr("mantissa_device_memory_total_bytes{")));

  fail = false;
  metrics.RefreshDeviceMemory();
  EXPECT_THAT(Text(metrics),
              HasSubstr("mantissa_device_memory_total_bytes{device=\"cuda:0\"} 2\n"));
}

TEST(MetricsTest, SettingAReaderAgainReplacesIt) {
  Metrics metrics;
  metrics.SetDeviceMemoryReader("cpu", []() -> absl::StatusOr<DeviceMemory> {
    return DeviceMemory{1, 10};
  });
  metrics.SetDeviceMemoryReader("cpu", []() -> absl::StatusOr<DeviceMemory> {
    return DeviceMemory{2, 20};
  });
  metrics.RefreshDeviceMemory();
  const std::string text = Text(metrics);
  EXPECT_THAT(text, HasSubstr("mantissa_device_memory_used_bytes{device=\"cpu\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_device_memory_total_bytes{device=\"cpu\"} 20\n"));
}

TEST(MetricsTest, StepDurationHistogramIsByPrecision) {
  Metrics metrics;
  std::shared_ptr<JobMetrics> job = metrics.StartJob("job1", "mlp", "bf16-mixed");
  job->ObserveStep(0.003);
  job->ObserveStep(0.004);
  job->ObserveStep(20.0);

  const std::string text = Text(metrics);
  EXPECT_THAT(text, HasSubstr("# TYPE mantissa_train_step_duration_seconds histogram\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_train_step_duration_seconds_count{"
                              "precision=\"bf16-mixed\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_train_step_duration_seconds_bucket{"
                              "precision=\"bf16-mixed\",le=\"0.0025\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_train_step_duration_seconds_bucket{"
                              "precision=\"bf16-mixed\",le=\"0.005\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_train_step_duration_seconds_bucket{"
                              "precision=\"bf16-mixed\",le=\"10\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_train_step_duration_seconds_bucket{"
                              "precision=\"bf16-mixed\",le=\"+Inf\"} 3\n"));
  // The histogram has no job label.
  EXPECT_THAT(text, Not(HasSubstr("mantissa_train_step_duration_seconds_count{job=")));
}

TEST(MetricsTest, JobsOfOnePrecisionShareTheHistogram) {
  Metrics metrics;
  std::shared_ptr<JobMetrics> a = metrics.StartJob("a", "mlp", "32-true");
  std::shared_ptr<JobMetrics> b = metrics.StartJob("b", "mlp", "32-true");
  std::shared_ptr<JobMetrics> c = metrics.StartJob("c", "mlp", "bf16-mixed");
  a->ObserveStep(0.001);
  b->ObserveStep(0.001);
  b->ObserveStep(0.001);
  c->ObserveStep(0.001);

  const std::string text = Text(metrics);
  EXPECT_THAT(text, HasSubstr("mantissa_train_step_duration_seconds_count{"
                              "precision=\"32-true\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_train_step_duration_seconds_count{"
                              "precision=\"bf16-mixed\"} 1\n"));
  EXPECT_THAT(text, HasSubstr(StepsSeries("a") + "1\n"));
  EXPECT_THAT(text, HasSubstr(StepsSeries("b") + "2\n"));
}

TEST(MetricsTest, StartJobTwiceReturnsTheSameSeries) {
  Metrics metrics;
  std::shared_ptr<JobMetrics> first = metrics.StartJob("job1", "mlp", "32-true");
  std::shared_ptr<JobMetrics> second = metrics.StartJob("job1", "mlp", "32-true");
  EXPECT_EQ(first, second);
  first->ObserveStep(0.001);
  second->ObserveStep(0.001);
  EXPECT_THAT(Text(metrics), HasSubstr(StepsSeries("job1") + "2\n"));
}

TEST(MetricsTest, RetireJobKeepsTheNewestFinishedJobs) {
  Metrics metrics(Metrics::Options{/*max_finished_jobs=*/2});
  for (const char* id : {"j1", "j2", "j3", "j4"}) metrics.StartJob(id, "mlp", "32-true");

  metrics.RetireJob("j1");
  metrics.RetireJob("j2");
  std::string text = Text(metrics);
  for (const char* id : {"j1", "j2", "j3", "j4"}) {
    EXPECT_THAT(text, HasSubstr(StepsSeries(id))) << id;
  }

  metrics.RetireJob("j3");
  text = Text(metrics);
  EXPECT_THAT(text, Not(HasSubstr(StepsSeries("j1"))));
  EXPECT_THAT(text, Not(HasSubstr("mantissa_train_loss{job=\"j1\"}")));
  EXPECT_THAT(text, Not(HasSubstr("mantissa_train_items_per_second{job=\"j1\"}")));
  EXPECT_THAT(text, HasSubstr(StepsSeries("j2")));
  EXPECT_THAT(text, HasSubstr(StepsSeries("j3")));
  EXPECT_THAT(text, HasSubstr(StepsSeries("j4")));

  metrics.RetireJob("j4");
  text = Text(metrics);
  EXPECT_THAT(text, Not(HasSubstr(StepsSeries("j2"))));
  EXPECT_THAT(text, HasSubstr(StepsSeries("j3")));
  EXPECT_THAT(text, HasSubstr(StepsSeries("j4")));
}

TEST(MetricsTest, RunningJobsSeriesAreNeverRemoved) {
  Metrics metrics(Metrics::Options{/*max_finished_jobs=*/1});
  std::shared_ptr<JobMetrics> running = metrics.StartJob("running", "mlp", "32-true");
  running->ObserveStep(0.001);
  running->SetLoss(0.25);
  for (int i = 0; i < 5; ++i) {
    const std::string id = absl::StrCat("done", i);
    metrics.StartJob(id, "mlp", "32-true")->ObserveStep(0.001);
    metrics.RetireJob(id);
  }
  running->ObserveStep(0.001);

  const std::string text = Text(metrics);
  EXPECT_THAT(text, HasSubstr(StepsSeries("running") + "2\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_train_loss{job=\"running\"}"));
  EXPECT_THAT(text, HasSubstr(StepsSeries("done4") + "1\n"));
  for (int i = 0; i < 4; ++i) {
    EXPECT_THAT(text, Not(HasSubstr(StepsSeries(absl::StrCat("done", i))))) << i;
  }
  // Retired series leave the shared histogram alone.
  EXPECT_THAT(text, HasSubstr("mantissa_train_step_duration_seconds_count{"
                              "precision=\"32-true\"} 7\n"));
}

TEST(MetricsTest, ZeroFinishedJobsRemovesSeriesAtRetirement) {
  Metrics metrics(Metrics::Options{/*max_finished_jobs=*/0});
  metrics.StartJob("running", "mlp", "32-true");
  metrics.StartJob("done", "mlp", "32-true");
  metrics.RetireJob("done");
  const std::string text = Text(metrics);
  EXPECT_THAT(text, HasSubstr(StepsSeries("running")));
  EXPECT_THAT(text, Not(HasSubstr(StepsSeries("done"))));
}

TEST(MetricsTest, RetiringAnUnknownJobChangesNothing) {
  Metrics metrics(Metrics::Options{/*max_finished_jobs=*/1});
  metrics.StartJob("a", "mlp", "32-true");
  metrics.RetireJob("a");
  metrics.RetireJob("never-started");
  EXPECT_THAT(Text(metrics), HasSubstr(StepsSeries("a")));
}

TEST(MetricsTest, DefaultKeepsFiftyFinishedJobs) {
  Metrics metrics;
  for (int i = 0; i < 51; ++i) {
    const std::string id = absl::StrCat("job", i);
    metrics.StartJob(id, "mlp", "32-true");
    metrics.RetireJob(id);
  }
  const std::string text = Text(metrics);
  EXPECT_THAT(text, Not(HasSubstr(StepsSeries("job0"))));
  EXPECT_THAT(text, HasSubstr(StepsSeries("job1")));
  EXPECT_THAT(text, HasSubstr(StepsSeries("job50")));
}

TEST(MetricsTest, ConcurrentJobsUpdateIndependently) {
  Metrics metrics;
  constexpr int kThreads = 4;
  constexpr int kSteps = 1000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&metrics, t] {
      std::shared_ptr<JobMetrics> job = metrics.StartJob(absl::StrCat("t", t), "mlp", "32-true");
      for (int i = 0; i < kSteps; ++i) job->ObserveStep(0.001);
    });
  }
  for (std::thread& thread : threads) thread.join();
  const std::string text = Text(metrics);
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_THAT(text, HasSubstr(absl::StrCat(StepsSeries(absl::StrCat("t", t)), kSteps, "\n")));
  }
  EXPECT_THAT(text, HasSubstr(absl::StrCat("mantissa_train_step_duration_seconds_count{"
                                           "precision=\"32-true\"} ",
                                           kThreads * kSteps, "\n")));
}

TEST(MetricsTest, NoInferenceSeriesBeforeTheFirstModel) {
  Metrics metrics;
  const std::string text = Text(metrics);
  EXPECT_THAT(text, Not(HasSubstr("mantissa_inference_requests_total")));
  EXPECT_THAT(text, Not(HasSubstr("mantissa_inference_batch_size_count{")));
  EXPECT_THAT(text, Not(HasSubstr("mantissa_model_cast_max_abs_diff{")));
}

TEST(MetricsTest, ModelInferenceCountsRequestsByStatus) {
  Metrics metrics;
  std::shared_ptr<InferenceMetrics> model = metrics.ModelInference("m1");
  // The OK series exists before the first request.
  std::string text = Text(metrics);
  EXPECT_THAT(text, HasSubstr("# TYPE mantissa_inference_requests_total counter\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_inference_requests_total{model=\"m1\",status=\"OK\"} 0\n"));
  model->ObserveRequest("OK", 0.0003);
  model->ObserveRequest("OK", 0.002);
  model->ObserveRequest("INVALID_ARGUMENT", 0.00001);

  text = Text(metrics);
  EXPECT_THAT(text, HasSubstr("mantissa_inference_requests_total{model=\"m1\",status=\"OK\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_inference_requests_total{model=\"m1\","
                              "status=\"INVALID_ARGUMENT\"} 1\n"));
  // Only answered requests time the latency histogram.
  EXPECT_THAT(text, HasSubstr("# TYPE mantissa_inference_request_duration_seconds histogram\n"));
  EXPECT_THAT(text,
              HasSubstr("mantissa_inference_request_duration_seconds_count{model=\"m1\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_inference_request_duration_seconds_bucket{model=\"m1\","
                              "le=\"0.0005\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_inference_request_duration_seconds_bucket{model=\"m1\","
                              "le=\"0.0025\"} 2\n"));
}

TEST(MetricsTest, ModelInferenceIsOneObjectPerModel) {
  Metrics metrics;
  std::shared_ptr<InferenceMetrics> a = metrics.ModelInference("a");
  EXPECT_EQ(a, metrics.ModelInference("a"));
  std::shared_ptr<InferenceMetrics> b = metrics.ModelInference("b");
  EXPECT_NE(a, b);
  a->ObserveRequest("OK", 0.001);
  b->ObserveRequest("NOT_FOUND", 0.001);
  const std::string text = Text(metrics);
  EXPECT_THAT(text, HasSubstr("mantissa_inference_requests_total{model=\"a\",status=\"OK\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_inference_requests_total{model=\"b\",status=\"OK\"} 0\n"));
  EXPECT_THAT(text, Not(HasSubstr("model=\"a\",status=\"NOT_FOUND\"")));
}

TEST(MetricsTest, BatchSizeHistogramHasPowerOfTwoBuckets) {
  Metrics metrics;
  std::shared_ptr<InferenceMetrics> model = metrics.ModelInference("m");
  for (int64_t n : {1, 3, 64, 100, 5000}) model->ObserveBatch(n);
  const std::string text = Text(metrics);
  EXPECT_THAT(text, HasSubstr("# TYPE mantissa_inference_batch_size histogram\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_inference_batch_size_count{model=\"m\"} 5\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_inference_batch_size_sum{model=\"m\"} 5168\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_inference_batch_size_bucket{model=\"m\",le=\"1\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_inference_batch_size_bucket{model=\"m\",le=\"2\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_inference_batch_size_bucket{model=\"m\",le=\"4\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_inference_batch_size_bucket{model=\"m\",le=\"64\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_inference_batch_size_bucket{model=\"m\",le=\"128\"} 4\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_inference_batch_size_bucket{model=\"m\",le=\"4096\"} 4\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_inference_batch_size_bucket{model=\"m\",le=\"+Inf\"} 5\n"));
}

TEST(MetricsTest, QueueDepthFollowsEveryBatcherOfTheModel) {
  Metrics metrics;
  std::shared_ptr<InferenceMetrics> model = metrics.ModelInference("m");
  // At 0 before any request, so an idle model reads as idle.
  std::string text = Text(metrics);
  EXPECT_THAT(text, HasSubstr("# TYPE mantissa_inference_queue_depth gauge\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_inference_queue_depth{model=\"m\"} 0\n"));
  // Two versions' batchers report into one gauge.
  model->Queued(+1);
  model->Queued(+1);
  metrics.ModelInference("m")->Queued(+1);
  text = Text(metrics);
  EXPECT_THAT(text, HasSubstr("mantissa_inference_queue_depth{model=\"m\"} 3\n"));
  model->Queued(-2);
  text = Text(metrics);
  EXPECT_THAT(text, HasSubstr("mantissa_inference_queue_depth{model=\"m\"} 1\n"));
  model->Queued(-1);
  text = Text(metrics);
  EXPECT_THAT(text, HasSubstr("mantissa_inference_queue_depth{model=\"m\"} 0\n"));
}

TEST(MetricsTest, TimingSplitsQueueAndComputeFrom10usTo10s) {
  Metrics metrics;
  std::shared_ptr<InferenceMetrics> model = metrics.ModelInference("m");
  model->ObserveTiming(0.000005, 0.0002);
  model->ObserveTiming(0.003, 0.0002);
  model->ObserveTiming(20, 0.00002);
  const std::string text = Text(metrics);
  EXPECT_THAT(text, HasSubstr("# TYPE mantissa_inference_queue_duration_seconds histogram\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE mantissa_inference_compute_duration_seconds histogram\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_inference_queue_duration_seconds_count{model=\"m\"} 3\n"));
  EXPECT_THAT(text,
              HasSubstr("mantissa_inference_compute_duration_seconds_count{model=\"m\"} 3\n"));
  const std::string queue = "mantissa_inference_queue_duration_seconds_bucket{model=\"m\",";
  EXPECT_THAT(text, HasSubstr(queue + "le=\"1e-05\"} 1\n"));
  EXPECT_THAT(text, HasSubstr(queue + "le=\"0.0025\"} 1\n"));
  EXPECT_THAT(text, HasSubstr(queue + "le=\"0.005\"} 2\n"));
  EXPECT_THAT(text, HasSubstr(queue + "le=\"10\"} 2\n"));
  EXPECT_THAT(text, HasSubstr(queue + "le=\"+Inf\"} 3\n"));
  const std::string compute = "mantissa_inference_compute_duration_seconds_bucket{model=\"m\",";
  EXPECT_THAT(text, HasSubstr(compute + "le=\"2.5e-05\"} 1\n"));
  EXPECT_THAT(text, HasSubstr(compute + "le=\"0.00025\"} 3\n"));
  // The whole-request histogram is ObserveRequest's alone.
  EXPECT_THAT(text,
              HasSubstr("mantissa_inference_request_duration_seconds_count{model=\"m\"} 0\n"));
}

TEST(MetricsTest, QueueSeriesCarryTheWorkerLabel) {
  Metrics::Options options;
  options.worker = "w1";
  Metrics metrics(options);
  metrics.ModelInference("m")->ObserveTiming(0.001, 0.001);
  const std::string text = Text(metrics);
  EXPECT_THAT(text, HasSubstr("mantissa_inference_queue_depth{worker=\"w1\",model=\"m\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_inference_queue_duration_seconds_count{worker=\"w1\","
                              "model=\"m\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("mantissa_inference_compute_duration_seconds_count{worker=\"w1\","
                              "model=\"m\"} 1\n"));
}

TEST(MetricsTest, CastValidationGaugesFollowTheLastLoad) {
  Metrics metrics;
  metrics.SetCastValidation("m", "bf16-true", 0.125, 0.01, 0.99);
  std::string text = Text(metrics);
  EXPECT_THAT(text, HasSubstr("# TYPE mantissa_model_cast_max_abs_diff gauge\n"));
  EXPECT_THAT(text, HasSubstr(Series("mantissa_model_cast_max_abs_diff",
                                     "model=\"m\",precision=\"bf16-true\"") +
                              "0.125\n"));
  EXPECT_THAT(text, HasSubstr(Series("mantissa_model_cast_mean_rel_diff",
                                     "model=\"m\",precision=\"bf16-true\"") +
                              "0.01\n"));
  EXPECT_THAT(text, HasSubstr(Series("mantissa_model_cast_top1_agreement",
                                     "model=\"m\",precision=\"bf16-true\"") +
                              "0.99\n"));

  // A reload in another precision replaces the series; no top-1 measured.
  metrics.SetCastValidation("m", "32-true", 0, 0, std::nullopt);
  text = Text(metrics);
  EXPECT_THAT(text, Not(HasSubstr("precision=\"bf16-true\"")));
  EXPECT_THAT(text, HasSubstr(Series("mantissa_model_cast_max_abs_diff",
                                     "model=\"m\",precision=\"32-true\"") +
                              "0\n"));
  EXPECT_THAT(text, Not(HasSubstr("mantissa_model_cast_top1_agreement{")));

  metrics.SetCastValidation("other", "bf16-true", 1, 1, 0.5);
  metrics.ClearCastValidation("m");
  metrics.ClearCastValidation("never-loaded");
  text = Text(metrics);
  EXPECT_THAT(text, Not(HasSubstr("model=\"m\"")));
  EXPECT_THAT(text, HasSubstr("mantissa_model_cast_top1_agreement{model=\"other\""));
}

}  // namespace
}  // namespace mantissa
