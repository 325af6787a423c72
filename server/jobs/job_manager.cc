#include "server/jobs/job_manager.h"

#include <google/protobuf/util/time_util.h>

#include <algorithm>
#include <exception>
#include <filesystem>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "server/common/file_sync.h"
#include "server/common/logging.h"
#include "server/common/status_macros.h"

namespace mantissa {
namespace {

using google::protobuf::util::TimeUtil;

std::string NewJobId() {
  static absl::Mutex* const mu = new absl::Mutex();
  static absl::BitGen* const gen = new absl::BitGen();
  absl::MutexLock lock(mu);
  // 48 random bits: short enough to type, long enough not to collide.
  return absl::StrFormat("%012x", absl::Uniform<uint64_t>(*gen) & 0xffffffffffffULL);
}

bool IsTerminal(v1::JobState state) {
  return state == v1::SUCCEEDED || state == v1::FAILED || state == v1::CANCELLED;
}

}  // namespace

// The JobContext handed to the runner: routes updates through the manager's
// lock so that watchers, the store and Get() see one consistent job.
class JobManager::Context : public JobContext {
 public:
  Context(JobManager& manager, ActiveJob& active) : manager_(manager), active_(active) {}

  bool cancelled() const override {
    if (active_.cancel.load(std::memory_order_relaxed)) return true;
    // Polled once per step: a clock read is cheap enough.
    if (absl::Now() < active_.deadline) return false;
    active_.timed_out.store(true);
    return true;
  }

  void Update(v1::JobEvent::Type type, const std::function<void(v1::Job&)>& mutate,
              const std::string& message) override {
    std::lock_guard<std::mutex> lock(manager_.mu_);
    mutate(active_.job);
    const absl::Time now = absl::Now();
    if (type != v1::JobEvent::PROGRESS ||
        now - active_.last_persisted >= manager_.options_.progress_persist_interval) {
      manager_.PersistLocked(active_);
    }
    manager_.PublishLocked(active_, type, message);
  }

  void Warn(const std::string& warning) override {
    Update(
        v1::JobEvent::WARNING, [&](v1::Job& job) { job.add_warnings(warning); }, warning);
  }

  JobMetrics& metrics() override { return *active_.metrics; }

 private:
  JobManager& manager_;
  ActiveJob& active_;
};

absl::StatusOr<std::unique_ptr<JobManager>> JobManager::Create(Options options) {
  if (options.store == nullptr || options.runner == nullptr || options.metrics == nullptr) {
    return absl::InvalidArgumentError("JobManager: store, runner and metrics are required");
  }
  if (options.max_concurrent_jobs < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_concurrent_jobs: must be at least 1, got ", options.max_concurrent_jobs));
  }
  if (options.max_queued_jobs < 1 || options.max_queued_jobs_per_principal < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_queued_jobs, --max_queued_jobs_per_principal: must be at least 1, got ",
                     options.max_queued_jobs, " and ", options.max_queued_jobs_per_principal));
  }
  std::unique_ptr<JobManager> manager(new JobManager(std::move(options)));
  RETURN_IF_ERROR(manager->Recover());
  if (manager->options_.keep_finished_jobs > absl::ZeroDuration()) {
    // Once now, before anything else runs, then from the sweeper thread.
    ASSIGN_OR_RETURN(const int swept, manager->SweepFinishedJobs());
    if (swept > 0) LogInfo(absl::StrCat("retention: deleted ", swept, " finished job(s)"));
    manager->sweeper_ = std::thread([m = manager.get()] { m->SweeperLoop(); });
  }
  for (int i = 0; i < manager->options_.max_concurrent_jobs; ++i) {
    manager->workers_.emplace_back([m = manager.get()] { m->WorkerLoop(); });
  }
  return manager;
}

JobManager::~JobManager() { Shutdown(); }

