#include "server/jobs/job_manager.h"

#include <google/protobuf/util/time_util.h>

#include <algorithm>
#include <exception>
#include <filesystem>
#include <set>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "server/common/file_sync.h"
#include "server/common/logging.h"
#include "server/common/status_macros.h"
#include "server/jobs/job_transitions.h"

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

// How often a follower looks for node 0's rendezvous address.
constexpr absl::Duration kRendezvousPoll = absl::Milliseconds(200);

// Trained by more than one rank (process), on one node or several.
bool IsDataParallel(const v1::JobSpec& spec) {
  return std::max(1, spec.devices()) * std::max(1, spec.num_nodes()) > 1;
}

absl::Duration ToDuration(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

}  // namespace

// Why a run was asked to stop: the first reason given stays.
struct StopRequest {
  std::atomic<StopReason> stop{StopReason::kNone};

  void Stop(StopReason reason) {
    StopReason none = StopReason::kNone;
    stop.compare_exchange_strong(none, reason);
  }
};

// A job claimed by this worker, from its claim until its last write.
struct JobManager::ActiveJob : StopRequest {
  v1::Job job;  // guarded by the manager's mu_
  Lease lease;
  // Set at the claim: start + spec.max_duration. Past it the job is stopped
  // as by a cancellation, and `timed_out` says why.
  absl::Time deadline = absl::InfiniteFuture();
  std::atomic<bool> timed_out{false};
  // Until when the lease is known to hold (the claim's or last renewal's
  // start + lease): past it the job stops by itself, as another worker may
  // already have taken it.
  std::atomic<int64_t> lease_valid_until_ns{0};
  absl::Time claimed_at;
  std::vector<JobWatcher*> watchers;  // guarded by mu_
  int64_t last_seq = 0;               // guarded by mu_: of the newest stored event
  absl::Time last_persisted = absl::InfinitePast();
  std::shared_ptr<JobMetrics> metrics;
  // Guarded by mu_: FinishRun is writing the job's end, after which the
  // store no longer lists its lease (a renewal then is no sign of loss).
  bool finishing = false;
};

// The JobContext handed to the runner: routes updates through the manager's
// lock so that watchers and Get() see one consistent job, and through the
// store under the job's lease.
class JobManager::Context : public JobContext {
 public:
  Context(JobManager& manager, ActiveJob& active) : manager_(manager), active_(active) {}

  bool cancelled() const override { return stop_reason() != StopReason::kNone; }

  StopReason stop_reason() const override {
    const StopReason stop = active_.stop.load();
    if (stop != StopReason::kNone) return stop;
    // Polled once per step: clock reads are cheap enough.
    const absl::Time now = absl::Now();
    if (absl::ToUnixNanos(now) > active_.lease_valid_until_ns.load()) {
      active_.Stop(StopReason::kLeaseLost);
      return active_.stop.load();
    }
    if (now < active_.deadline) return StopReason::kNone;
    active_.timed_out.store(true);
    active_.Stop(StopReason::kCancelled);
    return active_.stop.load();
  }

  void Update(v1::JobEvent::Type type, const std::function<void(v1::Job&)>& mutate,
              const std::string& message) override {
    v1::JobEvent event;
    bool persist = false;
    {
      std::lock_guard<std::mutex> lock(manager_.mu_);
      mutate(active_.job);
      const absl::Time now = absl::Now();
      persist = type != v1::JobEvent::PROGRESS ||
                now - active_.last_persisted >= manager_.options_.progress_persist_interval;
      if (persist) active_.last_persisted = now;
      event = MakeJobEvent(type, active_.job, message);
    }
    // Only this thread writes the job, so writes keep their order outside
    // the lock; a slow database holds up this job alone.
    if (persist && active_.stop.load() != StopReason::kLeaseLost) {
      absl::StatusOr<int64_t> seq =
          manager_.options_.store->Update(event.job(), active_.lease, &event);
      if (absl::IsAborted(seq.status())) {
        std::lock_guard<std::mutex> lock(manager_.mu_);
        manager_.LoseLocked(active_, std::string(seq.status().message()));
        return;
      }
      if (!seq.ok()) {
        // The job goes on; the store catches up at the next write.
        LogError(absl::StrCat("job ", event.job().id(), ": ", seq.status().ToString()));
      } else {
        event.set_sequence(*seq);
      }
    }
    std::lock_guard<std::mutex> lock(manager_.mu_);
    if (event.sequence() > 0) active_.last_seq = event.sequence();
    manager_.PublishLocked(active_, event);
  }

  void Warn(const std::string& warning) override {
    Update(
        v1::JobEvent::WARNING, [&](v1::Job& job) { job.add_warnings(warning); }, warning);
  }

  JobMetrics& metrics() override { return *active_.metrics; }

