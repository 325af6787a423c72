#include "server/metrics/metrics.h"

#include <utility>

namespace mantissa {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

// From 100 us to 10 s: a small MLP step on CPU to a large model step.
prometheus::Histogram::BucketBoundaries StepBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
          0.05,   0.1,     0.25,   0.5,   1.0,    2.5,   5.0,  10.0};
}

}  // namespace

Metrics::Metrics(Options options)
    : options_(options),
      registry_(std::make_shared<prometheus::Registry>()),
      jobs_submitted_(BuildCounter()
                          .Name("mantissa_jobs_submitted_total")
                          .Help("Training jobs accepted by SubmitJob.")
                          .Register(*registry_)),
      jobs_finished_(BuildCounter()
                         .Name("mantissa_jobs_finished_total")
                         .Help("Training jobs that reached a terminal state.")
                         .Register(*registry_)),
      jobs_running_(BuildGauge()
                        .Name("mantissa_jobs_running")
                        .Help("Training jobs running now.")
                        .Register(*registry_)
                        .Add({})),
      jobs_queued_(BuildGauge()
                       .Name("mantissa_jobs_queued")
                       .Help("Training jobs waiting for a worker.")
                       .Register(*registry_)
                       .Add({})),
      train_steps_(BuildCounter()
                       .Name("mantissa_train_steps_total")
                       .Help("Optimizer steps taken, per job.")
                       .Register(*registry_)),
      train_loss_(BuildGauge()
                      .Name("mantissa_train_loss")
                      .Help("Mean training loss over the last progress interval.")
                      .Register(*registry_)),
      train_items_per_second_(BuildGauge()
                                  .Name("mantissa_train_items_per_second")
                                  .Help("Training throughput over the last progress interval.")
                                  .Register(*registry_)),
      step_duration_(BuildHistogram()
                         .Name("mantissa_train_step_duration_seconds")
                         .Help("Wall time of one training step, by precision.")
                         .Register(*registry_)) {}

void Metrics::JobSubmitted(const std::string& precision) {
  jobs_submitted_.Add({{"precision", precision}}).Increment();
}

void Metrics::JobFinished(const std::string& state, const std::string& precision) {
  jobs_finished_.Add({{"state", state}, {"precision", precision}}).Increment();
}

std::shared_ptr<JobMetrics> Metrics::StartJob(const std::string& job_id, const std::string& model,
                                              const std::string& precision) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job_id);
  if (it != jobs_.end()) return it->second.reporter;
  JobSeries series;
  series.steps = &train_steps_.Add({{"job", job_id}, {"model", model}, {"precision", precision}});
  series.loss = &train_loss_.Add({{"job", job_id}});
  series.items_per_second = &train_items_per_second_.Add({{"job", job_id}});
  auto& histogram = step_duration_.Add({{"precision", precision}}, StepBuckets());
  series.reporter = std::make_shared<JobMetrics>(*series.steps, *series.loss,
                                                 *series.items_per_second, histogram);
  auto reporter = series.reporter;
  jobs_.emplace(job_id, std::move(series));
  return reporter;
}

void Metrics::RetireJob(const std::string& job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (jobs_.count(job_id) == 0) return;
  finished_.push_back(job_id);
  while (static_cast<int>(finished_.size()) > options_.max_finished_jobs) {
    auto it = jobs_.find(finished_.front());
    finished_.pop_front();
    if (it == jobs_.end()) continue;
    RemoveSeries(it->second);
    jobs_.erase(it);
  }
}

void Metrics::RemoveSeries(const JobSeries& series) {
  train_steps_.Remove(series.steps);
  train_loss_.Remove(series.loss);
  train_items_per_second_.Remove(series.items_per_second);
}

}  // namespace mantissa