absl::Status JobManager::Recover() {
  ASSIGN_OR_RETURN(std::vector<v1::Job> jobs,
                   options_.store->List({v1::QUEUED, v1::RUNNING}, /*limit=*/0));
  // List is newest first; queue the oldest first.
  std::reverse(jobs.begin(), jobs.end());
  std::lock_guard<std::mutex> lock(mu_);
  for (v1::Job& job : jobs) {
    if (job.state() == v1::RUNNING) {
      job.set_state(v1::FAILED);
      job.set_error(
          "mantissad stopped while this job was running (crash or kill); the job did not "
          "finish");
      *job.mutable_end_time() = TimeUtil::GetCurrentTime();
      RETURN_IF_ERROR(options_.store->Put(job));
      LogWarning(absl::StrCat("job ", job.id(), " was running when mantissad stopped: FAILED"));
      continue;
    }
    auto active = std::make_unique<ActiveJob>();
    active->job = std::move(job);
    queue_.push_back(active->job.id());
    active_.emplace(active->job.id(), std::move(active));
  }
  if (!queue_.empty()) LogInfo(absl::StrCat("re-queued ", queue_.size(), " job(s) from the store"));
  UpdateGaugesLocked();
  return absl::OkStatus();
}

absl::StatusOr<v1::JobSpec> JobManager::ResumeSpec(const v1::JobSpec& spec) {
  const std::string& id = spec.resume_from();
  if (id.size() > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("resume_from: must be at most 64 bytes (a job id), got ", id.size()));
  }
  v1::JobSpec others = spec;
  others.clear_resume_from();
  others.clear_name();
  if (others.ByteSizeLong() != 0) {
    return absl::InvalidArgumentError(absl::StrCat("resume_from: a resumed job runs with job ", id,
                                                   "'s spec; set only name beside resume_from"));
  }
  absl::StatusOr<v1::Job> source = Get(id);
  if (absl::IsNotFound(source.status())) {
    return absl::NotFoundError(absl::StrCat("resume_from: no job '", id, "'"));
  }
  RETURN_IF_ERROR(source.status());
  switch (source->state()) {
    case v1::QUEUED:
    case v1::RUNNING:
      return absl::FailedPreconditionError(
          absl::StrCat("resume_from: job ", id, " is ", v1::JobState_Name(source->state()),
                       "; resume it once it has ended (cancel it first)"));
    case v1::SUCCEEDED:
      return absl::FailedPreconditionError(
          absl::StrCat("resume_from: job ", id, " already succeeded; there is nothing to resume"));
    default:
      break;
  }
  v1::JobSpec resumed = source->spec();
  resumed.set_resume_from(id);
  if (!spec.name().empty()) resumed.set_name(spec.name());
  return resumed;
}

absl::Status JobManager::CheckQueueCapsLocked(const std::string& principal) const {
  int queued = 0;
  int queued_by_principal = 0;
  for (const auto& [id, active] : active_) {
    if (active->job.state() != v1::QUEUED) continue;
    ++queued;
    if (active->job.principal() == principal) ++queued_by_principal;
  }
  if (queued >= options_.max_queued_jobs) {
    return absl::ResourceExhaustedError(
        absl::StrCat("--max_queued_jobs: ", queued, " jobs are queued, the daemon's cap is ",
                     options_.max_queued_jobs, "; wait for some to start or cancel them"));
  }
  if (queued_by_principal >= options_.max_queued_jobs_per_principal) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "--max_queued_jobs_per_principal: principal '", principal, "' has ", queued_by_principal,
        " jobs queued, the cap is ", options_.max_queued_jobs_per_principal,
        "; wait for some to start or cancel them"));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::Job> JobManager::Submit(const v1::JobSpec& submitted,
                                           const std::string& principal) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shutting_down_) return absl::UnavailableError("mantissad is shutting down");
    // Checked again below, under the same lock as the insertion; this early
    // check spares the runner's preparation of a job that cannot be queued.
    RETURN_IF_ERROR(CheckQueueCapsLocked(principal));
  }
  v1::JobSpec spec = submitted;
  if (!spec.resume_from().empty()) {
    ASSIGN_OR_RETURN(spec, ResumeSpec(submitted));
  }
  ASSIGN_OR_RETURN(JobRunner::PreparedSpec prepared, options_.runner->Prepare(spec));

  auto active = std::make_unique<ActiveJob>();
  v1::Job& job = active->job;
  job.set_id(NewJobId());
  job.set_principal(principal);
  *job.mutable_spec() = std::move(prepared.spec);
  job.set_state(v1::QUEUED);
  job.set_effective_precision(prepared.effective_precision);
  for (std::string& w : prepared.warnings) job.add_warnings(std::move(w));
  *job.mutable_create_time() = TimeUtil::GetCurrentTime();

  std::lock_guard<std::mutex> lock(mu_);
  if (shutting_down_) return absl::UnavailableError("mantissad is shutting down");
  RETURN_IF_ERROR(CheckQueueCapsLocked(principal));
  // Durable before it is acknowledged: an accepted job is never lost.
  RETURN_IF_ERROR(options_.store->Put(job));
  active->last_persisted = absl::Now();
  v1::Job copy = job;
  queue_.push_back(job.id());
  active_.emplace(job.id(), std::move(active));
  options_.metrics->JobSubmitted(copy.effective_precision());
  UpdateGaugesLocked();
  work_available_.notify_one();
  LogInfo(absl::StrCat("job ", copy.id(), " queued: model=", copy.spec().model(), " dataset=",
                       copy.spec().dataset(), " precision=", copy.effective_precision()));
  return copy;
}