  absl::Status PublishRendezvous(const std::string& address) override {
    return manager_.options_.store->PublishRendezvous(active_.job.id(), active_.lease.attempt,
                                                      address);
  }

 private:
  JobManager& manager_;
  ActiveJob& active_;
};

// A node (> 0) of a job whose node 0 runs on another worker.
struct JobManager::FollowerRun : StopRequest {
  v1::Job job;  // as taken; never written
  int node_rank = 0;
  // Rank 0's node reports the job's series; this node's stay unserved.
  Metrics local_metrics;
  std::shared_ptr<JobMetrics> metrics;
};

// The JobContext of a follower: node 0 reports the job (its rank 0 sends the
// updates), so Update and Warn change nothing here.
class JobManager::FollowerContext : public JobContext {
 public:
  FollowerContext(JobManager& manager, FollowerRun& run) : manager_(manager), run_(run) {}

  bool cancelled() const override { return stop_reason() != StopReason::kNone; }
  StopReason stop_reason() const override { return run_.stop.load(); }
  void Update(v1::JobEvent::Type, const std::function<void(v1::Job&)>&,
              const std::string&) override {}
  void Warn(const std::string&) override {}
  JobMetrics& metrics() override { return *run_.metrics; }
  int node_rank() const override { return run_.node_rank; }

  absl::StatusOr<std::string> AwaitRendezvous(absl::Duration timeout) override {
    const absl::Time deadline = absl::Now() + timeout;
    const std::string& id = run_.job.id();
    absl::Time last_warning = absl::InfinitePast();
    while (true) {
      if (cancelled()) {
        return absl::CancelledError(absl::StrCat("job ", id,
                                                 ": stopped before node 0 published "
                                                 "its rendezvous address"));
      }
      absl::StatusOr<std::string> address =
          manager_.options_.store->Rendezvous(id, run_.job.attempt());
      if (absl::IsAborted(address.status()) || absl::IsNotFound(address.status())) {
        run_.Stop(StopReason::kLeaseLost);
        return absl::CancelledError(address.status().message());
      }
      if (address.ok() && !address->empty()) return *address;
      // An unreachable database is said once every few seconds, not per poll.
      if (!address.ok() && absl::Now() - last_warning >= absl::Seconds(5)) {
        last_warning = absl::Now();
        LogWarning(
            absl::StrCat("job ", id, ": reading node 0's address: ", address.status().ToString()));
      }
      if (absl::Now() >= deadline) {
        return absl::DeadlineExceededError(absl::StrCat(
            "job ", id, " attempt ", run_.job.attempt(), ": node 0 (", run_.job.worker(),
            ") published no rendezvous address within ", absl::FormatDuration(timeout)));
      }
      absl::SleepFor(std::min(kRendezvousPoll, deadline - absl::Now()));
    }
  }

 private:
  JobManager& manager_;
  FollowerRun& run_;
};

JobManager::JobManager(Options options)
    : options_(std::move(options)),
      follower_(std::make_unique<EventFollower>(EventFollower::Options{
          .store = options_.store, .poll_interval = options_.watch_poll_interval})) {}

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
  if (options.lease < absl::Milliseconds(300)) {
    return absl::InvalidArgumentError(absl::StrCat("--lease_seconds: must be at least 0.3 s, got ",
                                                   absl::FormatDuration(options.lease)));
  }
  if (options.worker_id.empty() || options.worker_id.size() > 128) {
    return absl::InvalidArgumentError("--worker_id: must be 1 to 128 bytes");
  }
  std::unique_ptr<JobManager> manager(new JobManager(std::move(options)));
  JobManager& m = *manager;
  if (m.options_.sole_worker) {
    // The daemon that ran them died: nobody renews their leases.
    ASSIGN_OR_RETURN(std::vector<v1::Job> expired, m.options_.store->ExpireLeases(true));
    for (const v1::Job& job : expired) {
      LogWarning(absl::StrCat("job ", job.id(), " was running when mantissad stopped: ",
                              job.state() == v1::QUEUED
                                  ? absl::StrCat("queued again as attempt ", job.attempt())
                                  : v1::JobState_Name(job.state())));
    }
  }
  if (m.options_.keep_finished_jobs > absl::ZeroDuration()) {
    // Once now, before anything else runs, then from the sweeper thread.
    ASSIGN_OR_RETURN(const int swept, m.SweepFinishedJobs());
    if (swept > 0) LogInfo(absl::StrCat("retention: deleted ", swept, " finished job(s)"));
    m.sweeper_ = std::thread([&m] { m.SweeperLoop(); });
  }
  m.RefreshGauges();
  m.Announce();
  m.heartbeat_ = std::thread([&m] { m.HeartbeatLoop(); });
  for (int i = 0; i < m.options_.max_concurrent_jobs; ++i) {
    m.workers_.emplace_back([&m] { m.WorkerLoop(); });
  }
  return manager;
}

