#ifndef MANTISSA_SERVER_METRICS_METRICS_H_
#define MANTISSA_SERVER_METRICS_METRICS_H_

#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace mantissa {

// The labelled series of one training job. Obtained from Metrics::StartJob;
// cheap to update from the training thread (atomic counters and gauges).
class JobMetrics {
 public:
  JobMetrics(prometheus::Counter& steps, prometheus::Gauge& loss,
             prometheus::Gauge& items_per_second, prometheus::Histogram& step_duration)
      : steps_(steps),
        loss_(loss),
        items_per_second_(items_per_second),
        step_duration_(step_duration) {}

  void ObserveStep(double seconds) {
    steps_.Increment();
    step_duration_.Observe(seconds);
  }
  void SetLoss(double loss) { loss_.Set(loss); }
  void SetItemsPerSecond(double v) { items_per_second_.Set(v); }

 private:
  prometheus::Counter& steps_;
  prometheus::Gauge& loss_;
  prometheus::Gauge& items_per_second_;
  prometheus::Histogram& step_duration_;  // shared by all jobs of a precision
};

// Every metric family of the daemon, declared once (as Triton core does);
// names are fixed by DESIGN.md because the dashboards query them. Thread-safe.
class Metrics {
 public:
  struct Options {
    // Series labelled by job are kept for this many finished jobs, so label
    // cardinality stays bounded on a long-running worker.
    int max_finished_jobs = 50;
  };

  explicit Metrics(Options options);
  Metrics() : Metrics(Options{}) {}

  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }

  void JobSubmitted(const std::string& precision);
  void JobFinished(const std::string& state, const std::string& precision);
  void SetJobsRunning(int n) { jobs_running_.Set(n); }
  void SetJobsQueued(int n) { jobs_queued_.Set(n); }

  // Creates the job's series. The returned object stays valid until
  // RetireJob has dropped the job, which happens only after it finished.
  std::shared_ptr<JobMetrics> StartJob(const std::string& job_id, const std::string& model,
                                       const std::string& precision);
  // Marks the job finished; the series of the oldest finished jobs beyond
  // max_finished_jobs are removed.
  void RetireJob(const std::string& job_id);

 private:
  struct JobSeries {
    prometheus::Counter* steps;
    prometheus::Gauge* loss;
    prometheus::Gauge* items_per_second;
    std::shared_ptr<JobMetrics> reporter;
  };
  void RemoveSeries(const JobSeries& series);

  const Options options_;
  std::shared_ptr<prometheus::Registry> registry_;

  prometheus::Family<prometheus::Counter>& jobs_submitted_;
  prometheus::Family<prometheus::Counter>& jobs_finished_;
  prometheus::Gauge& jobs_running_;
  prometheus::Gauge& jobs_queued_;
  prometheus::Family<prometheus::Counter>& train_steps_;
  prometheus::Family<prometheus::Gauge>& train_loss_;
  prometheus::Family<prometheus::Gauge>& train_items_per_second_;
  prometheus::Family<prometheus::Histogram>& step_duration_;

  std::mutex mu_;
  std::unordered_map<std::string, JobSeries> jobs_;  // guarded by mu_
  std::deque<std::string> finished_;                 // guarded by mu_
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_METRICS_METRICS_H_