absl::StatusOr<v1::Job> JobManager::Get(const std::string& id) {
  // Ids are 12 hex digits: a longer one matches nothing and is not echoed.
  if (id.size() > 64) {
    return absl::NotFoundError(absl::StrCat("no job with this ", id.size(), "-byte id"));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = active_.find(id);
    if (it != active_.end()) return it->second->job;
  }
  return options_.store->Get(id);
}

absl::StatusOr<std::vector<v1::Job>> JobManager::List(const std::vector<v1::JobState>& states,
                                                      int limit,
                                                      const std::optional<std::string>& principal) {
  // The store does not index principals: filter the full list, then limit.
  ASSIGN_OR_RETURN(std::vector<v1::Job> jobs,
                   options_.store->List(states, principal.has_value() ? 0 : limit));
  if (principal.has_value()) {
    jobs.erase(std::remove_if(jobs.begin(), jobs.end(),
                              [&](const v1::Job& job) { return job.principal() != *principal; }),
               jobs.end());
    if (limit > 0 && static_cast<int>(jobs.size()) > limit) jobs.resize(limit);
  }
  // The store may lag behind a running job's progress; memory does not.
  std::lock_guard<std::mutex> lock(mu_);
  for (v1::Job& job : jobs) {
    auto it = active_.find(job.id());
    if (it != active_.end()) job = it->second->job;
  }
  return jobs;
}

absl::StatusOr<v1::Job> JobManager::Cancel(const std::string& id) {
  std::unique_lock<std::mutex> lock(mu_);
  auto it = active_.find(id);
  if (it == active_.end()) {
    lock.unlock();
    ASSIGN_OR_RETURN(v1::Job job, options_.store->Get(id));
    return absl::FailedPreconditionError(
        absl::StrCat("job ", id, " already ended ", v1::JobState_Name(job.state()),
                     "; only QUEUED or RUNNING jobs can be cancelled"));
  }
  ActiveJob& active = *it->second;
  if (active.job.state() == v1::QUEUED) {
    queue_.erase(std::remove(queue_.begin(), queue_.end(), id), queue_.end());
    FinishLocked(active, v1::CANCELLED, "", nullptr);
    v1::Job job = active.job;
    active_.erase(it);
    UpdateGaugesLocked();
    return job;
  }
  active.cancel.store(true);
  active.job.set_cancel_requested(true);
  PersistLocked(active);
  PublishLocked(active, v1::JobEvent::STATE_CHANGED, "cancellation requested");
  return active.job;
}

absl::Status JobManager::Delete(const std::string& id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = active_.find(id);
    if (it != active_.end()) {
      return absl::FailedPreconditionError(
          absl::StrCat("job ", id, " is ", v1::JobState_Name(it->second->job.state()),
                       "; only an ended job can be deleted (cancel it first)"));
    }
  }
  // NOT_FOUND for an unknown id.
  RETURN_IF_ERROR(options_.store->Get(id).status());
  // Files first: a crash in between leaves a record without checkpoints
  // (which resume_from reports), never files no record points to.
  if (!options_.jobs_dir.empty()) {
    const std::filesystem::path dir = std::filesystem::path(options_.jobs_dir) / id;
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
    if (ec) {
      return absl::InternalError(
          absl::StrCat("job ", id, ": cannot remove ", dir.string(), ": ", ec.message()));
    }
    if (std::filesystem::is_directory(options_.jobs_dir, ec)) {
      RETURN_IF_ERROR(FsyncDir(options_.jobs_dir));
    }
  }
  RETURN_IF_ERROR(options_.store->Delete(id));
  LogInfo(absl::StrCat("job ", id, " deleted"));
  return absl::OkStatus();
}

