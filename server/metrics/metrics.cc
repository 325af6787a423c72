#include "server/metrics/metrics.h"

#include <algorithm>
#include <map>
#include <string>
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

// From 50 us to 10 s: a small model's forward on the CPU to a large model
// behind a full queue.
prometheus::Histogram::BucketBoundaries RequestBuckets() {
  return {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
          0.05,    0.1,    0.25,    0.5,    1.0,   2.5,    5.0,   10.0};
}

// From 10 us to 10 s, for the two parts of a request: an empty queue or a
// tiny forward on the CPU, up to a backlog behind a large model.
prometheus::Histogram::BucketBoundaries StageBuckets() {
  return {0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
          0.025,   0.05,     0.1,     0.25,   0.5,     1.0,    2.5,   5.0,    10.0};
}

// Items per merged forward, up to the largest max_batch_size.
prometheus::Histogram::BucketBoundaries BatchSizeBuckets() {
  return {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096};
}

// Every series carries the worker that reports it, so a fleet's series do
// not collide; a lone daemon without --worker_id adds none.
std::map<std::string, std::string> WorkerLabel(const Metrics::Options& options) {
  if (options.worker.empty()) return {};
  return {{"worker", options.worker}};
}

}  // namespace

void LazyGauge::Set(double value) {
  prometheus::Gauge* gauge = gauge_.load(std::memory_order_acquire);
  if (gauge == nullptr) {
    // Add returns the existing child for the same labels, so a race between
    // two first Sets is harmless.
    gauge = &family_.Add(labels_);
    gauge_.store(gauge, std::memory_order_release);
  }
  gauge->Set(value);
}

void LazyGauge::Remove() {
  prometheus::Gauge* gauge = gauge_.exchange(nullptr);
  if (gauge != nullptr) family_.Remove(gauge);
}

JobMetrics::JobMetrics(const JobFamilies& families, const std::string& job_id,
                       const std::string& model, const std::string& precision)
    : families_(families),
      steps_(families.steps.Add({{"job", job_id}, {"model", model}, {"precision", precision}})),
      step_duration_(families.step_duration.Add({{"precision", precision}}, StepBuckets())),
      scaler_skipped_(families.scaler_skipped.Add(
          {{"job", job_id}, {"model", model}, {"precision", precision}})),
      loss_(families.loss, {{"job", job_id}}),
      items_per_second_(families.items_per_second, {{"job", job_id}}),
      grad_norm_(families.grad_norm, {{"job", job_id}}),
      scaler_scale_(families.scaler_scale, {{"job", job_id}}),
      memory_peak_(families.memory_peak, {{"job", job_id}, {"precision", precision}}),
      memory_baseline_(families.memory_baseline, {{"job", job_id}}),
      memory_savings_(families.memory_savings, {{"job", job_id}, {"precision", precision}}) {}

void JobMetrics::RemoveSeries() {
  families_.steps.Remove(&steps_);
  families_.scaler_skipped.Remove(&scaler_skipped_);
  loss_.Remove();
  items_per_second_.Remove();
  grad_norm_.Remove();
  scaler_scale_.Remove();
  memory_peak_.Remove();
  memory_baseline_.Remove();
  memory_savings_.Remove();
}