JobManager::~JobManager() { Shutdown(); }

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

absl::StatusOr<v1::Job> JobManager::Submit(const v1::JobSpec& submitted,
                                           const std::string& principal) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shutting_down_) return absl::UnavailableError("mantissad is shutting down");
  }
  v1::JobSpec spec = submitted;
  if (!spec.resume_from().empty()) {
    ASSIGN_OR_RETURN(spec, ResumeSpec(submitted));
  }
  ASSIGN_OR_RETURN(JobRunner::PreparedSpec prepared, options_.runner->Prepare(spec));
  if (prepared.spec.num_nodes() > 1 && options_.store->kind() != "postgresql") {
    // Its nodes are placed on other workers through the shared store.
    return absl::FailedPreconditionError(absl::StrCat(
        "num_nodes: ", prepared.spec.num_nodes(),
        " needs the shared PostgreSQL job store (--database=postgresql://...); this worker's "
        "job store is ",
        options_.store->kind()));
  }

  v1::Job job;
  job.set_id(NewJobId());
  job.set_principal(principal);
  *job.mutable_spec() = std::move(prepared.spec);
  job.set_state(v1::QUEUED);
  job.set_attempt(1);
  job.set_effective_precision(prepared.effective_precision);
  for (std::string& w : prepared.warnings) job.add_warnings(std::move(w));
  *job.mutable_create_time() = TimeUtil::GetCurrentTime();
  // Durable (and checked against the caps, atomically) before it is
  // acknowledged: an accepted job is never lost.
  RETURN_IF_ERROR(options_.store->Insert(
      job, {.max_queued = options_.max_queued_jobs,
            .max_queued_per_principal = options_.max_queued_jobs_per_principal}));
  options_.metrics->JobSubmitted(job.effective_precision());
  StoreChanged();
  RefreshGauges();
  LogInfo(absl::StrCat("job ", job.id(), " queued: model=", job.spec().model(), " dataset=",
                       job.spec().dataset(), " precision=", job.effective_precision()));
  return job;
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

absl::StatusOr<JobPage> JobManager::List(const JobQuery& query) {
  ASSIGN_OR_RETURN(JobPage page, options_.store->List(query));
  // The store may lag behind the progress of a job running here; memory
  // does not.
  std::lock_guard<std::mutex> lock(mu_);
  for (v1::Job& job : page.jobs) {
    auto it = active_.find(job.id());
    if (it != active_.end()) job = it->second->job;
  }
  return page;
}

absl::StatusOr<v1::Job> JobManager::Cancel(const std::string& id) {
  if (id.size() > 64) {
    return absl::NotFoundError(absl::StrCat("no job with this ", id.size(), "-byte id"));
  }
  bool stopped_here = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = active_.find(id);
    if (it != active_.end() && IsTerminal(it->second->job.state())) {
      // Ended here a moment ago; the store may not say so yet.
      return NotCancellable(id, it->second->job.state());
    }
    if (it != active_.end() && it->second->job.state() == v1::RUNNING) {
      // Running here: stopped at its next step, without waiting for the
      // heartbeat to read the request back from the store.
      ActiveJob& active = *it->second;
      active.job.set_cancel_requested(true);
      active.Stop(StopReason::kCancelled);
      stopped_here = true;
      PublishLocked(
          active, MakeJobEvent(v1::JobEvent::STATE_CHANGED, active.job, "cancellation requested"));
    }
  }
  // Recorded in the store too: the request outlives this worker.
  absl::StatusOr<v1::Job> job = options_.store->RequestCancel(id);
  if (stopped_here && absl::IsFailedPrecondition(job.status())) {
    // The run stopped above can end (a fast step) and write CANCELLED before
    // the request reaches the store: then the request has done its work.
    absl::StatusOr<v1::Job> ended = options_.store->Get(id);
    if (ended.ok() && ended->state() == v1::CANCELLED) return ended;
  }
  if (job.ok() && job->state() == v1::CANCELLED) {
    options_.metrics->JobFinished(v1::JobState_Name(v1::CANCELLED), job->effective_precision());
  }
  if (job.ok()) {
    StoreChanged();
    RefreshGauges();
    std::lock_guard<std::mutex> lock(mu_);
    auto it = active_.find(id);
    if (it != active_.end()) return it->second->job;
  }
  return job;
}

