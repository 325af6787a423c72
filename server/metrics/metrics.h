#ifndef MANTISSA_SERVER_METRICS_METRICS_H_
#define MANTISSA_SERVER_METRICS_METRICS_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>

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
  struct Series {
    prometheus::Counter* steps;
    prometheus::Gauge* loss;
    prometheus::Gauge* items_per_second;
    prometheus::Histogram* step_duration;  // shared by all jobs of a precision
    prometheus::Counter* scaler_skipped;
    prometheus::Gauge* scaler_scale;
    prometheus::Gauge* memory_peak;
    prometheus::Gauge* memory_baseline;
    prometheus::Gauge* memory_savings;
  };

  explicit JobMetrics(Series series) : s_(series) {}

  void ObserveStep(double seconds) {
    s_.steps->Increment();
    s_.step_duration->Observe(seconds);
  }
  void SetLoss(double loss) { s_.loss->Set(loss); }
  void SetItemsPerSecond(double v) { s_.items_per_second->Set(v); }
  // `skipped_total` is the job's running total; the counter follows it.
  void SetGradScaler(int64_t skipped_total, double scale) {
    const double delta = static_cast<double>(skipped_total) - s_.scaler_skipped->Value();
    if (delta > 0) s_.scaler_skipped->Increment(delta);
    s_.scaler_scale->Set(scale);
  }
  // `baseline_bytes` 0 = not measured: baseline and savings stay unset.
  void SetMemory(int64_t peak_bytes, int64_t baseline_bytes, double savings_ratio) {
    s_.memory_peak->Set(static_cast<double>(peak_bytes));
    if (baseline_bytes > 0) {
      s_.memory_baseline->Set(static_cast<double>(baseline_bytes));
      s_.memory_savings->Set(savings_ratio);
    }
  }

 private:
  const Series s_;
};

// The labelled series of one served model (Triton's per-model reporter).
// Obtained from Metrics::ModelInference; cheap to update from the batcher
// and request threads. Valid as long as the Metrics object.
class InferenceMetrics {
 public:
  InferenceMetrics(std::string model, prometheus::Family<prometheus::Counter>& requests,
                   prometheus::Histogram& duration, prometheus::Histogram& batch_size)
      : model_(std::move(model)),
        requests_(requests),
        duration_(duration),
        batch_size_(batch_size) {}

  // One finished request: `status` is absl::StatusCodeToString of its
  // outcome ("OK", "INVALID_ARGUMENT", ...). The latency histogram counts
  // answered requests only (status "OK"), so refusals do not pull it down.
  void ObserveRequest(const std::string& status, double seconds) {
    requests_.Add({{"model", model_}, {"status", status}}).Increment();
    if (status == "OK") duration_.Observe(seconds);
  }
  // One forward of the model's batcher, with its merged item count.
  void ObserveBatch(int64_t items) { batch_size_.Observe(static_cast<double>(items)); }

 private:
  const std::string model_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Histogram& duration_;
  prometheus::Histogram& batch_size_;
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

  // The inference series of `model`; the same object for the same name.
  // Call it only for models in the repository: names come from users.
  std::shared_ptr<InferenceMetrics> ModelInference(const std::string& model);
  // What the last load's cast validation measured for `model`, replacing
  // the gauges of an earlier precision. `top1_agreement` unset: no gauge.
  void SetCastValidation(const std::string& model, const std::string& precision,
                         double max_abs_diff, double mean_rel_diff,
                         std::optional<double> top1_agreement);
  // Drops `model`'s validation gauges (its cast was refused or unloaded).
  void ClearCastValidation(const std::string& model);

 private:
  struct JobSeries {
    JobMetrics::Series series;
    std::shared_ptr<JobMetrics> reporter;
  };
  void RemoveSeries(const JobSeries& series);
  struct CastGauges {
    prometheus::Gauge* max_abs_diff = nullptr;
    prometheus::Gauge* mean_rel_diff = nullptr;
    prometheus::Gauge* top1_agreement = nullptr;  // null when not measured
  };
  void RemoveCastGauges(const CastGauges& gauges);

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
  prometheus::Family<prometheus::Counter>& scaler_skipped_;
  prometheus::Family<prometheus::Gauge>& scaler_scale_;
  prometheus::Family<prometheus::Gauge>& memory_peak_;
  prometheus::Family<prometheus::Gauge>& memory_baseline_;
  prometheus::Family<prometheus::Gauge>& memory_savings_;
  prometheus::Family<prometheus::Counter>& inference_requests_;
  prometheus::Family<prometheus::Histogram>& inference_duration_;
  prometheus::Family<prometheus::Histogram>& inference_batch_size_;
  prometheus::Family<prometheus::Gauge>& cast_max_abs_diff_;
  prometheus::Family<prometheus::Gauge>& cast_mean_rel_diff_;
  prometheus::Family<prometheus::Gauge>& cast_top1_agreement_;

  std::mutex mu_;
  std::unordered_map<std::string, JobSeries> jobs_;                            // guarded by mu_
  std::deque<std::string> finished_;                                           // guarded by mu_
  std::unordered_map<std::string, std::shared_ptr<InferenceMetrics>> models_;  // guarded by mu_
  std::unordered_map<std::string, CastGauges> casts_;                          // guarded by mu_
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_METRICS_METRICS_H_
