#ifndef MANTISSA_SERVER_SERVING_MODEL_CATALOG_SYNC_H_
#define MANTISSA_SERVER_SERVING_MODEL_CATALOG_SYNC_H_

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/serving/model_catalog.h"

namespace mantissa {

// Follows a ModelCatalog for one daemon, as Triton's explicit model control
// does: a change recorded through another daemon (a record whose generation
// is newer than the one this daemon has seen) is handed to `apply` on a
// thread of its own, woken by Changed() (a store notification) and every
// `recheck` in case a notification was lost. Changes are state, not a log:
// only each model's latest record is applied. Thread-safe.
class ModelCatalogSync {
 public:
  struct Options {
    ModelCatalog* catalog = nullptr;  // not owned; outlives this; required
    absl::Duration recheck = absl::Seconds(10);
    // Brings this daemon in line with `record`. Runs on the sync thread.
    // False: not yet (a load failed, or the shared volume does not show the
    // new files yet); the record is applied again at the next sync.
    std::function<bool(const ModelCatalogRecord& record)> apply;
  };

  static absl::StatusOr<std::unique_ptr<ModelCatalogSync>> Create(Options options);
  ~ModelCatalogSync();  // Stop()

  // Reads the catalog and marks every record as seen, for the start-up load
  // of the repository as it stands. Empty (and logged) when the catalog
  // cannot be read: the first sync then applies every record.
  std::vector<ModelCatalogRecord> Adopt();
  // Starts the sync thread (once), which syncs at once and then whenever
  // woken or `recheck` passed.
  void Start();
  // Wakes the sync thread. Cheap and non-blocking: callable from a store's
  // listener thread.
  void Changed();
  // Stops and joins the sync thread. Idempotent.
  void Stop();

  // Records a change made through this daemon, which is therefore not
  // applied here again. A publish that fails is logged and retried at each
  // sync, until it succeeds or another daemon records a newer change of the
  // model (which then wins): the local change stands either way.
  void Publish(const std::string& name, bool loaded);
  // Whether `record` is still the newest change of its model this daemon
  // knows of (nothing was published through it since it was read).
  bool IsLatest(const ModelCatalogRecord& record) const;

  // Reads the catalog, retries failed publishes and applies what changed,
  // on the calling thread. The sync thread's step; tests call it directly.
  void SyncOnce();

 private:
  struct PendingPublish {
    bool loaded = false;
    int64_t after_generation = 0;  // the generation seen when it failed
  };

  explicit ModelCatalogSync(Options options) : options_(std::move(options)) {}
  void Run();
  // Needs mu_. The records newer than seen, now marked seen.
  std::vector<ModelCatalogRecord> TakeNewer(const std::vector<ModelCatalogRecord>& records);
  // Needs mu_. Publishes again what failed, unless a newer record came.
  void RetryPending(const std::vector<ModelCatalogRecord>& records);

  const Options options_;

  // Held across catalog calls, so that a publish and the read of the records
  // are ordered: this daemon never takes its own change for another's.
  mutable std::mutex mu_;
  std::map<std::string, int64_t> seen_;            // guarded by mu_
  std::map<std::string, PendingPublish> pending_;  // guarded by mu_

  std::mutex wake_mu_;
  std::condition_variable wake_cv_;
  bool woken_ = false;     // guarded by wake_mu_
  bool stopping_ = false;  // guarded by wake_mu_
  std::thread thread_;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_SERVING_MODEL_CATALOG_SYNC_H_
