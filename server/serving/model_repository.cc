#include "server/serving/model_repository.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "server/common/file_sync.h"
#include "server/common/status_macros.h"

namespace mantissa {
namespace {

namespace fs = std::filesystem;

constexpr char kStagingDir[] = ".staging";
constexpr char kConfigFile[] = "config.json";
constexpr char kSettingsFile[] = "model.json";
constexpr char kNamePattern[] = "[A-Za-z0-9][A-Za-z0-9_.-]{0,63}";
constexpr char kLockFile[] = ".lock";
// A staging entry of a shared repository this long untouched was left by a
// daemon that died; a live export writes to it.
constexpr auto kStaleStaging = std::chrono::hours(1);

// Version directories are canonical decimal numbers ("1", "12"; not "01"),
// so that VersionDir(name, v) names exactly the directory that was listed.
bool ParseVersion(const std::string& entry, int64_t* version) {
  if (entry.empty() || entry[0] == '0') return false;
  for (char c : entry) {
    if (!absl::ascii_isdigit(c)) return false;
  }
  return absl::SimpleAtoi(entry, version) && *version > 0;
}

// Every numeric entry under `model_dir`, complete or not: AddVersion must
// never pick a number whose directory already exists.
std::vector<int64_t> NumericEntries(const std::string& model_dir, bool complete_only) {
  std::vector<int64_t> versions;
  std::error_code ec;
  for (fs::directory_iterator it(model_dir, ec), end; !ec && it != end; it.increment(ec)) {
    int64_t version;
    if (!ParseVersion(it->path().filename().string(), &version)) continue;
    std::error_code ec2;
    if (!it->is_directory(ec2)) continue;
    if (complete_only && !fs::is_regular_file(it->path() / kConfigFile, ec2)) continue;
    versions.push_back(version);
  }
  std::sort(versions.begin(), versions.end());
  return versions;
}

absl::Status WriteFileSynced(const std::string& path, const std::string& contents) {
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << contents;
    out.close();
    if (!out) return absl::InternalError(absl::StrCat(path, ": write failed"));
  }
  return FsyncFile(path);
}

// Flushes every file under `dir` (write_files may have written without
// syncing) and then the directories themselves, deepest first.
absl::Status FsyncTree(const std::string& dir) {
  std::vector<std::string> dirs = {dir};
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code ec2;
    if (it->is_symlink(ec2)) continue;
    if (it->is_directory(ec2)) {
      dirs.push_back(it->path().string());
    } else if (it->is_regular_file(ec2)) {
      RETURN_IF_ERROR(FsyncFile(it->path().string()));
    }
  }
  if (ec) return absl::InternalError(absl::StrCat(dir, ": listing: ", ec.message()));
  for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) RETURN_IF_ERROR(FsyncDir(*it));
  return absl::OkStatus();
}

std::string RandomSuffix() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  std::ostringstream s;
  s << std::hex << rng();
  return s.str();
}