absl::StatusOr<int> JobManager::SweepFinishedJobs() {
  if (options_.keep_finished_jobs <= absl::ZeroDuration()) return 0;
  ASSIGN_OR_RETURN(std::vector<v1::Job> ended,
                   options_.store->List({v1::SUCCEEDED, v1::FAILED, v1::CANCELLED}, 0));
  const absl::Time cutoff = absl::Now() - options_.keep_finished_jobs;
  int deleted = 0;
  for (const v1::Job& job : ended) {
    const absl::Time end = absl::FromUnixSeconds(job.end_time().seconds());
    if (!job.has_end_time() || end >= cutoff) continue;
    absl::Status status = Delete(job.id());
    if (status.ok()) {
      ++deleted;
    } else if (!absl::IsNotFound(status) && !absl::IsFailedPrecondition(status)) {
      // One job that cannot be removed must hold up neither the others nor
      // start-up; it is tried again at the next sweep.
      LogError(absl::StrCat("retention: ", status.message()));
    }
  }
  return deleted;
}

void JobManager::SweeperLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!shutting_down_) {
    sweeper_wake_.wait_for(lock, absl::ToChronoSeconds(options_.retention_sweep_interval),
                           [this] { return shutting_down_; });
    if (shutting_down_) return;
    lock.unlock();
    absl::StatusOr<int> swept = SweepFinishedJobs();
    if (!swept.ok()) {
      LogError(absl::StrCat("retention sweep: ", swept.status().ToString()));
    } else if (*swept > 0) {
      LogInfo(absl::StrCat("retention: deleted ", *swept, " finished job(s)"));
    }
    lock.lock();
  }
}

v1::GetCapabilitiesResponse JobManager::Capabilities() const {
  v1::GetCapabilitiesResponse caps = options_.runner->Capabilities();
  caps.set_max_concurrent_jobs(options_.max_concurrent_jobs);
  return caps;
}

absl::Status JobManager::Watch(const std::string& id, JobWatcher* watcher) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = active_.find(id);
    if (it != active_.end()) {
      if (static_cast<int>(it->second->watchers.size()) >= options_.max_watchers_per_job) {
        return absl::ResourceExhaustedError(
            absl::StrCat("job ", id, " already has ", it->second->watchers.size(),
                         " watchers, the most allowed (--max_watchers_per_job)"));
      }
      v1::JobEvent event;
      event.set_type(v1::JobEvent::SNAPSHOT);
      *event.mutable_time() = TimeUtil::GetCurrentTime();
      *event.mutable_job() = it->second->job;
      watcher->OnJobEvent(event);
      it->second->watchers.push_back(watcher);
      return absl::OkStatus();
    }
  }
  ASSIGN_OR_RETURN(v1::Job job, options_.store->Get(id));
  v1::JobEvent event;
  *event.mutable_time() = TimeUtil::GetCurrentTime();
  *event.mutable_job() = std::move(job);
  event.set_type(v1::JobEvent::SNAPSHOT);
  watcher->OnJobEvent(event);
  event.set_type(v1::JobEvent::FINISHED);
  watcher->OnJobEvent(event);
  return absl::OkStatus();
}

void JobManager::Unwatch(const std::string& id, JobWatcher* watcher) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = active_.find(id);
  if (it == active_.end()) return;
  auto& watchers = it->second->watchers;
  watchers.erase(std::remove(watchers.begin(), watchers.end(), watcher), watchers.end());
}

void JobManager::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shutting_down_) return;
    shutting_down_ = true;
    for (auto& [id, active] : active_) {
      if (active->job.state() == v1::RUNNING) {
        active->cancelled_by_shutdown = true;
        active->cancel.store(true);
      }
    }
  }
  work_available_.notify_all();
  sweeper_wake_.notify_all();
  for (std::thread& worker : workers_) worker.join();
  workers_.clear();
  if (sweeper_.joinable()) sweeper_.join();
}

