#ifndef MANTISSA_SERVER_METRICS_METRICS_H_
#define MANTISSA_SERVER_METRICS_METRICS_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
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
#include "server/metrics/device_memory.h"

namespace mantissa {

// A gauge child that appears in /metrics only once it is first set, so that
// a job exports no figure it has not measured: no grad-scaler scale without a
// scaler, no savings ratio without a baseline, no loss before the first
// progress interval (a 0 there would read as a real value, and would fire the
// scale-collapse alert for every job without a scaler).
class LazyGauge {
 public:
  LazyGauge(prometheus::Family<prometheus::Gauge>& family, prometheus::Labels labels)
      : family_(family), labels_(std::move(labels)) {}
  LazyGauge(const LazyGauge&) = delete;
  LazyGauge& operator=(const LazyGauge&) = delete;

  void Set(double value);
  // Drops the child if it was ever set. Not concurrent with Set.
  void Remove();

 private:
  prometheus::Family<prometheus::Gauge>& family_;
  const prometheus::Labels labels_;
  std::atomic<prometheus::Gauge*> gauge_{nullptr};
};

// The families of the per-job series; owned by Metrics.
struct JobFamilies {
  prometheus::Family<prometheus::Counter>& steps;
  prometheus::Family<prometheus::Gauge>& loss;
  prometheus::Family<prometheus::Gauge>& items_per_second;
  prometheus::Family<prometheus::Gauge>& grad_norm;
  prometheus::Family<prometheus::Histogram>& step_duration;
  prometheus::Family<prometheus::Counter>& scaler_skipped;
  prometheus::Family<prometheus::Gauge>& scaler_scale;
  prometheus::Family<prometheus::Gauge>& memory_peak;
  prometheus::Family<prometheus::Gauge>& memory_baseline;
  prometheus::Family<prometheus::Gauge>& memory_savings;
};

// The labelled series of one training job. Obtained from Metrics::StartJob;
// cheap to update from the training thread (atomic counters and gauges).
// The counters exist from the start (at 0, so that rate() sees the first
// increase); the gauges appear when first set.
class JobMetrics {
 public:
  JobMetrics(const JobFamilies& families, const std::string& job_id, const std::string& model,
             const std::string& precision);
  JobMetrics(const JobMetrics&) = delete;
  JobMetrics& operator=(const JobMetrics&) = delete;

  void ObserveStep(double seconds) {
    steps_.Increment();
    step_duration_.Observe(seconds);
  }
  void SetLoss(double loss) { loss_.Set(loss); }
  void SetItemsPerSecond(double v) { items_per_second_.Set(v); }
  // The largest finite unscaled gradient norm of the progress interval.
  void SetGradNorm(double norm) { grad_norm_.Set(norm); }
  // `skipped_total` is the job's running total; the counter follows it.
  // Called only for jobs whose grad scaler is on.
  void SetGradScaler(int64_t skipped_total, double scale) {
    const double delta = static_cast<double>(skipped_total) - scaler_skipped_.Value();
    if (delta > 0) scaler_skipped_.Increment(delta);
    scaler_scale_.Set(scale);
  }
  // `baseline_bytes` 0 = not measured: baseline and savings stay unset.
  void SetMemory(int64_t peak_bytes, int64_t baseline_bytes, double savings_ratio) {
    memory_peak_.Set(static_cast<double>(peak_bytes));
    if (baseline_bytes > 0) {
      memory_baseline_.Set(static_cast<double>(baseline_bytes));
      memory_savings_.Set(savings_ratio);
    }
  }

  // Drops every series of the job except the shared histogram (Metrics
  // does it when the job is retired).
  void RemoveSeries();

 private:
  const JobFamilies& families_;
  prometheus::Counter& steps_;
  prometheus::Histogram& step_duration_;  // shared by all jobs of a precision
  prometheus::Counter& scaler_skipped_;
  LazyGauge loss_;
  LazyGauge items_per_second_;
  LazyGauge grad_norm_;
  LazyGauge scaler_scale_;
  LazyGauge memory_peak_;
  LazyGauge memory_baseline_;
  LazyGauge memory_savings_;
};

// The labelled series of one served model (Triton's per-model reporter).
// Obtained from Metrics::ModelInference; cheap to update from the batcher
// and request threads. Valid as long as the Metrics object.
class InferenceMetrics {
 public:
  // The model's children of the inference families (owned by Metrics).
  struct Series {
    prometheus::Family<prometheus::Counter>& requests;
    prometheus::Histogram& duration;
    prometheus::Histogram& batch_size;
    prometheus::Gauge& queue_depth;
    prometheus::Histogram& queue_duration;
    prometheus::Histogram& compute_duration;
  };

  InferenceMetrics(std::string model, const Series& series)
      : model_(std::move(model)), series_(series) {}