// Removes a staging directory on every early return of AddVersion.
class StagingCleanup {
 public:
  explicit StagingCleanup(std::string dir) : dir_(std::move(dir)) {}
  ~StagingCleanup() {
    if (dir_.empty()) return;
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  void Release() { dir_.clear(); }

 private:
  std::string dir_;
};

// The newest modification time of anything under `path` (itself included).
fs::file_time_type NewestWrite(const fs::path& path) {
  std::error_code ec;
  fs::file_time_type newest = fs::last_write_time(path, ec);
  for (fs::recursive_directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code ec2;
    const fs::file_time_type t = it->last_write_time(ec2);
    if (!ec2) newest = std::max(newest, t);
  }
  return newest;
}

// Whatever is in staging was being written when a daemon stopped; it never
// became a version. In a shared repository, only what nobody touches any
// more.
absl::Status CleanStaging(const fs::path& staging, bool shared) {
  std::error_code ec;
  if (!shared) {
    fs::remove_all(staging, ec);
  } else {
    const auto cutoff = fs::file_time_type::clock::now() - kStaleStaging;
    for (fs::directory_iterator it(staging, ec), end; !ec && it != end; it.increment(ec)) {
      std::error_code ec2;
      if (NewestWrite(it->path()) < cutoff) fs::remove_all(it->path(), ec2);
    }
    if (ec == std::errc::no_such_file_or_directory) ec.clear();
  }
  if (ec) {
    return absl::InternalError(
        absl::StrCat("model repository: cannot clean ", staging.string(), ": ", ec.message()));
  }
  return absl::OkStatus();
}

// Holds an exclusive flock on a shared repository's lock file while it
// lives (nothing for a repository of one daemon).
class WriterLock {
 public:
  static absl::StatusOr<WriterLock> Take(const std::string& root, bool shared) {
    if (!shared) return WriterLock(-1);
    const std::string path = (fs::path(root) / kLockFile).string();
    const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
      return absl::InternalError(
          absl::StrCat("model repository: cannot open ", path, ": ", std::strerror(errno)));
    }
    int rc;
    do {
      rc = flock(fd, LOCK_EX);
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) {
      const int error = errno;
      close(fd);
      return absl::InternalError(
          absl::StrCat("model repository: cannot lock ", path, ": ", std::strerror(error)));
    }
    return WriterLock(fd);
  }
  WriterLock(WriterLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  WriterLock& operator=(WriterLock&&) = delete;
  ~WriterLock() {
    if (fd_ >= 0) close(fd_);  // releases the flock
  }

 private:
  explicit WriterLock(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ModelRepository>> ModelRepository::Create(Options options) {
  if (options.root.empty()) return absl::InvalidArgumentError("model repository: empty root");
  if (options.max_versions < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("model repository: max_versions must be >= 1, got ", options.max_versions));
  }
  std::error_code ec;
  fs::create_directories(options.root, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("model repository: cannot create ", options.root, ": ", ec.message()));
  }
  RETURN_IF_ERROR(CleanStaging(fs::path(options.root) / kStagingDir, options.shared));
  return std::unique_ptr<ModelRepository>(new ModelRepository(std::move(options)));
}

absl::Status ModelRepository::ValidateName(const std::string& name, const std::string& field) {
  bool ok = !name.empty() && name.size() <= 64 && absl::ascii_isalnum(name[0]);
  for (char c : name) {
    if (!(absl::ascii_isalnum(c) || c == '_' || c == '.' || c == '-')) ok = false;
  }
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": '", name, "' is not a valid model name (", kNamePattern, ")"));
}

std::vector<std::string> ModelRepository::ModelNames() const {
  std::vector<std::string> names;
  std::error_code ec;
  for (fs::directory_iterator it(options_.root, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!ValidateName(name).ok()) continue;  // .staging and anything else foreign
    std::error_code ec2;
    if (!it->is_directory(ec2)) continue;
    if (!Versions(name).empty()) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<int64_t> ModelRepository::Versions(const std::string& name) const {
  if (!ValidateName(name).ok()) return {};
  return NumericEntries((fs::path(options_.root) / name).string(), /*complete_only=*/true);
}

std::string ModelRepository::VersionDir(const std::string& name, int64_t version) const {
  return (fs::path(options_.root) / name / std::to_string(version)).string();
}

absl::StatusOr<v1::ModelConfig> ModelRepository::ReadConfig(const std::string& name,
                                                            int64_t version) const {
  RETURN_IF_ERROR(ValidateName(name));
  const std::string path = (fs::path(VersionDir(name, version)) / kConfigFile).string();
  std::error_code ec;
  if (version <= 0 || !fs::is_regular_file(path, ec)) {
    return absl::NotFoundError(absl::StrCat("model ", name, " has no version ", version));
  }
  std::ifstream in(path, std::ios::binary);
  std::stringstream contents;
  contents << in.rdbuf();
  if (!in) return absl::InvalidArgumentError(absl::StrCat(path, ": cannot be read"));
  v1::ModelConfig config;
  google::protobuf::util::JsonParseOptions parse;
  parse.ignore_unknown_fields = true;  // configs written by newer daemons still load
  const auto status = google::protobuf::util::JsonStringToMessage(contents.str(), &config, parse);
  if (!status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a model config: ", std::string(status.message())));
  }
  if (config.name() != name || config.version() != version) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": says model '", config.name(),
                                                   "' version ", config.version(), ", expected '",
                                                   name, "' version ", version));
  }
  return config;
}

