#include "server/jobs/event_follower.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/common/logging.h"

namespace mantissa {
namespace {

// Events read per job and pass; a watcher far behind catches up over passes.
constexpr int kBatch = 256;

}  // namespace

EventFollower::EventFollower(Options options) : options_(std::move(options)) {
  thread_ = std::thread([this] { Loop(); });
}

EventFollower::~EventFollower() { Shutdown(); }

void EventFollower::Follow(const std::string& job_id, JobWatcher* watcher, int64_t after) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    followers_[job_id].push_back({watcher, after});
    woken_ = true;
  }
  wake_.notify_one();
}

void EventFollower::Unfollow(const std::string& job_id, JobWatcher* watcher) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = followers_.find(job_id);
  if (it == followers_.end()) return;
  auto& list = it->second;
  list.erase(std::remove_if(list.begin(), list.end(),
                            [&](const Follower& f) { return f.watcher == watcher; }),
             list.end());
  if (list.empty()) followers_.erase(it);
}

int64_t EventFollower::LeastAfter(const std::vector<Follower>& followers) {
  int64_t after = std::numeric_limits<int64_t>::max();
  for (const Follower& f : followers) after = std::min(after, f.after);
  return after;
}

void EventFollower::CatchUp(const std::string& job_id) {
  // Everything, however far behind the slowest watcher is.
  while (true) {
    int64_t after = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = followers_.find(job_id);
      if (it == followers_.end()) return;
      after = LeastAfter(it->second);
    }
    if (Poll(job_id, after) < kBatch) return;
  }
}

std::vector<JobWatcher*> EventFollower::Take(const std::string& job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<JobWatcher*> watchers;
  auto it = followers_.find(job_id);
  if (it == followers_.end()) return watchers;
  for (const Follower& f : it->second) watchers.push_back(f.watcher);
  followers_.erase(it);
  return watchers;
}

int EventFollower::Count(const std::string& job_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = followers_.find(job_id);
  return it == followers_.end() ? 0 : static_cast<int>(it->second.size());
}

void EventFollower::Wake() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    woken_ = true;
  }
  wake_.notify_one();
}

void EventFollower::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  wake_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void EventFollower::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    wake_.wait_for(lock, absl::ToChronoMilliseconds(options_.poll_interval),
                   [this] { return woken_ || stopping_; });
    if (stopping_) return;
    woken_ = false;
    // Each job from the position of its least advanced watcher.
    std::vector<std::pair<std::string, int64_t>> jobs;
    for (const auto& [id, list] : followers_) jobs.emplace_back(id, LeastAfter(list));
    lock.unlock();
    for (const auto& [id, after] : jobs) Poll(id, after);
    lock.lock();
  }
}

int EventFollower::Poll(const std::string& job_id, int64_t after) {
  absl::StatusOr<std::vector<StoredEvent>> events =
      options_.store->EventsAfter(job_id, after, kBatch);
  if (absl::IsNotFound(events.status())) {
    // Deleted (it had ended) before these watchers read its FINISHED: their
    // streams end all the same.
    v1::JobEvent gone;
    gone.set_type(v1::JobEvent::FINISHED);
    gone.mutable_job()->set_id(job_id);
    gone.set_message("the job was deleted");
    std::lock_guard<std::mutex> lock(mu_);
    auto it = followers_.find(job_id);
    if (it != followers_.end()) {
      for (const Follower& f : it->second) f.watcher->OnJobEvent(gone);
      followers_.erase(it);
    }
    return 0;
  }
  if (!events.ok()) {
    // Tried again at the next pass; the watchers wait meanwhile.
    LogWarning(absl::StrCat("watch of job ", job_id, ": ", events.status().message()));
    return 0;
  }
  const int read = static_cast<int>(events->size());
  if (read == 0) return 0;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = followers_.find(job_id);
  if (it == followers_.end()) return read;
  auto& list = it->second;
  for (Follower& f : list) {
    for (const StoredEvent& e : *events) {
      if (e.sequence <= f.after) continue;
      f.after = e.sequence;
      f.watcher->OnJobEvent(e.event);
      if (e.event.type() == v1::JobEvent::FINISHED) f.after = std::numeric_limits<int64_t>::max();
    }
  }
  // A watcher past its job's FINISHED is done.
  list.erase(std::remove_if(
                 list.begin(), list.end(),
                 [](const Follower& f) { return f.after == std::numeric_limits<int64_t>::max(); }),
             list.end());
  if (list.empty()) followers_.erase(it);
  // More may be waiting beyond this batch.
  if (read == kBatch) woken_ = true;
  return read;
}

}  // namespace mantissa