Metrics::Metrics(Options options)
    : options_(options),
      registry_(std::make_shared<prometheus::Registry>()),
      jobs_submitted_(BuildCounter()
                          .Name("mantissa_jobs_submitted_total")
                          .Help("Training jobs accepted by SubmitJob.")
                          .Labels(WorkerLabel(options))
                          .Register(*registry_)),
      jobs_finished_(BuildCounter()
                         .Name("mantissa_jobs_finished_total")
                         .Help("Training jobs that reached a terminal state.")
                         .Labels(WorkerLabel(options))
                         .Register(*registry_)),
      jobs_running_(BuildGauge()
                        .Name("mantissa_jobs_running")
                        .Help("Training jobs running now, on every worker of the job store.")
                        .Labels(WorkerLabel(options))
                        .Register(*registry_)
                        .Add({})),
      jobs_queued_(BuildGauge()
                       .Name("mantissa_jobs_queued")
                       .Help("Training jobs waiting for a worker, in the whole job store.")
                       .Labels(WorkerLabel(options))
                       .Register(*registry_)
                       .Add({})),
      train_steps_(BuildCounter()
                       .Name("mantissa_train_steps_total")
                       .Help("Optimizer steps taken, per job.")
                       .Labels(WorkerLabel(options))
                       .Register(*registry_)),
      train_loss_(BuildGauge()
                      .Name("mantissa_train_loss")
                      .Help("Mean training loss over the last progress interval.")
                      .Labels(WorkerLabel(options))
                      .Register(*registry_)),
      train_items_per_second_(BuildGauge()
                                  .Name("mantissa_train_items_per_second")
                                  .Help("Training throughput over the last progress interval.")
                                  .Labels(WorkerLabel(options))
                                  .Register(*registry_)),
      train_grad_norm_(BuildGauge()
                           .Name("mantissa_train_grad_norm")
                           .Help("Largest global L2 norm of the unscaled gradients over the last "
                                 "progress interval (steps with a non-finite norm left out).")
                           .Labels(WorkerLabel(options))
                           .Register(*registry_)),
      step_duration_(BuildHistogram()
                         .Name("mantissa_train_step_duration_seconds")
                         .Help("Wall time of one training step, by precision.")
                         .Labels(WorkerLabel(options))
                         .Register(*registry_)),
      scaler_skipped_(BuildCounter()
                          .Name("mantissa_grad_scaler_skipped_steps_total")
                          .Help("Optimizer steps the grad scaler skipped for inf/NaN gradients.")
                          .Labels(WorkerLabel(options))
                          .Register(*registry_)),
      scaler_scale_(BuildGauge()
                        .Name("mantissa_grad_scaler_scale")
                        .Help("The grad scaler's current loss scale.")
                        .Labels(WorkerLabel(options))
                        .Register(*registry_)),
      memory_peak_(BuildGauge()
                       .Name("mantissa_memory_peak_bytes")
                       .Help("Peak bytes allocated by the job's training steps (measured).")
                       .Labels(WorkerLabel(options))
                       .Register(*registry_)),
      memory_baseline_(BuildGauge()
                           .Name("mantissa_memory_fp32_baseline_peak_bytes")
                           .Help("Peak bytes of a 32-true run of the same model and batch.")
                           .Labels(WorkerLabel(options))
                           .Register(*registry_)),
      memory_savings_(BuildGauge()
                          .Name("mantissa_memory_savings_ratio")
                          .Help("1 - peak / fp32 baseline peak.")
                          .Labels(WorkerLabel(options))
                          .Register(*registry_)),
      inference_requests_(BuildCounter()
                              .Name("mantissa_inference_requests_total")
                              .Help("Inference requests to served models, by outcome.")
                              .Labels(WorkerLabel(options))
                              .Register(*registry_)),
      inference_duration_(BuildHistogram()
                              .Name("mantissa_inference_request_duration_seconds")
                              .Help("Time from receiving an inference request to its answer.")
                              .Labels(WorkerLabel(options))
                              .Register(*registry_)),
      inference_batch_size_(BuildHistogram()
                                .Name("mantissa_inference_batch_size")
                                .Help("Items per forward of a model's dynamic batcher.")
                                .Labels(WorkerLabel(options))
                                .Register(*registry_)),
      inference_queue_depth_(BuildGauge()
                                 .Name("mantissa_inference_queue_depth")
                                 .Help("Requests waiting in the dynamic batcher queues of a model.")
                                 .Labels(WorkerLabel(options))
                                 .Register(*registry_)),
      inference_queue_duration_(BuildHistogram()
                                    .Name("mantissa_inference_queue_duration_seconds")
                                    .Help("Time an answered request waited in the dynamic "
                                          "batcher's queue before its forward started.")
                                    .Labels(WorkerLabel(options))
                                    .Register(*registry_)),
      inference_compute_duration_(BuildHistogram()
                                      .Name("mantissa_inference_compute_duration_seconds")
                                      .Help("Time of the forward that answered a request, "
                                            "including splitting its outputs.")
                                      .Labels(WorkerLabel(options))
                                      .Register(*registry_)),
      cast_max_abs_diff_(BuildGauge()
                             .Name("mantissa_model_cast_max_abs_diff")
                             .Help("Max |cast - fp32| over the calibration outputs at load.")
                             .Labels(WorkerLabel(options))
                             .Register(*registry_)),
      cast_mean_rel_diff_(BuildGauge()
                              .Name("mantissa_model_cast_mean_rel_diff")
                              .Help("mean |cast - fp32| / mean |fp32| on the calibration batch.")
                              .Labels(WorkerLabel(options))
                              .Register(*registry_)),
      cast_top1_agreement_(BuildGauge()
                               .Name("mantissa_model_cast_top1_agreement")
                               .Help("Fraction of calibration argmax predictions the cast model "
                                     "shares with fp32.")
                               .Labels(WorkerLabel(options))
                               .Register(*registry_)),
      device_memory_used_(BuildGauge()
                              .Name("mantissa_device_memory_used_bytes")
                              .Help("Memory in use on the device: the process's resident set "
                                    "on cpu, the driver's used bytes on a GPU.")
                              .Labels(WorkerLabel(options))
                              .Register(*registry_)),
      device_memory_total_(BuildGauge()
                               .Name("mantissa_device_memory_total_bytes")
                               .Help("Memory the device has: MemTotal on cpu, the driver's "
                                     "total bytes on a GPU.")
                               .Labels(WorkerLabel(options))
                               .Register(*registry_)),
      job_families_{train_steps_,     train_loss_,     train_items_per_second_, train_grad_norm_,
                    step_duration_,   scaler_skipped_, scaler_scale_,           memory_peak_,
                    memory_baseline_, memory_savings_} {}

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
  if (it != jobs_.end()) {
    // A later attempt of a job this worker ran before: running again, its
    // series are no longer up for retirement.
    finished_.erase(std::remove(finished_.begin(), finished_.end(), job_id), finished_.end());
    return it->second;
  }
  auto reporter = std::make_shared<JobMetrics>(job_families_, job_id, model, precision);
  jobs_.emplace(job_id, reporter);
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
    it->second->RemoveSeries();
    jobs_.erase(it);
  }
}

