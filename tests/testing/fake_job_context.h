#ifndef MANTISSA_TESTS_TESTING_FAKE_JOB_CONTEXT_H_
#define MANTISSA_TESTS_TESTING_FAKE_JOB_CONTEXT_H_

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "server/jobs/job_runner.h"
#include "server/metrics/metrics.h"

namespace mantissa::testing {

// Records what a runner reports; cancellation can be triggered from a
// callback that sees every update (e.g. "cancel at step 5").
class FakeJobContext : public JobContext {
 public:
  FakeJobContext() : job_metrics_(metrics_.StartJob("test-job", "model", "32-true")) {}

  bool cancelled() const override { return cancelled_.load(); }
  void Cancel() { cancelled_.store(true); }

  void Update(v1::JobEvent::Type type, const std::function<void(v1::Job&)>& mutate,
              const std::string& message) override {
    std::lock_guard<std::mutex> lock(mu_);
    mutate(job_);
    v1::JobEvent event;
    event.set_type(type);
    *event.mutable_job() = job_;
    event.set_message(message);
    events_.push_back(event);
    if (on_update_) on_update_(event, *this);
  }

  void Warn(const std::string& warning) override {
    Update(
        v1::JobEvent::WARNING, [&](v1::Job& job) { job.add_warnings(warning); }, warning);
  }

  JobMetrics& metrics() override { return *job_metrics_; }

  void set_on_update(std::function<void(const v1::JobEvent&, FakeJobContext&)> f) {
    on_update_ = std::move(f);
  }
  std::vector<v1::JobEvent> events() {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }
  v1::Job job() {
    std::lock_guard<std::mutex> lock(mu_);
    return job_;
  }

 private:
  Metrics metrics_;
  std::shared_ptr<JobMetrics> job_metrics_;
  std::atomic<bool> cancelled_{false};
  std::mutex mu_;
  v1::Job job_;
  std::vector<v1::JobEvent> events_;
  std::function<void(const v1::JobEvent&, FakeJobContext&)> on_update_;
};

}  // namespace mantissa::testing

#endif  // MANTISSA_TESTS_TESTING_FAKE_JOB_CONTEXT_H_