absl::Status JobManager::Delete(const std::string& id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = active_.find(id);
    if (it != active_.end() && !IsTerminal(it->second->job.state())) {
      return NotDeletable(id, it->second->job.state());
    }
  }
  // NOT_FOUND for an unknown id.
  ASSIGN_OR_RETURN(const v1::Job job, options_.store->Get(id));
  if (!IsTerminal(job.state())) {
    return NotDeletable(id, job.state());
  }
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
  ASSIGN_OR_RETURN(JobPage ended,
                   options_.store->List({.states = {v1::SUCCEEDED, v1::FAILED, v1::CANCELLED}}));
  const absl::Time cutoff = absl::Now() - options_.keep_finished_jobs;
  int deleted = 0;
  for (const v1::Job& job : ended.jobs) {
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
    wake_.wait_for(lock, absl::ToChronoSeconds(options_.retention_sweep_interval),
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
  caps.set_worker_id(options_.worker_id);
  caps.set_job_store(options_.store->kind());
  caps.mutable_data_parallel()->set_multi_node(options_.store->kind() == "postgresql");
  return caps;
}

absl::Status JobManager::Watch(const std::string& id, JobWatcher* watcher) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = active_.find(id);
    // A job whose last event went out (it ended or was released here) is
    // the store's to tell.
    if (it != active_.end() && it->second->job.state() == v1::RUNNING) {
      if (static_cast<int>(it->second->watchers.size()) >= options_.max_watchers_per_job) {
        return absl::ResourceExhaustedError(
            absl::StrCat("job ", id, " already has ", it->second->watchers.size(),
                         " watchers, the most allowed (--max_watchers_per_job)"));
      }
      watcher->OnJobEvent(MakeJobEvent(v1::JobEvent::SNAPSHOT, it->second->job, ""));
      it->second->watchers.push_back(watcher);
      return absl::OkStatus();
    }
  }
  // Queued, ended, or running on another worker: the store's event log.
  ASSIGN_OR_RETURN(JobSnapshot snapshot, options_.store->Snapshot(id));
  v1::JobEvent event = MakeJobEvent(v1::JobEvent::SNAPSHOT, snapshot.job, "");
  event.set_sequence(snapshot.last_event_seq);
  if (IsTerminal(snapshot.job.state())) {
    watcher->OnJobEvent(event);
    event.set_type(v1::JobEvent::FINISHED);
    watcher->OnJobEvent(event);
    return absl::OkStatus();
  }
  if (follower_->Count(id) >= options_.max_watchers_per_job) {
    return absl::ResourceExhaustedError(
        absl::StrCat("job ", id, " already has ", follower_->Count(id),
                     " watchers, the most allowed (--max_watchers_per_job)"));
  }
  watcher->OnJobEvent(event);
  follower_->Follow(id, watcher, snapshot.last_event_seq);
  return absl::OkStatus();
}

void JobManager::Unwatch(const std::string& id, JobWatcher* watcher) {
  // Under mu_ throughout: a job leaving this worker moves its watchers to
  // the follower under mu_ too, so the watcher is found in one place or the
  // other.
  std::lock_guard<std::mutex> lock(mu_);
  follower_->Unfollow(id, watcher);
  auto it = active_.find(id);
  if (it == active_.end()) return;
  auto& watchers = it->second->watchers;
  watchers.erase(std::remove(watchers.begin(), watchers.end(), watcher), watchers.end());
}

void JobManager::StoreChanged(const std::string& job_id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++changes_;
    // A change to a job running here (a cancellation through another
    // worker) is read back at once rather than at the next renewal.
    if (!job_id.empty() && active_.count(job_id) > 0) renew_now_ = true;
    for (const FollowerRun* run : followers_) {
      if (run->job.id() == job_id) renew_now_ = true;
    }
  }
  wake_.notify_all();
  follower_->Wake();
}

void JobManager::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shutting_down_) return;
    shutting_down_ = true;
    for (auto& [id, active] : active_) active->Stop(StopReason::kPreempted);
    for (FollowerRun* run : followers_) run->Stop(StopReason::kPreempted);
  }
  Announce();  // no more slots: place no nodes here
  wake_.notify_all();
  // The workers release their jobs under leases the heartbeat still renews.
  for (std::thread& worker : workers_) worker.join();
  workers_.clear();
  {
    std::lock_guard<std::mutex> lock(mu_);
    workers_joined_ = true;
  }
  wake_.notify_all();
  if (heartbeat_.joinable()) heartbeat_.join();
  if (sweeper_.joinable()) sweeper_.join();
  follower_->Shutdown();
}