void JobManager::WorkerLoop() {
  while (true) {
    ActiveJob* active = nullptr;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_available_.wait(lock, [this] { return shutting_down_ || !queue_.empty(); });
      if (shutting_down_) return;
      active = active_.at(queue_.front()).get();
      queue_.pop_front();
      v1::Job& job = active->job;
      job.set_state(v1::RUNNING);
      *job.mutable_start_time() = TimeUtil::GetCurrentTime();
      if (job.spec().has_max_duration()) {
        const google::protobuf::Duration& d = job.spec().max_duration();
        const absl::Duration limit = absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
        if (limit > absl::ZeroDuration()) active->deadline = absl::Now() + limit;
      }
      active->metrics =
          options_.metrics->StartJob(job.id(), job.spec().model(), job.effective_precision());
      ++running_;
      UpdateGaugesLocked();
      PersistLocked(*active);
      PublishLocked(*active, v1::JobEvent::STATE_CHANGED, "running");
    }
    RunJob(*active);
  }
}

void JobManager::RunJob(ActiveJob& active) {
  const std::string id = active.job.id();
  LogInfo(absl::StrCat("job ", id, " running"));
  v1::Job job;
  {
    std::lock_guard<std::mutex> lock(mu_);
    job = active.job;
  }
  Context context(*this, active);
  absl::StatusOr<v1::JobResult> result;
  // Runners turn LibTorch errors into Status themselves; this is the last
  // line that keeps a stray exception from taking the daemon down.
  try {
    result = options_.runner->Run(job, context);
  } catch (const std::exception& e) {
    result = absl::InternalError(absl::StrCat("unexpected exception: ", e.what()));
  } catch (...) {
    result = absl::InternalError("unexpected non-standard exception");
  }

  std::lock_guard<std::mutex> lock(mu_);
  if (result.ok()) {
    FinishLocked(active, v1::SUCCEEDED, "", &*result);
  } else if (active.timed_out.load() && !active.cancel.load()) {
    const google::protobuf::Duration& d = active.job.spec().max_duration();
    FinishLocked(active, v1::FAILED,
                 absl::StrCat("DEADLINE_EXCEEDED: the job exceeded its max_duration of ",
                              absl::FormatDuration(absl::Seconds(d.seconds()) +
                                                   absl::Nanoseconds(d.nanos())),
                              " and was stopped (", result.status().message(),
                              "); resume it with resume_from if it wrote a checkpoint"),
                 nullptr);
  } else if (active.cancel.load() && absl::IsCancelled(result.status())) {
    FinishLocked(
        active, v1::CANCELLED,
        active.cancelled_by_shutdown ? "mantissad shut down while the job was running" : "",
        nullptr);
  } else {
    FinishLocked(active, v1::FAILED, std::string(result.status().message()), nullptr);
  }
  --running_;
  options_.metrics->RetireJob(id);
  active_.erase(id);
  UpdateGaugesLocked();
}

void JobManager::PersistLocked(ActiveJob& active) {
  if (absl::Status s = options_.store->Put(active.job); !s.ok()) {
    // The job goes on; the store catches up at the next state change.
    LogError(absl::StrCat("job ", active.job.id(), ": ", s.ToString()));
    return;
  }
  active.last_persisted = absl::Now();
}

void JobManager::PublishLocked(ActiveJob& active, v1::JobEvent::Type type,
                               const std::string& message) {
  if (active.watchers.empty()) return;
  v1::JobEvent event;
  event.set_type(type);
  *event.mutable_time() = TimeUtil::GetCurrentTime();
  *event.mutable_job() = active.job;
  event.set_message(message);
  for (JobWatcher* watcher : active.watchers) watcher->OnJobEvent(event);
}

void JobManager::FinishLocked(ActiveJob& active, v1::JobState state, const std::string& error,
                              const v1::JobResult* result) {
  v1::Job& job = active.job;
  job.set_state(state);
  job.set_error(error);
  if (result != nullptr) *job.mutable_result() = *result;
  *job.mutable_end_time() = TimeUtil::GetCurrentTime();
  PersistLocked(active);
  options_.metrics->JobFinished(v1::JobState_Name(state), job.effective_precision());
  const std::string message = error.empty() ? v1::JobState_Name(state)
                                            : absl::StrCat(v1::JobState_Name(state), ": ", error);
  PublishLocked(active, v1::JobEvent::FINISHED, message);
  active.watchers.clear();
  LogInfo(absl::StrCat("job ", job.id(), " ", message));
}

void JobManager::UpdateGaugesLocked() {
  options_.metrics->SetJobsQueued(static_cast<int>(queue_.size()));
  options_.metrics->SetJobsRunning(running_);
}

}  // namespace mantissa