absl::Status ModelRepository::DeleteVersion(const std::string& name, int64_t version) {
  RETURN_IF_ERROR(ValidateName(name));
  std::lock_guard<std::mutex> lock(add_mu_);
  ASSIGN_OR_RETURN(const WriterLock writer, WriterLock::Take(options_.root, options_.shared));
  const fs::path model_dir = fs::path(options_.root) / name;
  std::vector<int64_t> doomed = NumericEntries(model_dir.string(), /*complete_only=*/false);
  if (version != 0) {
    if (std::find(doomed.begin(), doomed.end(), version) == doomed.end()) {
      return absl::NotFoundError(
          absl::StrCat("version: model ", name, " has no version ", version));
    }
    doomed = {version};
  } else if (doomed.empty()) {
    return absl::NotFoundError(absl::StrCat("name: no model '", name, "' in the repository"));
  }
  const fs::path staging_root = fs::path(options_.root) / kStagingDir;
  std::error_code ec;
  fs::create_directories(staging_root, ec);
  std::vector<fs::path> trashed;
  for (int64_t v : doomed) {
    // A rename is atomic: a crash leaves the version whole or gone (staging
    // is emptied at start-up).
    const fs::path trash = staging_root / absl::StrCat(name, "-", v, "-deleted-", RandomSuffix());
    fs::rename(VersionDir(name, v), trash, ec);
    if (ec) {
      return absl::InternalError(absl::StrCat("model repository: cannot remove ",
                                              VersionDir(name, v), ": ", ec.message()));
    }
    trashed.push_back(trash);
  }
  RETURN_IF_ERROR(FsyncDir(model_dir.string()));
  if (NumericEntries(model_dir.string(), /*complete_only=*/false).empty()) {
    fs::remove_all(model_dir, ec);
    RETURN_IF_ERROR(FsyncDir(options_.root));
  }
  for (const fs::path& trash : trashed) fs::remove_all(trash, ec);
  return absl::OkStatus();
}

absl::StatusOr<v1::ModelSettings> ModelRepository::ReadSettings(const std::string& name) const {
  RETURN_IF_ERROR(ValidateName(name));
  const std::string path = (fs::path(options_.root) / name / kSettingsFile).string();
  v1::ModelSettings settings;
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return settings;
  std::ifstream in(path, std::ios::binary);
  std::stringstream contents;
  contents << in.rdbuf();
  if (!in) return absl::InvalidArgumentError(absl::StrCat(path, ": cannot be read"));
  google::protobuf::util::JsonParseOptions parse;
  parse.ignore_unknown_fields = true;  // settings written by newer daemons still read
  const auto status = google::protobuf::util::JsonStringToMessage(contents.str(), &settings, parse);
  if (!status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not model settings: ", std::string(status.message())));
  }
  return settings;
}