void JobManager::WorkerLoop() {
  uint64_t seen = 0;
  bool claim_now = true;  // at start, and after each job: more may be queued
  while (true) {
    AnnounceMark mark;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (!claim_now) {
        wake_.wait_for(lock, absl::ToChronoMilliseconds(options_.claim_poll_interval),
                       [&] { return shutting_down_ || changes_ != seen; });
      }
      if (shutting_down_) return;
      seen = changes_;
      mark = {announces_started_, announces_in_flight_ > 0};
    }
    claim_now = false;
    // Nodes of other workers' jobs first: those jobs wait for this worker.
    std::optional<NodeAssignment> node = NextAssignment();
    if (node.has_value()) {
      Occupy(mark);
      RunFollower(*std::move(node));
      claim_now = true;
      continue;
    }
    // The lease runs from before the claim, as the database counts it.
    const absl::Time claimed_at = absl::Now();
    absl::StatusOr<std::optional<v1::Job>> claimed =
        options_.store->Claim(options_.worker_id, options_.lease);
    if (!claimed.ok()) {
      LogError(absl::StrCat("claiming a job: ", claimed.status().ToString()));
      continue;
    }
    if (!claimed->has_value()) continue;
    Occupy(mark);
    // More may be queued: another idle worker thread tries too.
    StoreChanged();
    RunClaimed(**std::move(claimed), claimed_at);
    claim_now = true;
  }
}

void JobManager::Occupy(const AnnounceMark& mark) {
  bool stale = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++busy_;
    stale = mark.in_flight || announces_started_ != mark.started;
  }
  // An announcement counted before this slot was taken may have reached
  // the store after the claim or take that took it: say it again.
  if (stale) Announce();
}

std::optional<NodeAssignment> JobManager::NextAssignment() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!assignments_.empty()) {
      NodeAssignment next = std::move(assignments_.front());
      assignments_.erase(assignments_.begin());
      return next;
    }
  }
  absl::StatusOr<std::vector<NodeAssignment>> taken =
      options_.store->TakeAssignments(options_.worker_id);
  if (!taken.ok()) {
    LogError(absl::StrCat("taking nodes of jobs placed here: ", taken.status().ToString()));
    return std::nullopt;
  }
  if (taken->empty()) return std::nullopt;
  NodeAssignment first = std::move(taken->front());
  if (taken->size() > 1) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      assignments_.insert(assignments_.end(), std::make_move_iterator(taken->begin() + 1),
                          std::make_move_iterator(taken->end()));
    }
    StoreChanged();  // the other idle threads run them
  }
  return first;
}

absl::StatusOr<v1::JobResult> JobManager::RunGuarded(const v1::Job& job, JobContext& context) {
  // Runners turn LibTorch errors into Status themselves; this is the last
  // line that keeps a stray exception from taking the daemon down.
  try {
    return options_.runner->Run(job, context);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("unexpected exception: ", e.what()));
  } catch (...) {
    return absl::InternalError("unexpected non-standard exception");
  }
}

void JobManager::RunFollower(NodeAssignment assignment) {
  auto run = std::make_unique<FollowerRun>();
  run->job = std::move(assignment.job);
  run->node_rank = assignment.node_rank;
  const v1::Job& job = run->job;
  run->metrics =
      run->local_metrics.StartJob(job.id(), job.spec().model(), job.effective_precision());
  const std::string what =
      absl::StrCat("job ", job.id(), ": node ", run->node_rank, " of ", job.nodes_size(),
                   " (attempt ", job.attempt(), ", node 0 on ", job.worker(), ")");
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shutting_down_) run->Stop(StopReason::kPreempted);
    followers_.push_back(run.get());
  }
  LogInfo(absl::StrCat(what, " running on ", options_.worker_id));
  FollowerContext context(*this, *run);
  const absl::StatusOr<v1::JobResult> result = RunGuarded(job, context);
  // Node 0 tells how the job ended; this node only logs its own part.
  LogInfo(absl::StrCat(what, " ended: ", result.ok() ? "OK" : result.status().ToString()));
  {
    std::lock_guard<std::mutex> lock(mu_);
    followers_.erase(std::remove(followers_.begin(), followers_.end(), run.get()),
                     followers_.end());
    --busy_;
  }
  Announce();
}

void JobManager::CheckFollowers() {
  std::vector<std::pair<std::string, int32_t>> runs;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const FollowerRun* run : followers_) runs.push_back({run->job.id(), run->job.attempt()});
  }
  for (const auto& [id, attempt] : runs) {
    absl::StatusOr<v1::Job> stored = options_.store->Get(id);
    if (!stored.ok() && !absl::IsNotFound(stored.status())) continue;  // asked again next time
    // Only an attempt that is over stops a follower: a cancellation reaches
    // node 0, whose ranks stop every rank at one step (stopping here first
    // would fail node 0's collectives and cost the job an attempt).
    const bool over =
        !stored.ok() || stored->state() != v1::RUNNING || stored->attempt() != attempt;
    if (!over) continue;
    std::lock_guard<std::mutex> lock(mu_);
    for (FollowerRun* run : followers_) {
      if (run->job.id() == id && run->job.attempt() == attempt) run->Stop(StopReason::kLeaseLost);
    }
  }
}

