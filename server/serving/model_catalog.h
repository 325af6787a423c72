#ifndef MANTISSA_SERVER_SERVING_MODEL_CATALOG_H_
#define MANTISSA_SERVER_SERVING_MODEL_CATALOG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace mantissa {

// One model of a model repository shared by several daemons, as the catalog
// records it: every change made through any daemon (an export, a
// registration, a load, an unload, a deletion) bumps its generation.
struct ModelCatalogRecord {
  std::string name;
  int64_t generation = 0;
  bool loaded = false;  // false: unloaded (or deleted) on every daemon
};

// Where the daemons sharing one model repository record its changes (the
// job store's models table), so that each loads what another exported.
// Serving depends on this interface only; the daemon adapts its job store to
// it. Implementations are thread-safe.
class ModelCatalog {
 public:
  virtual ~ModelCatalog() = default;

  // Records a change of model `name`, committed after the files changed:
  // bumps its generation and sets `loaded`; returns the new generation.
  virtual absl::StatusOr<int64_t> PublishChange(const std::string& name, bool loaded) = 0;
  // Every model's latest record.
  virtual absl::StatusOr<std::vector<ModelCatalogRecord>> Records() = 0;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_SERVING_MODEL_CATALOG_H_
