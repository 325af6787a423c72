#ifndef MANTISSA_SERVER_SERVING_MODEL_REPOSITORY_H_
#define MANTISSA_SERVER_SERVING_MODEL_REPOSITORY_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "mantissa/v1/serving.pb.h"

namespace mantissa {

// The model repository on disk, laid out as Triton's:
//   <root>/NAME/VERSION/config.json   (v1::ModelConfig in protobuf's JSON mapping)
//   <root>/NAME/VERSION/<weights_file>
// Versions count up from 1. A version appears atomically: it is written in a
// staging directory under <root>/.staging/ and renamed into place, so a
// crash never leaves a half-written version. Free of torch. Thread-safe.
// A shared repository (several daemons on one volume) also serialises its
// writers across processes, with an flock on <root>/.lock.
class ModelRepository {
 public:
  struct Options {
    std::string root;  // <state_dir>/models; created if missing
    // Versions one model may hold; AddVersion refuses one more with
    // RESOURCE_EXHAUSTED, so repeated exports cannot fill the disk.
    int max_versions = 16;
    // Other daemons write to the same root: versions are numbered and
    // deleted under <root>/.lock, and at start-up only staging entries
    // untouched for an hour are removed (the others are being written).
    bool shared = false;
  };

  static absl::StatusOr<std::unique_ptr<ModelRepository>> Create(Options options);

  // INVALID_ARGUMENT unless `name` matches [A-Za-z0-9][A-Za-z0-9_.-]{0,63}
  // (the message names `field` and the pattern).
  static absl::Status ValidateName(const std::string& name, const std::string& field = "name");

  // Models with at least one complete version, sorted.
  std::vector<std::string> ModelNames() const;
  // Complete versions of `name`, ascending; empty when none.
  std::vector<int64_t> Versions(const std::string& name) const;
  // NOT_FOUND for a missing version; INVALID_ARGUMENT for an unreadable or
  // inconsistent config.json (naming the file).
  absl::StatusOr<v1::ModelConfig> ReadConfig(const std::string& name, int64_t version) const;
  std::string VersionDir(const std::string& name, int64_t version) const;

  // Adds the next version of `name`. `write_files` fills a fresh staging
  // directory (it may also set fields of `config`, e.g. weights_file); then
  // name, version and create_time are set, config.json is written and the
  // directory is synced and renamed into place. Returns the final config.
  // Removes `version` of `name` (0: every version, and the model), each
  // version atomically: renamed into staging, synced, then deleted.
  // NOT_FOUND for a missing model or version.
  absl::Status DeleteVersion(const std::string& name, int64_t version);

  // <root>/NAME/model.json: what holds for every version of `name`. Absent =
  // the defaults (version policy latest 1); INVALID_ARGUMENT for an
  // unreadable file (naming it).
  absl::StatusOr<v1::ModelSettings> ReadSettings(const std::string& name) const;
  // Replaces NAME/model.json atomically (written beside it, synced, renamed
  // over it). NOT_FOUND unless `name` has a version. Deleting every version
  // of the model removes it.
  absl::Status WriteSettings(const std::string& name, const v1::ModelSettings& settings);

  absl::StatusOr<v1::ModelConfig> AddVersion(
      const std::string& name, v1::ModelConfig config,
      const std::function<absl::Status(const std::string& dir, v1::ModelConfig& config)>&
          write_files);

 private:
  explicit ModelRepository(Options options) : options_(std::move(options)) {}

  const Options options_;
  std::mutex add_mu_;  // serialises AddVersion's choice of the next number
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_SERVING_MODEL_REPOSITORY_H_