std::shared_ptr<InferenceMetrics> Metrics::ModelInference(const std::string& model) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = models_.find(model);
  if (it != models_.end()) return it->second;
  // The OK series exists from the start, so a rate over it is defined
  // before the first request.
  inference_requests_.Add({{"model", model}, {"status", "OK"}});
  const prometheus::Labels labels{{"model", model}};
  // The depth exists from the start at 0, so a backlog alert sees an idle
  // model as idle rather than as missing.
  auto reporter = std::make_shared<InferenceMetrics>(
      model, InferenceMetrics::Series{inference_requests_,
                                      inference_duration_.Add(labels, RequestBuckets()),
                                      inference_batch_size_.Add(labels, BatchSizeBuckets()),
                                      inference_queue_depth_.Add(labels),
                                      inference_queue_duration_.Add(labels, StageBuckets()),
                                      inference_compute_duration_.Add(labels, StageBuckets())});
  models_.emplace(model, reporter);
  return reporter;
}

void Metrics::SetCastValidation(const std::string& model, const std::string& precision,
                                double max_abs_diff, double mean_rel_diff,
                                std::optional<double> top1_agreement) {
  std::lock_guard<std::mutex> lock(mu_);
  // A new cast may carry another precision label: drop the old series first.
  std::unique_ptr<CastGauges>& gauges = casts_[model];
  if (gauges != nullptr) gauges->Remove();
  gauges = std::make_unique<CastGauges>(
      *this, prometheus::Labels{{"model", model}, {"precision", precision}});
  gauges->max_abs_diff.Set(max_abs_diff);
  gauges->mean_rel_diff.Set(mean_rel_diff);
  if (top1_agreement.has_value()) gauges->top1_agreement.Set(*top1_agreement);
}

void Metrics::ClearCastValidation(const std::string& model) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = casts_.find(model);
  if (it == casts_.end()) return;
  it->second->Remove();
  casts_.erase(it);
}

void Metrics::SetDeviceMemoryReader(const std::string& device, DeviceMemoryReader reader) {
  std::lock_guard<std::mutex> lock(device_mu_);
  auto it = devices_.try_emplace(device, *this, device).first;
  it->second.reader = std::move(reader);
}

void Metrics::RefreshDeviceMemory() {
  std::lock_guard<std::mutex> lock(device_mu_);
  for (auto& [device, gauges] : devices_) {
    absl::StatusOr<DeviceMemory> memory = gauges.reader();
    if (!memory.ok()) {
      gauges.used.Remove();
      gauges.total.Remove();
      continue;
    }
    gauges.used.Set(static_cast<double>(memory->used_bytes));
    gauges.total.Set(static_cast<double>(memory->total_bytes));
  }
}

}  // namespace mantissa