void JobManager::Announce() {
  // One at a time: a count taken later is also written later, so a stale
  // one (the heartbeat's, taken while a job was ending) never has the last
  // word.
  std::lock_guard<std::mutex> serial(announce_mu_);
  int free_slots = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!shutting_down_) {
      free_slots = options_.max_concurrent_jobs - busy_ - static_cast<int>(assignments_.size());
    }
    ++announces_started_;
    ++announces_in_flight_;
  }
  absl::Status status =
      options_.store->AnnounceWorker(options_.worker_id, std::max(0, free_slots), options_.lease);
  if (!status.ok()) LogError(absl::StrCat("announcing free job slots: ", status.ToString()));
  std::lock_guard<std::mutex> lock(mu_);
  --announces_in_flight_;
}

void JobManager::RunClaimed(v1::Job claimed, absl::Time claimed_at) {
  const std::string id = claimed.id();
  auto owned = std::make_unique<ActiveJob>();
  ActiveJob& active = *owned;
  active.lease = {options_.worker_id, claimed.attempt()};
  active.claimed_at = claimed_at;
  active.lease_valid_until_ns = absl::ToUnixNanos(active.claimed_at + options_.lease);
  if (claimed.spec().has_max_duration()) {
    const absl::Duration limit = ToDuration(claimed.spec().max_duration());
    if (limit > absl::ZeroDuration()) active.deadline = absl::Now() + limit;
  }
  active.job = std::move(claimed);
  active.last_persisted = active.claimed_at;  // the claim wrote the job
  // What the store holds up to the claim reaches this worker's watchers of
  // the job first; from here on this worker streams its events itself.
  follower_->CatchUp(id);
  v1::Job job;
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (auto it = active_.find(id); it != active_.end()) {
      // This worker lost the job's lease (it was frozen past it) and has
      // claimed the job's next attempt: the old run stops first.
      LoseLocked(*it->second, "this worker claimed the job's next attempt");
      // The new attempt's lease is renewed while it waits.
      reclaiming_.insert(id);
      wake_.wait(lock, [&] { return active_.count(id) == 0; });
      reclaiming_.erase(id);
    }
    active.metrics =
        options_.metrics->StartJob(id, active.job.spec().model(), active.job.effective_precision());
    // A shutdown that began while this job was claimed releases it at once.
    if (shutting_down_) active.Stop(StopReason::kPreempted);
    if (active.job.cancel_requested()) active.Stop(StopReason::kCancelled);
    job = active.job;
    active.watchers = follower_->Take(id);
    active_.emplace(id, std::move(owned));
  }
  RefreshGauges();
  LogInfo(absl::StrCat(
      "job ", id, " running (attempt ", job.attempt(), " on ", options_.worker_id,
      job.nodes_size() > 0 ? absl::StrCat(", nodes ", absl::StrJoin(job.nodes(), ", ")) : "", ")"));
  Context context(*this, active);
  const absl::StatusOr<v1::JobResult> result = RunGuarded(job, context);
  FinishRun(active, result);  // and `active` is gone
  {
    std::lock_guard<std::mutex> lock(mu_);
    --busy_;
  }
  wake_.notify_all();  // the heartbeat ends once a shutdown's last job is out
  Announce();
  RefreshGauges();
}

