#include "server/serving/model_catalog_sync.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "server/common/logging.h"

namespace mantissa {

absl::StatusOr<std::unique_ptr<ModelCatalogSync>> ModelCatalogSync::Create(Options options) {
  if (options.catalog == nullptr) return absl::InvalidArgumentError("catalog: required");
  if (!options.apply) return absl::InvalidArgumentError("apply: required");
  if (options.recheck <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("catalog_recheck: ", absl::FormatDuration(options.recheck), ", expected > 0"));
  }
  return std::unique_ptr<ModelCatalogSync>(new ModelCatalogSync(std::move(options)));
}

ModelCatalogSync::~ModelCatalogSync() { Stop(); }

std::vector<ModelCatalogRecord> ModelCatalogSync::Adopt() {
  std::lock_guard<std::mutex> lock(mu_);
  absl::StatusOr<std::vector<ModelCatalogRecord>> records = options_.catalog->Records();
  if (!records.ok()) {
    LogWarning(absl::StrCat("model catalog: cannot read it at start-up (",
                            records.status().message(), "); serving what is on disk"));
    return {};
  }
  for (const ModelCatalogRecord& record : *records) seen_[record.name] = record.generation;
  return *std::move(records);
}

void ModelCatalogSync::Start() {
  std::lock_guard<std::mutex> lock(wake_mu_);
  if (stopping_ || thread_.joinable()) return;
  // The first sync runs at once: it applies what changed while this daemon
  // loaded its repository.
  woken_ = true;
  thread_ = std::thread([this] { Run(); });
}

void ModelCatalogSync::Changed() {
  {
    std::lock_guard<std::mutex> lock(wake_mu_);
    woken_ = true;
  }
  wake_cv_.notify_one();
}

void ModelCatalogSync::Stop() {
  std::thread thread;
  {
    std::lock_guard<std::mutex> lock(wake_mu_);
    stopping_ = true;
    thread = std::move(thread_);
  }
  wake_cv_.notify_one();
  if (thread.joinable()) thread.join();
}

void ModelCatalogSync::Run() {
  const auto recheck = absl::ToChronoMilliseconds(options_.recheck);
  while (true) {
    {
      std::unique_lock<std::mutex> lock(wake_mu_);
      wake_cv_.wait_for(lock, recheck, [this] { return woken_ || stopping_; });
      if (stopping_) return;
      woken_ = false;
    }
    SyncOnce();
  }
}

void ModelCatalogSync::Publish(const std::string& name, bool loaded) {
  std::lock_guard<std::mutex> lock(mu_);
  absl::StatusOr<int64_t> generation = options_.catalog->PublishChange(name, loaded);
  if (generation.ok()) {
    int64_t& seen = seen_[name];
    seen = std::max(seen, *generation);
    pending_.erase(name);
    return;
  }
  LogWarning(absl::StrCat("model catalog: cannot record the change of model ", name, " (",
                          generation.status().message(),
                          "); other daemons learn of it when it is retried"));
  pending_[name] = PendingPublish{loaded, seen_[name]};
}

bool ModelCatalogSync::IsLatest(const ModelCatalogRecord& record) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = seen_.find(record.name);
  return it == seen_.end() || it->second <= record.generation;
}

void ModelCatalogSync::SyncOnce() {
  std::vector<ModelCatalogRecord> changed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    absl::StatusOr<std::vector<ModelCatalogRecord>> records = options_.catalog->Records();
    if (!records.ok()) {
      LogWarning(absl::StrCat("model catalog: cannot read it (", records.status().message(),
                              "); retrying in ", absl::FormatDuration(options_.recheck)));
      return;
    }
    RetryPending(*records);
    changed = TakeNewer(*records);
  }
  // Applied outside mu_: a load takes seconds, and publishes must not wait.
  for (const ModelCatalogRecord& record : changed) {
    if (options_.apply(record)) continue;
    std::lock_guard<std::mutex> lock(mu_);
    int64_t& seen = seen_[record.name];
    if (seen == record.generation) seen = record.generation - 1;
  }
}

void ModelCatalogSync::RetryPending(const std::vector<ModelCatalogRecord>& records) {
  for (const ModelCatalogRecord& record : records) {
    auto it = pending_.find(record.name);
    // Another daemon changed the model after this one failed to publish:
    // the newer change wins.
    if (it != pending_.end() && record.generation > it->second.after_generation) {
      pending_.erase(it);
    }
  }
  for (auto it = pending_.begin(); it != pending_.end();) {
    absl::StatusOr<int64_t> generation =
        options_.catalog->PublishChange(it->first, it->second.loaded);
    if (!generation.ok()) return;  // the catalog is still unreachable; next sync
    int64_t& seen = seen_[it->first];
    seen = std::max(seen, *generation);
    LogInfo(absl::StrCat("model catalog: recorded the change of model ", it->first));
    it = pending_.erase(it);
  }
}

std::vector<ModelCatalogRecord> ModelCatalogSync::TakeNewer(
    const std::vector<ModelCatalogRecord>& records) {
  std::vector<ModelCatalogRecord> newer;
  for (const ModelCatalogRecord& record : records) {
    int64_t& seen = seen_[record.name];
    if (record.generation <= seen) continue;
    seen = record.generation;
    newer.push_back(record);
  }
  return newer;
}

}  // namespace mantissa