  // One finished request: `status` is absl::StatusCodeToString of its
  // outcome ("OK", "INVALID_ARGUMENT", ...). The latency histogram counts
  // answered requests only (status "OK"), so refusals do not pull it down.
  void ObserveRequest(const std::string& status, double seconds) {
    series_.requests.Add({{"model", model_}, {"status", status}}).Increment();
    if (status == "OK") series_.duration.Observe(seconds);
  }
  // One forward of the model's batcher, with its merged item count.
  void ObserveBatch(int64_t items) { series_.batch_size.Observe(static_cast<double>(items)); }
  // Requests entering (+n) or leaving (-n) a batcher queue of the model;
  // the gauge sums every version's batcher.
  void Queued(int64_t delta) { series_.queue_depth.Increment(static_cast<double>(delta)); }
  // Where one answered request spent its time: waiting in the batcher
  // queue, and in the forward of the batch that held it.
  void ObserveTiming(double queue_seconds, double compute_seconds) {
    series_.queue_duration.Observe(queue_seconds);
    series_.compute_duration.Observe(compute_seconds);
  }

 private:
  const std::string model_;
  const Series series_;
};

// Every metric family of the daemon, declared once (as Triton core does);
// names are fixed by DESIGN.md because the dashboards query them. Thread-safe.
class Metrics {
 public:
  struct Options {
    // Series labelled by job are kept for this many finished jobs, so label
    // cardinality stays bounded on a long-running worker.
    int max_finished_jobs = 50;
    // A constant `worker` label on every series (--worker_id); empty: none.
    std::string worker;
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

  // Reports `device`'s memory ("cpu", "cuda:0") from `reader` at each
  // RefreshDeviceMemory, replacing an earlier reader of that device. main
  // sets the CPU reader (ReadProcessMemory); this is the seam for a CUDA
  // runner to add its GPUs.
  void SetDeviceMemoryReader(const std::string& device, DeviceMemoryReader reader);
  // Runs every reader and sets mantissa_device_memory_{used,total}_bytes.
  // A reader that fails drops its device's gauges until it succeeds again,
  // so that no stale figure shows. Called before each scrape.
  void RefreshDeviceMemory();

 private:
  // One model's validation series, labelled with the precision it was cast to.
  struct CastGauges {
    CastGauges(Metrics& metrics, const prometheus::Labels& labels)
        : max_abs_diff(metrics.cast_max_abs_diff_, labels),
          mean_rel_diff(metrics.cast_mean_rel_diff_, labels),
          top1_agreement(metrics.cast_top1_agreement_, labels) {}
    void Remove() {
      max_abs_diff.Remove();
      mean_rel_diff.Remove();
      top1_agreement.Remove();
    }
    LazyGauge max_abs_diff;
    LazyGauge mean_rel_diff;
    LazyGauge top1_agreement;  // never set when not measured
  };

  const Options options_;
  std::shared_ptr<prometheus::Registry> registry_;

  prometheus::Family<prometheus::Counter>& jobs_submitted_;
  prometheus::Family<prometheus::Counter>& jobs_finished_;
  prometheus::Gauge& jobs_running_;
  prometheus::Gauge& jobs_queued_;
  prometheus::Family<prometheus::Counter>& train_steps_;
  prometheus::Family<prometheus::Gauge>& train_loss_;
  prometheus::Family<prometheus::Gauge>& train_items_per_second_;
  prometheus::Family<prometheus::Gauge>& train_grad_norm_;
  prometheus::Family<prometheus::Histogram>& step_duration_;
  prometheus::Family<prometheus::Counter>& scaler_skipped_;
  prometheus::Family<prometheus::Gauge>& scaler_scale_;
  prometheus::Family<prometheus::Gauge>& memory_peak_;
  prometheus::Family<prometheus::Gauge>& memory_baseline_;
  prometheus::Family<prometheus::Gauge>& memory_savings_;
  prometheus::Family<prometheus::Counter>& inference_requests_;
  prometheus::Family<prometheus::Histogram>& inference_duration_;
  prometheus::Family<prometheus::Histogram>& inference_batch_size_;
  prometheus::Family<prometheus::Gauge>& inference_queue_depth_;
  prometheus::Family<prometheus::Histogram>& inference_queue_duration_;
  prometheus::Family<prometheus::Histogram>& inference_compute_duration_;
  prometheus::Family<prometheus::Gauge>& cast_max_abs_diff_;
  prometheus::Family<prometheus::Gauge>& cast_mean_rel_diff_;
  prometheus::Family<prometheus::Gauge>& cast_top1_agreement_;
  prometheus::Family<prometheus::Gauge>& device_memory_used_;
  prometheus::Family<prometheus::Gauge>& device_memory_total_;
  const JobFamilies job_families_;

  std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<JobMetrics>> jobs_;          // guarded by mu_
  std::deque<std::string> finished_;                                           // guarded by mu_
  std::unordered_map<std::string, std::shared_ptr<InferenceMetrics>> models_;  // guarded by mu_
  std::unordered_map<std::string, std::unique_ptr<CastGauges>> casts_;         // guarded by mu_

  struct DeviceGauges {
    DeviceGauges(Metrics& metrics, const std::string& device)
        : used(metrics.device_memory_used_, {{"device", device}}),
          total(metrics.device_memory_total_, {{"device", device}}) {}
    DeviceMemoryReader reader;
    LazyGauge used;  // removed while the reader fails
    LazyGauge total;
  };
  // Its own lock: readers do I/O at scrape time, which must not hold up jobs.
  std::mutex device_mu_;
  // Node-based: LazyGauge does not move.
  std::map<std::string, DeviceGauges> devices_;  // guarded by device_mu_
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_METRICS_METRICS_H_