// How the run ended, applied to `job`: the event that says so.
v1::JobEvent JobManager::EndOfRun(const ActiveJob& active,
                                  const absl::StatusOr<v1::JobResult>& result, v1::Job& job) {
  const StopReason stop = active.stop.load();
  const absl::Time now = absl::Now();
  // A user's cancellation wins over a shutdown's release.
  if (stop == StopReason::kPreempted && absl::IsCancelled(result.status()) &&
      !job.cancel_requested()) {
    const std::string message =
        job.has_checkpoint()
            ? absl::StrCat("released: worker ", options_.worker_id,
                           " shut down; the job resumes from its checkpoint at step ",
                           job.checkpoint().step())
            : absl::StrCat("released: worker ", options_.worker_id,
                           " shut down before the job's first checkpoint");
    MarkReleased(job, message, now);
    return MakeJobEvent(v1::JobEvent::STATE_CHANGED, job, message);
  }
  if (stop == StopReason::kNone && IsDataParallel(job.spec()) && absl::IsAborted(result.status())) {
    // Another node's worker shut down: every rank stopped at one step and
    // rank 0 kept a checkpoint there. As for this worker's own shutdown.
    const std::string message = absl::StrCat("released: ", result.status().message());
    MarkReleased(job, message, now);
    return MakeJobEvent(v1::JobEvent::STATE_CHANGED, job, message);
  }
  if (stop == StopReason::kNone && IsDataParallel(job.spec()) &&
      (absl::IsUnavailable(result.status()) || absl::IsDeadlineExceeded(result.status())) &&
      options_.store->kind() == "postgresql") {
    // A rank died, a collective timed out, or a node never joined the
    // rendezvous: the whole job resumes from its last checkpoint, on
    // whichever workers are free then. (With SQLite there is only this
    // worker, whose ranks just failed: it fails.)
    const std::string error(result.status().message());
    if (MarkRankFailed(job, error, now)) {
      return MakeJobEvent(v1::JobEvent::STATE_CHANGED, job, absl::StrCat("re-queued: ", error));
    }
    options_.metrics->JobFinished(v1::JobState_Name(job.state()), job.effective_precision());
    return MakeJobEvent(v1::JobEvent::FINISHED, job,
                        absl::StrCat(v1::JobState_Name(job.state()), ": ", job.error()));
  }
  v1::JobState state = v1::FAILED;
  std::string error;
  if (result.ok()) {
    state = v1::SUCCEEDED;
    *job.mutable_result() = *result;
  } else if (active.timed_out.load() && stop == StopReason::kCancelled && !job.cancel_requested()) {
    error = absl::StrCat("DEADLINE_EXCEEDED: the job exceeded its max_duration of ",
                         absl::FormatDuration(ToDuration(job.spec().max_duration())),
                         " and was stopped (", result.status().message(),
                         "); resume it with resume_from if it wrote a checkpoint");
  } else if ((stop == StopReason::kCancelled || job.cancel_requested()) &&
             absl::IsCancelled(result.status())) {
    state = v1::CANCELLED;
  } else {
    error = std::string(result.status().message());
  }
  MarkFinished(job, state, error, now);
  options_.metrics->JobFinished(v1::JobState_Name(state), job.effective_precision());
  return MakeJobEvent(v1::JobEvent::FINISHED, job,
                      error.empty() ? v1::JobState_Name(state)
                                    : absl::StrCat(v1::JobState_Name(state), ": ", error));
}

void JobManager::FinishRun(ActiveJob& active, const absl::StatusOr<v1::JobResult>& result) {
  v1::Job job;
  {
    std::lock_guard<std::mutex> lock(mu_);
    job = active.job;
  }
  if (active.stop.load() == StopReason::kLeaseLost) {
    std::lock_guard<std::mutex> lock(mu_);
    LoseLocked(active, "its lease expired");
    LogWarning(absl::StrCat("job ", job.id(), ": stopped without writing; the job is no longer ",
                            "this worker's"));
    options_.metrics->RetireJob(job.id());
    active_.erase(job.id());
    return;
  }
  v1::JobEvent event = EndOfRun(active, result, job);
  {
    // Never behind the store: a Get here must not answer older than one
    // that read the store a moment before.
    std::lock_guard<std::mutex> lock(mu_);
    active.job = job;
    active.finishing = true;
  }
  const bool written = WriteFinal(active, job, event);
  // Before anyone can see the job leave: the gauges count it already.
  RefreshGauges();
  std::lock_guard<std::mutex> lock(mu_);
  if (!written) {
    LoseLocked(active, "its final state was refused");
  } else {
    PublishLocked(active, event);
    if (event.type() != v1::JobEvent::FINISHED) {
      // Released: the next attempt runs elsewhere; these watchers follow
      // the store from this event on.
      for (JobWatcher* w : active.watchers) follower_->Follow(job.id(), w, event.sequence());
    }
    active.watchers.clear();
    LogInfo(absl::StrCat("job ", job.id(), " ", event.message()));
  }
  // From here on Get, Watch and Delete read the store.
  options_.metrics->RetireJob(job.id());
  active_.erase(job.id());
}

bool JobManager::WriteFinal(ActiveJob& active, const v1::Job& job, v1::JobEvent& event) {
  absl::Duration backoff = absl::Milliseconds(100);
  while (true) {
    absl::StatusOr<int64_t> seq = options_.store->Update(job, active.lease, &event);
    if (seq.ok()) {
      event.set_sequence(*seq);
      return true;
    }
    if (!absl::IsUnavailable(seq.status()) && !absl::IsDeadlineExceeded(seq.status()) &&
        !absl::IsResourceExhausted(seq.status()) && !absl::IsAborted(seq.status())) {
      // Not the database being away: retrying would not help.
      LogError(
          absl::StrCat("job ", job.id(), ": writing its final state: ", seq.status().ToString()));
      return false;
    }
    // The write is fenced, so retrying is safe for as long as no other
    // worker could have taken the job over (and for a lease beyond, as the
    // other workers' sweeps may be cut off from the database too).
    if (absl::IsAborted(seq.status()) ||
        absl::ToUnixNanos(absl::Now() - options_.lease) > active.lease_valid_until_ns.load()) {
      // Another worker owns the job now (or will once the sweep sees the
      // lease): its attempt decides how the job ends.
      LogWarning(absl::StrCat("job ", job.id(), ": final state not written, the job is no longer ",
                              "this worker's: ", seq.status().message()));
      return false;
    }
    LogError(absl::StrCat("job ", job.id(), ": writing its final state: ", seq.status().ToString(),
                          "; retrying"));
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(2));
  }
}