absl::Status ModelRepository::WriteSettings(const std::string& name,
                                            const v1::ModelSettings& settings) {
  RETURN_IF_ERROR(ValidateName(name));
  std::lock_guard<std::mutex> lock(add_mu_);
  ASSIGN_OR_RETURN(const WriterLock writer, WriterLock::Take(options_.root, options_.shared));
  const fs::path model_dir = fs::path(options_.root) / name;
  if (NumericEntries(model_dir.string(), /*complete_only=*/true).empty()) {
    return absl::NotFoundError(absl::StrCat("name: no model '", name, "' in the repository"));
  }
  std::string json;
  google::protobuf::util::JsonPrintOptions print;
  print.add_whitespace = true;
  print.preserve_proto_field_names = true;
  const auto status = google::protobuf::util::MessageToJsonString(settings, &json, print);
  if (!status.ok()) {
    return absl::InternalError(
        absl::StrCat("model ", name, ": encoding settings: ", std::string(status.message())));
  }
  // Written beside the target and renamed over it: a reader sees the old
  // file or the new one, never a part.
  const fs::path staged = model_dir / absl::StrCat(".", kSettingsFile, "-", RandomSuffix());
  StagingCleanup cleanup(staged.string());
  RETURN_IF_ERROR(WriteFileSynced(staged.string(), json));
  std::error_code ec;
  fs::rename(staged, model_dir / kSettingsFile, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat(
        "model repository: rename to ", (model_dir / kSettingsFile).string(), ": ", ec.message()));
  }
  cleanup.Release();
  return FsyncDir(model_dir.string());
}

absl::StatusOr<v1::ModelConfig> ModelRepository::AddVersion(
    const std::string& name, v1::ModelConfig config,
    const std::function<absl::Status(const std::string& dir, v1::ModelConfig& config)>&
        write_files) {
  RETURN_IF_ERROR(ValidateName(name));
  std::lock_guard<std::mutex> lock(add_mu_);
  ASSIGN_OR_RETURN(const WriterLock writer, WriterLock::Take(options_.root, options_.shared));
  const fs::path model_dir = fs::path(options_.root) / name;
  const std::vector<int64_t> existing = NumericEntries(model_dir.string(), false);
  const int64_t version = existing.empty() ? 1 : existing.back() + 1;
  if (static_cast<int64_t>(existing.size()) >= options_.max_versions) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "name: model '", name, "' already has ", existing.size(),
        " versions, the most --max_versions_per_model allows; delete old ones first (mantissa "
        "delete-model ",
        name, " --version ", existing.front(), ")"));
  }

  const fs::path staging_root = fs::path(options_.root) / kStagingDir;
  const std::string staging =
      (staging_root / absl::StrCat(name, "-", version, "-", RandomSuffix())).string();
  std::error_code ec;
  fs::create_directories(staging, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("model repository: cannot create ", staging, ": ", ec.message()));
  }
  StagingCleanup cleanup(staging);

  RETURN_IF_ERROR(write_files(staging, config));
  config.set_name(name);
  config.set_version(version);
  *config.mutable_create_time() = google::protobuf::util::TimeUtil::GetCurrentTime();

  std::string json;
  google::protobuf::util::JsonPrintOptions print;
  print.add_whitespace = true;
  print.preserve_proto_field_names = true;
  const auto status = google::protobuf::util::MessageToJsonString(config, &json, print);
  if (!status.ok()) {
    return absl::InternalError(
        absl::StrCat("model ", name, ": encoding config: ", std::string(status.message())));
  }
  RETURN_IF_ERROR(WriteFileSynced((fs::path(staging) / kConfigFile).string(), json));
  RETURN_IF_ERROR(FsyncTree(staging));
  RETURN_IF_ERROR(FsyncDir(staging_root.string()));

  const bool new_model = !fs::exists(model_dir, ec);
  fs::create_directories(model_dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("model repository: cannot create ", model_dir.string(), ": ", ec.message()));
  }
  const std::string target = VersionDir(name, version);
  fs::rename(staging, target, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("model repository: rename to ", target, ": ", ec.message()));
  }
  cleanup.Release();
  // The rename (and a new model directory) is durable only once the
  // directories holding them are flushed.
  RETURN_IF_ERROR(FsyncDir(model_dir.string()));
  if (new_model) RETURN_IF_ERROR(FsyncDir(options_.root));
  return config;
}

}  // namespace mantissa