void JobManager::HeartbeatLoop() {
  const absl::Duration interval = options_.lease / 3;
  // Runs on through shutdown until the workers have released their jobs
  // (a claim in flight included).
  const auto done = [this] { return workers_joined_; };
  absl::Time last_sweep = absl::Now();
  std::unique_lock<std::mutex> lock(mu_);
  while (!done()) {
    wake_.wait_for(lock, absl::ToChronoMilliseconds(interval),
                   [&] { return done() || renew_now_; });
    if (done()) return;
    renew_now_ = false;
    lock.unlock();
    // A wake-up for a job running here (every persisted progress of it
    // notifies too) renews at once; the sweep keeps its own pace.
    const bool sweep = absl::Now() - last_sweep >= interval;
    if (sweep) last_sweep = absl::Now();
    Heartbeat(sweep);
    lock.lock();
  }
}

void JobManager::Heartbeat(bool sweep) {
  const absl::Time start = absl::Now();
  // Only the jobs still running here: one given up on (its lease ran out
  // while the database was unreachable) is left to the expiry sweep.
  std::vector<std::string> running;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, active] : active_) {
      if (active->stop.load() != StopReason::kLeaseLost) running.push_back(id);
    }
    running.insert(running.end(), reclaiming_.begin(), reclaiming_.end());
  }
  absl::StatusOr<std::vector<HeldLease>> held =
      options_.store->Renew(options_.worker_id, options_.lease, running);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!held.ok()) {
      LogError(absl::StrCat("renewing leases: ", held.status().ToString()));
      // Each job stops by itself once its lease may have run out.
    } else {
      std::set<std::pair<std::string, int32_t>> ours;
      for (const HeldLease& h : *held) {
        ours.insert({h.job_id, h.attempt});
        auto it = active_.find(h.job_id);
        if (it == active_.end() || h.attempt != it->second->lease.attempt) continue;
        it->second->lease_valid_until_ns = absl::ToUnixNanos(start + options_.lease);
        if (h.cancel_requested && !it->second->job.cancel_requested()) {
          it->second->job.set_cancel_requested(true);
          it->second->Stop(StopReason::kCancelled);
        }
      }
      for (const std::string& id : running) {
        // Only jobs the renewal named: one claimed since was not in it.
        auto it = active_.find(id);
        if (it != active_.end() && !it->second->finishing &&
            !ours.count({id, it->second->lease.attempt})) {
          LoseLocked(*it->second, "the store no longer lists this worker's lease");
        }
      }
    }
  }
  // After the renewal, which must not wait on them.
  Announce();
  CheckFollowers();
  if (!sweep) return;
  absl::StatusOr<std::vector<v1::Job>> expired = options_.store->ExpireLeases();
  if (!expired.ok()) {
    LogError(absl::StrCat("lease expiry sweep: ", expired.status().ToString()));
  } else {
    for (const v1::Job& job : *expired) {
      const bool requeued = job.state() == v1::QUEUED;
      LogWarning(
          absl::StrCat("job ", job.id(), ": its worker's lease expired; ",
                       requeued ? absl::StrCat("queued again as attempt ", job.attempt())
                                : absl::StrCat(v1::JobState_Name(job.state()), ": ", job.error())));
      if (!requeued) {
        options_.metrics->JobFinished(v1::JobState_Name(job.state()), job.effective_precision());
      }
    }
    if (!expired->empty()) StoreChanged();
  }
  RefreshGauges();
}

void JobManager::RefreshGauges() {
  absl::StatusOr<JobCounts> counts = options_.store->Count();
  if (!counts.ok()) return;  // the next heartbeat tries again
  options_.metrics->SetJobsQueued(static_cast<int>(counts->queued));
  options_.metrics->SetJobsRunning(static_cast<int>(counts->running));
}

void JobManager::PublishLocked(ActiveJob& active, const v1::JobEvent& event) {
  for (JobWatcher* watcher : active.watchers) watcher->OnJobEvent(event);
}

void JobManager::LoseLocked(ActiveJob& active, const std::string& why) {
  if (active.stop.exchange(StopReason::kLeaseLost) != StopReason::kLeaseLost) {
    LogWarning(
        absl::StrCat("job ", active.job.id(), ": lease lost, stopping it at once (", why, ")"));
  }
  // Its watchers follow whichever worker runs it next, through the store.
  for (JobWatcher* w : active.watchers) {
    follower_->Follow(active.job.id(), w, active.last_seq);
  }
  active.watchers.clear();
}

}  // namespace mantissa
