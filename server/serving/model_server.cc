#include "server/serving/model_server.h"

#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/common/logging.h"
#include "server/common/status_macros.h"
#include "server/common/torch_status.h"
#include "server/runtime/device_capabilities.h"
#include "server/serving/model_catalog_sync.h"
#include "server/serving/model_exporter.h"
#include "server/serving/model_repository.h"
#include "server/serving/model_statistics.h"
#include "server/serving/servable.h"
#include "server/serving/tensor_codec.h"

namespace mantissa {
namespace {

constexpr char kReady[] = "READY";
constexpr char kUnavailable[] = "UNAVAILABLE";
constexpr char kLoading[] = "LOADING";
constexpr char kUnloadedReason[] = "unloaded";

absl::Status Prefixed(const absl::Status& status, absl::string_view prefix) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(prefix, status.message()));
}

// What the server last said about one version of a model.
struct VersionState {
  std::string state;
  std::string reason;
  std::optional<v1::HalfCastValidation> validation;
  // Set when the cast's validation refused these files (config.json's
  // create_time): the same files are refused again, so the catalog sync
  // does not count them as missing.
  std::optional<google::protobuf::Timestamp> refused_files;
};

using ServedMap = std::map<int64_t, std::shared_ptr<Servable>>;

struct Entry {
  // Serialises loads and unloads of this model. Taken before mu_ (which is
  // then held only briefly), never while holding it.
  std::shared_ptr<std::mutex> load_mu = std::make_shared<std::mutex>();
  ServedMap served;  // the versions its policy selects that serve; empty when none
  std::map<int64_t, VersionState> versions;
  std::shared_ptr<InferenceMetrics> metrics;
  // One per model, shared by its versions' servables (their forwards) and
  // Infer (its requests).
  std::shared_ptr<ModelStatistics> statistics;
};

// Where a request goes, and what records it.
struct Route {
  std::shared_ptr<Servable> servable;  // null when refused before one was chosen
  std::shared_ptr<InferenceMetrics> metrics;
  std::shared_ptr<ModelStatistics> statistics;
};

// The versions a policy loads, as Load and SetVersionPolicy go through them.
struct Selection {
  ServedMap servables;                                    // selected and loaded: kept or fresh
  std::set<int64_t> fresh;                                // loaded now (the others already served)
  std::map<int64_t, v1::HalfCastValidation> validations;  // of the fresh ones
  absl::Status error;  // the newest selected version that failed, if any
};

// "latest 2", "all", "specific 1, 3"; an unset policy is latest 1.
std::string PolicyText(const v1::VersionPolicy& policy) {
  switch (policy.policy_choice_case()) {
    case v1::VersionPolicy::kAll:
      return "all";
    case v1::VersionPolicy::kSpecific:
      return absl::StrCat("specific ", absl::StrJoin(policy.specific().versions(), ", "));
    case v1::VersionPolicy::kLatest:
      return absl::StrCat("latest ", policy.latest().num_versions());
    default:
      return "latest 1";
  }
}

// As model.json holds it: latest 1 when unset.
v1::VersionPolicy Effective(const v1::VersionPolicy& policy) {
  if (policy.policy_choice_case() != v1::VersionPolicy::POLICY_CHOICE_NOT_SET) return policy;
  v1::VersionPolicy latest;
  latest.mutable_latest()->set_num_versions(1);
  return latest;
}

// The versions `policy` may pick among `on_disk`, newest first (a specific
// version need not be on disk: it then fails to load), and how many of them
// serve at most: latest N tries older versions until N load.
std::vector<int64_t> Candidates(const v1::VersionPolicy& policy,
                                const std::vector<int64_t>& on_disk, size_t* wanted) {
  std::vector<int64_t> candidates(on_disk.rbegin(), on_disk.rend());
  switch (policy.policy_choice_case()) {
    case v1::VersionPolicy::kAll:
      *wanted = candidates.size();
      break;
    case v1::VersionPolicy::kSpecific: {
      std::set<int64_t, std::greater<int64_t>> listed(policy.specific().versions().begin(),
                                                      policy.specific().versions().end());
      candidates.assign(listed.begin(), listed.end());
      *wanted = candidates.size();
      break;
    }
    case v1::VersionPolicy::kLatest:
      *wanted = std::max<size_t>(1, policy.latest().num_versions());
      break;
    default:
      *wanted = 1;
  }
  return candidates;
}

std::vector<int64_t> Keys(const ServedMap& served) {
  std::vector<int64_t> keys;
  for (const auto& [v, servable] : served) keys.push_back(v);
  return keys;
}

bool SameTime(const google::protobuf::Timestamp& a, const google::protobuf::Timestamp& b) {
  return a.seconds() == b.seconds() && a.nanos() == b.nanos();
}

bool SameFiles(const Servable& servable, const v1::ModelConfig& config) {
  return SameTime(servable.config().create_time(), config.create_time());
}

// Why a version that does not serve is left out.
std::string Unselected(const v1::VersionPolicy& policy, int64_t version, const ServedMap& served) {
  if (policy.policy_choice_case() == v1::VersionPolicy::kSpecific ||
      policy.policy_choice_case() == v1::VersionPolicy::kAll) {
    return absl::StrCat("not selected by the version policy (", PolicyText(policy), ")");
  }
  if (!served.empty() && served.rbegin()->first > version) {
    return absl::StrCat("superseded by version ", served.rbegin()->first);
  }
  return "not loaded";
}

// Records one answered or failed request.
void RecordRequest(const Route& route, const absl::Status& status, absl::Time start,
                   RequestTiming timing) {
  timing.total = absl::Now() - start;
  if (route.metrics != nullptr) {
    route.metrics->ObserveRequest(absl::StatusCodeToString(status.code()),
                                  absl::ToDoubleSeconds(timing.total));
  }
  if (route.servable == nullptr) return;  // no version's statistics: it reached none
  const int64_t version = route.servable->version();
  if (!status.ok()) {
    if (route.statistics != nullptr) route.statistics->RecordFailure(version, timing.total);
    return;
  }
  if (route.statistics != nullptr) route.statistics->RecordSuccess(version, timing);
  if (route.metrics != nullptr) {
    route.metrics->ObserveTiming(
        absl::ToDoubleSeconds(timing.queue),
        absl::ToDoubleSeconds(timing.compute_input + timing.compute_infer + timing.compute_output));
  }
}

// A language model's logits [N, T, vocab] cut to the last position's,
// [N, vocab]: the next-token scores are what a client wants by default, and
// a long window's full logits are T times larger (parameter all_positions).
absl::Status LastPosition(std::vector<torch::Tensor>& outputs) {
  return GuardTorch("taking the last position's logits", [&] {
    for (torch::Tensor& t : outputs) {
      if (t.dim() >= 3) t = t.select(1, -1);
    }
    return absl::OkStatus();
  });
}

std::string VersionList(const std::vector<int64_t>& versions) {
  return versions.empty() ? "none" : absl::StrJoin(versions, ", ");
}

}  // namespace

// Lifetime of servables (see servable.h): every servable has exactly one
// owning reference in the server, first in its entry, then in `retired_`
// once replaced or unloaded. Requests hold further references until their
// `done` ran. Sweep() stops and destroys a retired servable only once it sees
// use_count() == 1, i.e. no request holds it, and it does so on the thread of
// a public call, never on a batcher thread: the last reference a request
// drops on its batcher thread is never the last one. (use_count() == 1 cannot
// rise again: only the sweeper can copy a retired reference.)
class ModelServer::Impl {
 public:
  Impl(Options options, std::unique_ptr<ModelRepository> repository, torch::Device device,
       DeviceCapabilities capabilities, std::unique_ptr<Metrics> own_metrics)
      : options_(std::move(options)),
        repository_(std::move(repository)),
        device_(device),
        capabilities_(std::move(capabilities)),
        own_metrics_(std::move(own_metrics)),
        metrics_(options_.metrics != nullptr ? options_.metrics : own_metrics_.get()) {}

  ~Impl() { Shutdown(); }

  void LoadRepository() {
    Sweep();
    // Models unloaded through any daemon stay unloaded here too.
    std::set<std::string> unloaded;
    if (sync_ != nullptr) {
      for (const ModelCatalogRecord& record : sync_->Adopt()) {
        if (!record.loaded) unloaded.insert(record.name);
      }
    }
    for (const std::string& name : repository_->ModelNames()) {
      if (shutting_down_) break;
      if (unloaded.count(name) > 0) {
        LogInfo(absl::StrCat("model ", name, " left unloaded, as the model catalog records"));
        continue;
      }
      const absl::Status status = LoadLocal(name);
      if (!status.ok()) {
        // Under latest N an older version may serve in place of a refused one.
        LogWarning(absl::StrCat("model ", name, Serving(name).empty() ? " not loaded: " : ": ",
                                status.message()));
      }
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!shutting_down_) ready_ = true;
    }
    if (sync_ != nullptr) sync_->Start();
  }

  void CatalogChanged() {
    if (sync_ != nullptr) sync_->Changed();
  }

  void SetSync(std::unique_ptr<ModelCatalogSync> sync) { sync_ = std::move(sync); }

  // Brings this daemon in line with a change recorded through another one,
  // on the sync thread: a loaded model serves what its policy (model.json)
  // selects on disk, an unloaded or deleted one nothing.
  // False when it is to be tried again at the next sync.
  bool ApplyRecord(const ModelCatalogRecord& record) {
    if (shutting_down_) return true;
    auto change = LockChanges(record.name);
    if (!sync_->IsLatest(record)) return true;  // changed through this daemon since
    ForgetDeletedVersions(record.name);
    if (record.loaded && repository_->Versions(record.name).empty()) {
      // A shared volume's listing may lag the notification that a new
      // model's first version is there.
      LogInfo(absl::StrCat("model ", record.name, " is not visible here yet; retrying"));
      return false;
    }
    absl::Status status;
    if (!record.loaded) {
      status = UnloadLocal(record.name);
      if (status.code() == absl::StatusCode::kNotFound) status = absl::OkStatus();
    } else if (!ServesSelection(record.name)) {
      LogInfo(absl::StrCat("model ", record.name, " changed on another daemon; loading it"));
      status = LoadLocal(record.name);
      // A version whose cast is refused is no reason to retry: the rest serve.
      if (!status.ok() && ServesSelection(record.name)) status = absl::OkStatus();
    }
    if (!status.ok()) {
      LogWarning(absl::StrCat("model ", record.name, ": applying the catalog's generation ",
                              record.generation, ": ", status.message(), "; retrying"));
    }
    return status.ok();
  }

  // --- Changes made through this daemon, recorded in the catalog. Each
  // holds the model's change mutex across the change and its publication,
  // so that the sync thread never applies an older record over it.
  absl::Status Load(const std::string& name) {
    auto change = LockChanges(name);
    RETURN_IF_ERROR(LoadLocal(name));
    Publish(name, /*loaded=*/true);
    return absl::OkStatus();
  }

  absl::Status Unload(const std::string& name) {
    auto change = LockChanges(name);
    RETURN_IF_ERROR(UnloadLocal(name));
    Publish(name, /*loaded=*/false);
    return absl::OkStatus();
  }

  // Deleting one version leaves the model as loaded (or not) as it was: the
  // other daemons reload what its policy selects among the versions left.
  absl::Status DeleteVersion(const std::string& name, int64_t version) {
    auto change = LockChanges(name);
    RETURN_IF_ERROR(DeleteLocal(name, version));
    Publish(name, /*loaded=*/version != 0 && !Serving(name).empty());
    return absl::OkStatus();
  }

  // Validated before anything loads; the change is published once the new
  // selection serves and model.json holds it.
  absl::StatusOr<v1::ModelStatus> SetVersionPolicy(const std::string& name,
                                                   const v1::VersionPolicy& policy) {
    Sweep();
    if (shutting_down_) return ShuttingDown();
    RETURN_IF_ERROR(ModelRepository::ValidateName(name));
    const std::vector<int64_t> versions = repository_->Versions(name);
    if (versions.empty()) {
      return absl::NotFoundError(absl::StrCat("name: model ", name, " is not in the repository (",
                                              RepositoryListing(), ")"));
    }
    RETURN_IF_ERROR(ValidatePolicy(name, policy, versions));
    {
      auto change = LockChanges(name);
      const std::shared_ptr<std::mutex> load_mu = LoadMutex(name);
      {
        std::lock_guard<std::mutex> load_lock(*load_mu);
        RETURN_IF_ERROR(ApplyPolicyLocked(name, policy, /*persist=*/true));
      }
      Publish(name, /*loaded=*/true);
    }
    Sweep();
    for (v1::ModelStatus& model : Statuses(/*with_configs=*/true)) {
      if (model.name() == name) return std::move(model);
    }
    return absl::NotFoundError(absl::StrCat("model ", name, " vanished from the repository"));
  }

  absl::StatusOr<v1::ModelStatus> Rollback(const std::string& name, int64_t version) {
    if (version < 1) {
      return absl::InvalidArgumentError(absl::StrCat("version: must be >= 1, got ", version));
    }
    const std::vector<int64_t> versions = repository_->Versions(name);
    if (!versions.empty() && !std::binary_search(versions.begin(), versions.end(), version)) {
      return absl::NotFoundError(absl::StrCat("version: model ", name, " has no version ", version,
                                              " (versions: ", VersionList(versions), ")"));
    }
    v1::VersionPolicy policy;
    policy.mutable_specific()->add_versions(version);
    return SetVersionPolicy(name, policy);
  }

  absl::StatusOr<inference::ModelStatisticsResponse> Statistics(const std::string& name,
                                                                const std::string& version) const {
    Sweep();
    inference::ModelStatisticsResponse response;
    if (name.empty()) {
      if (!version.empty()) {
        return absl::InvalidArgumentError("version: needs a model name (name is empty)");
      }
      std::vector<std::shared_ptr<ModelStatistics>> every;
      {
        std::lock_guard<std::mutex> lock(mu_);
        for (const auto& [model, entry] : models_) {
          if (entry.statistics != nullptr) every.push_back(entry.statistics);
        }
      }
      for (const auto& statistics : every) statistics->AppendTo(0, &response);
      return response;
    }
    std::shared_ptr<ModelStatistics> statistics;
    std::set<int64_t> known;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = models_.find(name);
      if (it != models_.end()) {
        statistics = it->second.statistics;
        for (const auto& [v, state] : it->second.versions) known.insert(v);
      }
    }
    const std::vector<int64_t> on_disk = repository_->Versions(name);
    known.insert(on_disk.begin(), on_disk.end());
    if (known.empty()) return NotFound(name);
    int64_t v = 0;
    if (!version.empty() && (!absl::SimpleAtoi(version, &v) || known.count(v) == 0)) {
      return absl::NotFoundError(absl::StrCat(
          "model ", name, " has no version '", version,
          "' (versions: ", VersionList(std::vector<int64_t>(known.begin(), known.end())), ")"));
    }
    // A model nothing was recorded for reads as zeros.
    if (statistics == nullptr) statistics = std::make_shared<ModelStatistics>(name);
    statistics->AppendTo(v, &response);
    return response;
  }

  bool ready() const {
    std::lock_guard<std::mutex> lock(mu_);
    return ready_ && !shutting_down_;
  }

  void Shutdown() {
    // Set first: a load the sync thread is running then ends early.
    shutting_down_ = true;
    if (sync_ != nullptr) sync_->Stop();
    std::vector<std::shared_ptr<Servable>> servables;
    {
      std::lock_guard<std::mutex> lock(mu_);
      shutting_down_ = true;
      ready_ = false;
      for (auto& [name, entry] : models_) {
        for (auto& [version, servable] : entry.served) {
          VersionState& v = entry.versions[version];
          v.state = kUnavailable;
          v.reason = "the server is shutting down";
          servables.push_back(std::move(servable));
        }
        entry.served.clear();
      }
    }
    {
      std::lock_guard<std::mutex> lock(retired_mu_);
      for (auto& s : retired_) servables.push_back(std::move(s));
      retired_.clear();
    }
    // Stop drains each queue (every queued request gets its answer) and
    // joins the batcher; requests refused afterwards get UNAVAILABLE.
    for (const auto& s : servables) s->Stop();
  }

  absl::StatusOr<bool> ModelReady(const std::string& name, const std::string& version) const {
    Sweep();
    ServedMap served;
    RETURN_IF_ERROR(Find(name, &served));
    if (version.empty()) return !served.empty();
    ASSIGN_OR_RETURN(const int64_t v, ParseVersion(name, version));
    return served.count(v) > 0;
  }

  absl::StatusOr<inference::ModelMetadataResponse> ModelMetadata(const std::string& name,
                                                                 const std::string& version) const {
    Sweep();
    ServedMap served;
    RETURN_IF_ERROR(Find(name, &served));
    // Without a version: the one requests without a version go to.
    int64_t v = 0;
    if (!version.empty()) {
      ASSIGN_OR_RETURN(v, ParseVersion(name, version));
    } else if (!served.empty()) {
      v = served.rbegin()->first;
    } else {
      const std::vector<int64_t> versions = repository_->Versions(name);
      if (versions.empty()) {
        return absl::NotFoundError(absl::StrCat("model ", name, " has no versions"));
      }
      v = versions.back();
    }
    v1::ModelConfig config;
    if (served.count(v) > 0) {
      config = served[v]->config();
    } else {
      ASSIGN_OR_RETURN(config, repository_->ReadConfig(name, v));
    }
    inference::ModelMetadataResponse response;
    response.set_name(name);
    for (const auto& [served_version, servable] : served) {
      response.add_versions(std::to_string(served_version));
    }
    response.set_platform(config.platform());
    // Every served model batches, so shapes lead with a variable batch
    // dimension, as Triton reports them for models with max_batch_size > 0.
    auto copy = [](const v1::TensorSpec& spec,
                   inference::ModelMetadataResponse::TensorMetadata* out) {
      out->set_name(spec.name());
      out->set_datatype(spec.datatype());
      out->add_shape(-1);
      for (int64_t d : spec.shape()) out->add_shape(d);
    };
    for (const v1::TensorSpec& spec : config.inputs()) copy(spec, response.add_inputs());
    for (const v1::TensorSpec& spec : config.outputs()) copy(spec, response.add_outputs());
    return response;
  }

  void Infer(const inference::ModelInferRequest* request, inference::ModelInferResponse* response,
             std::function<void(absl::Status)> done) {
    const absl::Time start = absl::Now();
    Sweep();
    const std::string& name = request->model_name();
    Route route;
    // Refused up front: answered here, on the caller's thread.
    auto refuse = [&](const absl::Status& status) {
      RecordRequest(route, status, start, RequestTiming{});
      done(status);
    };
    if (absl::Status refusal = Lookup(name, request->model_version(), &route); !refusal.ok()) {
      return refuse(refusal);
    }
    const Servable& servable = *route.servable;
    const absl::Time decode_start = absl::Now();
    absl::StatusOr<DecodedRequest> decoded =
        DecodeRequest(*request, servable.inputs(), servable.outputs(), servable.max_batch_size());
    if (!decoded.ok())
      return refuse(Prefixed(decoded.status(), absl::StrCat("model ", name, ": ")));
    const absl::Duration decode = absl::Now() - decode_start;

    DynamicBatcher::Task task;
    task.inputs = std::move(decoded->inputs);
    decoded->inputs.clear();
    auto request_state = std::make_shared<DecodedRequest>(*std::move(decoded));
    // Filled by the batcher before `done` runs; `done` keeps it alive.
    auto timing = std::make_shared<DynamicBatcher::Timing>();
    task.timing = timing.get();
    // Holds the servable (in `route`) until the answer is written: a
    // replaced version finishes this request. The batcher drops the task
    // after `done`; the server's own reference outlives it (see the class
    // comment).
    task.done = [route, request_state, request, response, done, start, decode,
                 timing](absl::StatusOr<std::vector<torch::Tensor>> outputs) {
      const absl::Time encode_start = absl::Now();
      const Servable& servable = *route.servable;
      absl::Status status = outputs.status();
      // Whatever throws here (an allocation), the caller still gets its answer.
      try {
        if (status.ok() && servable.config().task() == "language_model" &&
            !request_state->all_positions) {
          status = LastPosition(*outputs);
        }
        if (status.ok()) {
          status = EncodeResponse(*outputs, *request_state, servable.outputs(), response);
        }
        if (status.ok()) {
          response->set_model_name(servable.name());
          response->set_model_version(std::to_string(servable.version()));
          response->set_id(request->id());
        }
        RecordRequest(route, status, start,
                      RequestTiming{.items = request_state->batch_size,
                                    .queue = timing->queue,
                                    .compute_input = decode,
                                    .compute_infer = timing->compute,
                                    .compute_output = absl::Now() - encode_start});
      } catch (const std::exception& e) {
        status = absl::InternalError(
            absl::StrCat("model ", servable.name(), ": writing the answer: ", e.what()));
      }
      done(status);
    };
    const absl::Status queued = route.servable->Enqueue(std::move(task));
    if (!queued.ok()) refuse(queued);
  }

  inference::RepositoryIndexResponse RepositoryIndex(bool ready_only) const {
    Sweep();
    inference::RepositoryIndexResponse response;
    for (const v1::ModelStatus& model : Statuses(/*with_configs=*/false)) {
      for (const v1::ModelVersionStatus& v : model.versions()) {
        if (ready_only && v.state() != kReady) continue;
        auto* index = response.add_models();
        index->set_name(model.name());
        index->set_version(std::to_string(v.config().version()));
        index->set_state(v.state());
        index->set_reason(v.reason());
      }
    }
    return response;
  }

  std::vector<v1::ModelStatus> List() const {
    Sweep();
    return Statuses(/*with_configs=*/true);
  }

  absl::Status LoadLocal(const std::string& name) {
    Sweep();
    if (shutting_down_) return ShuttingDown();
    if (repository_->Versions(name).empty()) {
      return absl::NotFoundError(
          absl::StrCat("model ", name, " is not in the repository (", RepositoryListing(), ")"));
    }
    const std::shared_ptr<std::mutex> load_mu = LoadMutex(name);
    // The model stays served while its next versions load; mu_ is not held
    // during the load, so requests and other models go on.
    std::lock_guard<std::mutex> load_lock(*load_mu);
    if (repository_->Versions(name).empty()) {
      return absl::NotFoundError(absl::StrCat("model ", name, " is not in the repository"));
    }
    ASSIGN_OR_RETURN(const v1::ModelSettings settings, repository_->ReadSettings(name));
    return ApplyPolicyLocked(name, Effective(settings.version_policy()), /*persist=*/false);
  }

  // Loads what `policy` selects and serves it in place of what served
  // before. A selected version that fails (refused by its promotion policy
  // included) is UNAVAILABLE with its reason; latest N then tries the next
  // older one. When none of the selection serves, what served keeps serving
  // and the error is returned. `persist`: SetVersionPolicy's change, written
  // to model.json before it is served (and answered OK when part of the
  // selection fails); otherwise the newest failure is returned. Needs the
  // model's load mutex held.
  absl::Status ApplyPolicyLocked(const std::string& name, const v1::VersionPolicy& policy,
                                 bool persist) {
    Selection selection = Select(name, policy);
    if (shutting_down_) {
      Discard(name, selection, "the server is shutting down");
      return ShuttingDown();
    }
    if (selection.servables.empty()) {
      if (selection.error.ok()) {
        selection.error = absl::NotFoundError(absl::StrCat(
            "model ", name, ": the version policy (", PolicyText(policy), ") selects no version"));
      }
      return WithServing(name, selection.error);
    }
    if (persist) {
      v1::ModelSettings settings;
      *settings.mutable_version_policy() = policy;
      const absl::Status written = repository_->WriteSettings(name, settings);
      if (!written.ok()) {
        Discard(name, selection, absl::StrCat("model.json not written: ", written.message()));
        return written;
      }
    }
    if (absl::Status installed = Install(name, policy, selection); !installed.ok()) {
      Discard(name, selection, "the server is shutting down");
      return installed;
    }
    if (persist || selection.error.ok()) return absl::OkStatus();
    return WithServing(name, selection.error);
  }

  // `error`, saying which versions keep serving (none: the model's cast
  // figures are cleared).
  absl::Status WithServing(const std::string& name, const absl::Status& error) {
    const std::vector<int64_t> serving = Keys(Serving(name));
    if (serving.empty()) {
      metrics_->ClearCastValidation(name);
      return error;
    }
    return absl::Status(
        error.code(),
        absl::StrCat(error.message(), "; ",
                     serving.size() == 1
                         ? absl::StrCat("version ", serving[0], " keeps serving")
                         : absl::StrCat("versions ", VersionList(serving), " keep serving")));
  }

  // Needs the model's load mutex. Loads what `policy` selects, newest
  // first, keeping versions already served from the same files; serves
  // nothing yet. Stops early only when the server shuts down.
  Selection Select(const std::string& name, const v1::VersionPolicy& policy) {
    Selection selection;
    const ServedMap serving = Serving(name);
    size_t wanted = 0;
    for (int64_t version : Candidates(policy, repository_->Versions(name), &wanted)) {
      if (selection.servables.size() >= wanted || shutting_down_) break;
      auto served = serving.find(version);
      if (served != serving.end()) {
        absl::StatusOr<v1::ModelConfig> config = repository_->ReadConfig(name, version);
        if (config.ok() && SameFiles(*served->second, *config)) {
          selection.servables[version] = served->second;
          continue;
        }
      }
      SetState(name, version, VersionState{kLoading, "", std::nullopt});
      v1::HalfCastValidation validation;
      absl::StatusOr<std::shared_ptr<Servable>> loaded = LoadVersion(name, version, &validation);
      if (loaded.ok()) {
        selection.servables[version] = *std::move(loaded);
        selection.fresh.insert(version);
        selection.validations[version] = validation;
        continue;
      }
      LogWarning(absl::StrCat("model ", name, " version ", version,
                              " is unavailable: ", loaded.status().message()));
      // A refused cast's figures stay listed with the refusal.
      VersionState state{kUnavailable, std::string(loaded.status().message()), std::nullopt,
                         std::nullopt};
      if (!validation.calibration_source().empty()) {
        state.validation = validation;
        state.refused_files = RefusedFiles(name, version, loaded.status());
      }
      SetState(name, version, std::move(state));
      if (selection.error.ok()) selection.error = loaded.status();
    }
    return selection;
  }

  // The files of a version whose validation refused it (a non-finite cast,
  // a missed promotion policy): they would be refused again.
  std::optional<google::protobuf::Timestamp> RefusedFiles(const std::string& name, int64_t version,
                                                          const absl::Status& refusal) const {
    if (refusal.code() != absl::StatusCode::kUnavailable &&
        refusal.code() != absl::StatusCode::kFailedPrecondition) {
      return std::nullopt;
    }
    absl::StatusOr<v1::ModelConfig> config = repository_->ReadConfig(name, version);
    if (!config.ok()) return std::nullopt;
    return config->create_time();
  }

  // Whether `config` holds the files of a version its validation refused.
  bool Refused(const std::string& name, const v1::ModelConfig& config) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = models_.find(name);
    if (it == models_.end()) return false;
    auto v = it->second.versions.find(config.version());
    return v != it->second.versions.end() && v->second.refused_files.has_value() &&
           SameTime(*v->second.refused_files, config.create_time());
  }

  void SetState(const std::string& name, int64_t version, VersionState state) {
    std::lock_guard<std::mutex> lock(mu_);
    models_[name].versions[version] = std::move(state);
  }

  // Freshly loaded versions that will not serve after all.
  void Discard(const std::string& name, const Selection& selection, const std::string& reason) {
    for (int64_t version : selection.fresh) {
      SetState(name, version, VersionState{kUnavailable, reason, std::nullopt});
      Retire(selection.servables.at(version));
    }
    Sweep();
  }

  // Serves exactly `selection`; what served before and is not kept is
  // retired: it finishes the requests it holds.
  absl::Status Install(const std::string& name, const v1::VersionPolicy& policy,
                       const Selection& selection) {
    std::vector<std::shared_ptr<Servable>> replaced;
    {
      std::lock_guard<std::mutex> lock(mu_);
      // Shutdown has taken what served; nothing new may start serving.
      if (shutting_down_) return ShuttingDown();
      Entry& entry = models_[name];
      for (auto& [version, servable] : entry.served) {
        auto kept = selection.servables.find(version);
        if (kept != selection.servables.end() && kept->second == servable) continue;
        replaced.push_back(std::move(servable));
        if (kept == selection.servables.end()) {
          VersionState& state = entry.versions[version];
          state.state = kUnavailable;
          state.reason = Unselected(policy, version, selection.servables);
        }
      }
      entry.served = selection.servables;
      for (const auto& [version, servable] : entry.served) {
        VersionState& state = entry.versions[version];
        state.state = kReady;
        state.reason.clear();
        if (selection.fresh.count(version) == 0) continue;
        const v1::HalfCastValidation& validation = selection.validations.at(version);
        state.validation = validation.calibration_source().empty()
                               ? std::nullopt
                               : std::optional<v1::HalfCastValidation>(validation);
      }
    }
    for (auto& servable : replaced) Retire(std::move(servable));
    for (int64_t version : selection.fresh) LogServing(*selection.servables.at(version));
    // The model's cast figures are those of the version requests without a
    // version go to.
    const Servable& newest = *selection.servables.rbegin()->second;
    const v1::HalfCastValidation& v = newest.validation();
    metrics_->SetCastValidation(
        name, newest.config().precision(), v.max_abs_diff(), v.mean_rel_diff(),
        v.has_top1_agreement() ? std::optional<double>(v.top1_agreement()) : std::nullopt);
    return absl::OkStatus();
  }

  void LogServing(const Servable& servable) const {
    const v1::HalfCastValidation& v = servable.validation();
    LogInfo(absl::StrCat("model ", servable.name(), " version ", servable.version(), " serving in ",
                         servable.config().precision(), " on ", device_.str(), ": max_abs_diff ",
                         v.max_abs_diff(), ", mean_rel_diff ", v.mean_rel_diff(),
                         v.has_top1_agreement() ? absl::StrCat(", top1 ", v.top1_agreement()) : "",
                         " on ", v.calibration_source(), " (", v.duration_seconds(), " s)"));
  }

  static absl::Status ValidatePolicy(const std::string& name, const v1::VersionPolicy& policy,
                                     const std::vector<int64_t>& versions) {
    switch (policy.policy_choice_case()) {
      case v1::VersionPolicy::kLatest:
        if (policy.latest().num_versions() < 1) {
          return absl::InvalidArgumentError(
              absl::StrCat("version_policy.latest.num_versions: must be >= 1, got ",
                           policy.latest().num_versions()));
        }
        return absl::OkStatus();
      case v1::VersionPolicy::kAll:
        return absl::OkStatus();
      case v1::VersionPolicy::kSpecific:
        if (policy.specific().versions().empty()) {
          return absl::InvalidArgumentError(absl::StrCat(
              "version_policy.specific.versions: must name at least one version (versions of ",
              name, ": ", VersionList(versions), ")"));
        }
        for (int64_t v : policy.specific().versions()) {
          if (!std::binary_search(versions.begin(), versions.end(), v)) {
            return absl::NotFoundError(absl::StrCat("version_policy.specific.versions: model ",
                                                    name, " has no version ", v,
                                                    " (versions: ", VersionList(versions), ")"));
          }
        }
        return absl::OkStatus();
      default:
        return absl::InvalidArgumentError(
            "version_policy: is required (one of latest, all, specific)");
    }
  }

  absl::Status UnloadLocal(const std::string& name) {
    Sweep();
    if (shutting_down_) return ShuttingDown();
    std::shared_ptr<std::mutex> load_mu;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = models_.find(name);
      if (it != models_.end()) load_mu = it->second.load_mu;
    }
    if (load_mu == nullptr) {
      if (repository_->Versions(name).empty()) return NotFound(name);
      return absl::OkStatus();  // in the repository, never loaded
    }
    ServedMap unloaded;
    {
      std::lock_guard<std::mutex> load_lock(*load_mu);
      std::lock_guard<std::mutex> lock(mu_);
      Entry& entry = models_[name];
      if (entry.served.empty()) return absl::OkStatus();
      for (const auto& [version, servable] : entry.served) {
        VersionState& state = entry.versions[version];
        state.state = kUnavailable;
        state.reason = kUnloadedReason;
      }
      unloaded.swap(entry.served);
    }
    // Requests already holding them finish on them; the sweeper stops each
    // once they have.
    for (auto& [version, servable] : unloaded) Retire(std::move(servable));
    metrics_->ClearCastValidation(name);
    Sweep();
    LogInfo(absl::StrCat("model ", name, " unloaded"));
    return absl::OkStatus();
  }

  // A version a `specific` policy names stays while the policy names it:
  // deleting it would leave model.json naming a version that never loads.
  absl::Status CheckNotPinned(const std::string& name, int64_t version) const {
    if (version == 0) return absl::OkStatus();  // the model and its model.json go
    absl::StatusOr<v1::ModelSettings> settings = repository_->ReadSettings(name);
    if (!settings.ok()) return absl::OkStatus();  // unreadable: nothing it names
    const v1::VersionPolicy& policy = settings->version_policy();
    if (policy.policy_choice_case() != v1::VersionPolicy::kSpecific) return absl::OkStatus();
    const auto& listed = policy.specific().versions();
    if (std::find(listed.begin(), listed.end(), version) == listed.end()) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat(
        "model ", name, " version ", version, " is named by its version policy (",
        PolicyText(policy), "); change the policy first (mantissa version-policy ", name, ")"));
  }

  absl::Status DeleteLocal(const std::string& name, int64_t version) {
    Sweep();
    if (shutting_down_) return ShuttingDown();
    RETURN_IF_ERROR(ModelRepository::ValidateName(name));
    if (version < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("version: must be >= 0 (0 = every version), got ", version));
    }
    std::shared_ptr<std::mutex> load_mu;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = models_.find(name);
      if (it != models_.end()) load_mu = it->second.load_mu;
    }
    // Held across the check and the removal: no load can pick the version
    // up in between.
    std::unique_lock<std::mutex> load_lock;
    if (load_mu != nullptr) load_lock = std::unique_lock<std::mutex>(*load_mu);
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = models_.find(name);
      if (it != models_.end() && !it->second.served.empty() &&
          (version == 0 || it->second.served.count(version) > 0)) {
        const int64_t serving = version == 0 ? it->second.served.rbegin()->first : version;
        return absl::FailedPreconditionError(absl::StrCat(
            "model ", name, " version ", serving, " is serving; unload it first (mantissa unload ",
            name, ")", version == 0 ? "" : " or serve other versions (mantissa version-policy)"));
      }
    }
    RETURN_IF_ERROR(CheckNotPinned(name, version));
    RETURN_IF_ERROR(repository_->DeleteVersion(name, version));
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = models_.find(name);
      if (it != models_.end()) {
        if (version == 0) {
          it->second.versions.clear();
        } else {
          it->second.versions.erase(version);
        }
        // The entry (and its load mutex) stays while a load may hold it;
        // an entry without versions is not listed once the files are gone.
      }
    }
    LogInfo(version == 0 ? absl::StrCat("model ", name, " deleted")
                         : absl::StrCat("model ", name, " version ", version, " deleted"));
    return absl::OkStatus();
  }

  absl::StatusOr<v1::ModelVersionStatus> Export(const v1::Job& job,
                                                const v1::ExportModelRequest& request) {
    Sweep();
    if (shutting_down_) return ShuttingDown();
    ASSIGN_OR_RETURN(const std::string precision,
                     ResolveServingPrecision(request.precision(), capabilities_));
    absl::StatusOr<v1::ModelConfig> config;
    RETURN_IF_ERROR(GuardTorch(absl::StrCat("exporting job ", job.id()), [&] {
      config = ModelExporter::ExportJob(*repository_, options_.state_dir, job, request, precision);
      return absl::OkStatus();
    }));
    RETURN_IF_ERROR(config.status());
    return LoadAdded(*config);
  }

  absl::StatusOr<v1::ModelVersionStatus> Register(const v1::RegisterModelRequest& request) {
    Sweep();
    if (shutting_down_) return ShuttingDown();
    // Checked before the repository changes: bad input adds no version.
    v1::RegisterModelRequest confined = request;
    RETURN_IF_ERROR(ConfineRegistration(confined));
    ASSIGN_OR_RETURN(const std::string precision,
                     ResolveServingPrecision(request.precision(), capabilities_));
    absl::StatusOr<v1::ModelConfig> config;
    RETURN_IF_ERROR(GuardTorch(absl::StrCat("registering model ", request.name()), [&] {
      config = ModelExporter::RegisterTorchScript(*repository_, confined, precision);
      return absl::OkStatus();
    }));
    RETURN_IF_ERROR(config.status());
    return LoadAdded(*config);
  }

 private:
  // A TorchScript module runs with the daemon's rights: registration is off
  // until an operator names a folder of trusted modules. Declared shapes are
  // bounded; the module path comes back canonical.
  absl::Status ConfineRegistration(v1::RegisterModelRequest& request) const {
    RETURN_IF_ERROR(CheckDeclaredShapes("inputs", request.inputs(), options_.shape_limits));
    RETURN_IF_ERROR(CheckDeclaredShapes("outputs", request.outputs(), options_.shape_limits));
    if (options_.torchscript_roots.empty()) {
      return absl::FailedPreconditionError(
          "torchscript_path: TorchScript models are turned off on this server (a TorchScript "
          "module runs arbitrary code with the server's rights); an operator enables them with "
          "mantissad --torchscript_root=DIR, for modules under DIR");
    }
    if (request.torchscript_path().empty()) {
      return absl::InvalidArgumentError("torchscript_path: is required");
    }
    ASSIGN_OR_RETURN(
        *request.mutable_torchscript_path(),
        options_.torchscript_roots.Resolve("torchscript_path", request.torchscript_path()));
    return absl::OkStatus();
  }

  std::unique_lock<std::mutex> LockChanges(const std::string& name) {
    std::shared_ptr<std::mutex> change_mu;
    {
      std::lock_guard<std::mutex> lock(mu_);
      std::shared_ptr<std::mutex>& slot = change_mus_[name];
      if (slot == nullptr) slot = std::make_shared<std::mutex>();
      change_mu = slot;
    }
    // The map keeps the mutex alive: entries are never erased.
    return std::unique_lock<std::mutex>(*change_mu);
  }

  void Publish(const std::string& name, bool loaded) {
    if (sync_ != nullptr) sync_->Publish(name, loaded);
  }

  ServedMap Serving(const std::string& name) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = models_.find(name);
    return it == models_.end() ? ServedMap() : it->second.served;
  }

  std::shared_ptr<std::mutex> LoadMutex(const std::string& name) {
    std::lock_guard<std::mutex> lock(mu_);
    return EntryLocked(name).load_mu;
  }

  // Whether `name` serves what its policy (model.json) selects on disk,
  // from the same files (a deleted version's number can be used again by a
  // later export). Latest N counts the N newest versions whose files were
  // not refused by their validation.
  bool ServesSelection(const std::string& name) const {
    absl::StatusOr<v1::ModelSettings> settings = repository_->ReadSettings(name);
    if (!settings.ok()) return false;
    size_t wanted = 0;
    size_t matched = 0;
    size_t refused = 0;
    const ServedMap served = Serving(name);
    for (int64_t version :
         Candidates(Effective(settings->version_policy()), repository_->Versions(name), &wanted)) {
      if (matched == wanted) break;
      absl::StatusOr<v1::ModelConfig> config = repository_->ReadConfig(name, version);
      if (!config.ok()) return false;
      // Files its validation refused are not missing: they would be refused again.
      if (Refused(name, *config)) {
        ++refused;
        continue;
      }
      auto it = served.find(version);
      if (it == served.end() || !SameFiles(*it->second, *config)) return false;
      ++matched;
    }
    return matched == served.size() && matched + refused > 0;
  }

  // Drops what this daemon remembers of versions another one deleted.
  void ForgetDeletedVersions(const std::string& name) {
    const std::vector<int64_t> on_disk = repository_->Versions(name);
    std::lock_guard<std::mutex> lock(mu_);
    auto it = models_.find(name);
    if (it == models_.end()) return;
    Entry& entry = it->second;
    for (auto v = entry.versions.begin(); v != entry.versions.end();) {
      const bool served = entry.served.count(v->first) > 0;
      const bool kept = std::binary_search(on_disk.begin(), on_disk.end(), v->first);
      v = (served || kept || v->second.state == kLoading) ? std::next(v) : entry.versions.erase(v);
    }
  }

  static absl::Status ShuttingDown() {
    return absl::UnavailableError("the model server is shutting down");
  }

  absl::Status NotFound(const std::string& name) const {
    return absl::NotFoundError(absl::StrCat("model ", name, " not found; ", ServedListing()));
  }

  // "loaded models: a, b" (mu_ not held).
  std::string ServedListing() const {
    std::vector<std::string> served;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& [name, entry] : models_) {
        if (!entry.served.empty()) served.push_back(name);
      }
    }
    return served.empty() ? "no models are loaded"
                          : absl::StrCat("loaded models: ", absl::StrJoin(served, ", "));
  }

  std::string RepositoryListing() const {
    const std::vector<std::string> names = repository_->ModelNames();
    return names.empty() ? "the repository is empty"
                         : absl::StrCat("models: ", absl::StrJoin(names, ", "));
  }

  absl::StatusOr<int64_t> ParseVersion(const std::string& name, const std::string& version) const {
    const std::vector<int64_t> versions = repository_->Versions(name);
    int64_t v = 0;
    if (!absl::SimpleAtoi(version, &v) ||
        std::find(versions.begin(), versions.end(), v) == versions.end()) {
      return absl::NotFoundError(absl::StrCat("model ", name, " has no version '", version,
                                              "' (versions: ", VersionList(versions), ")"));
    }
    return v;
  }

  Entry& EntryLocked(const std::string& name) {
    Entry& entry = models_[name];
    if (entry.metrics == nullptr) entry.metrics = metrics_->ModelInference(name);
    if (entry.statistics == nullptr) entry.statistics = std::make_shared<ModelStatistics>(name);
    return entry;
  }

  // NOT_FOUND unless `name` is known (loaded once or in the repository).
  absl::Status Find(const std::string& name, ServedMap* served) const {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = models_.find(name);
      if (it != models_.end()) {
        *served = it->second.served;
        return absl::OkStatus();
      }
    }
    if (repository_->Versions(name).empty()) return NotFound(name);
    return absl::OkStatus();
  }

  // The servable a request goes to (`version` empty: the newest served),
  // or why there is none.
  absl::Status Lookup(const std::string& name, const std::string& version, Route* route) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (shutting_down_) return ShuttingDown();
      auto it = models_.find(name);
      if (it != models_.end()) {
        const Entry& entry = it->second;
        route->metrics = entry.metrics;
        route->statistics = entry.statistics;
        if (!entry.served.empty()) return Choose(name, version, entry.served, route);
        // Why nothing is served: a version loading or unloaded, else the
        // latest version's state (under a pinned policy the newest one was
        // never selected, which is not why the model answers nothing).
        if (!entry.versions.empty()) {
          auto why = std::find_if(entry.versions.rbegin(), entry.versions.rend(), [](auto& v) {
            return v.second.state == kLoading || v.second.reason == kUnloadedReason;
          });
          if (why == entry.versions.rend()) why = entry.versions.rbegin();
          const auto& [latest, state] = *why;
          if (state.state == kLoading) {
            return absl::FailedPreconditionError(
                absl::StrCat("model ", name, " is loading version ", latest));
          }
          return absl::FailedPreconditionError(
              absl::StrCat("model ", name, " version ", latest, " is unavailable: ", state.reason));
        }
      }
    }
    if (repository_->Versions(name).empty()) return NotFound(name);
    {
      std::lock_guard<std::mutex> lock(mu_);
      const Entry& entry = EntryLocked(name);
      route->metrics = entry.metrics;
      route->statistics = entry.statistics;
    }
    return absl::FailedPreconditionError(absl::StrCat("model ", name, " is not loaded"));
  }

  static absl::Status Choose(const std::string& name, const std::string& version,
                             const ServedMap& served, Route* route) {
    if (version.empty()) {
      route->servable = served.rbegin()->second;
      return absl::OkStatus();
    }
    int64_t v = 0;
    auto it = absl::SimpleAtoi(version, &v) ? served.find(v) : served.end();
    if (it == served.end()) {
      return absl::NotFoundError(absl::StrCat("model ", name, " version ", version,
                                              " is not served (served: ", VersionList(Keys(served)),
                                              ")"));
    }
    route->servable = it->second;
    return absl::OkStatus();
  }

  absl::StatusOr<std::shared_ptr<Servable>> LoadVersion(const std::string& name, int64_t version,
                                                        v1::HalfCastValidation* validation) {
    ASSIGN_OR_RETURN(v1::ModelConfig config, repository_->ReadConfig(name, version));
    // A repository written on another machine may name a precision this
    // device cannot compute.
    {
      absl::StatusOr<std::string> precision =
          ResolveServingPrecision(config.precision(), capabilities_);
      if (!precision.ok()) {
        return Prefixed(precision.status(),
                        absl::StrCat("model ", name, " version ", version, ": config.json "));
      }
      config.set_precision(*precision);
    }
    Servable::Options options;
    options.config = std::move(config);
    options.version_dir = repository_->VersionDir(name, version);
    options.device = device_;
    options.calibration_items = options_.calibration_items;
    options.default_max_batch_size = options_.default_max_batch_size;
    options.default_max_queue_delay_us = options_.default_max_queue_delay_us;
    options.metrics = metrics_;
    options.shape_limits = options_.shape_limits;
    {
      std::lock_guard<std::mutex> lock(mu_);
      options.statistics = EntryLocked(name).statistics;
    }
    // Whatever a version holds (a module that throws, a shape too big to
    // allocate) makes it UNAVAILABLE, never ends the daemon.
    absl::StatusOr<std::shared_ptr<Servable>> servable;
    const absl::Status guarded =
        GuardTorch(absl::StrCat("model ", name, " version ", version), [&] {
          servable = Servable::Load(std::move(options), validation);
          return absl::OkStatus();
        });
    if (!guarded.ok()) return guarded;
    return servable;
  }

  // Loads the version Export or Register just added and reports on it.
  absl::StatusOr<v1::ModelVersionStatus> LoadAdded(const v1::ModelConfig& config) {
    const absl::Status loaded = Load(config.name());  // published when it loads
    for (const v1::ModelStatus& model : Statuses(/*with_configs=*/false)) {
      if (model.name() != config.name()) continue;
      for (const v1::ModelVersionStatus& v : model.versions()) {
        if (v.config().version() != config.version()) continue;
        if (!loaded.ok()) {
          // The version stays in the repository (and in ListModels).
          const std::string where =
              absl::StrCat("model ", config.name(), " version ", config.version());
          absl::string_view reason = loaded.message();
          absl::ConsumePrefix(&reason, absl::StrCat(where, ": "));
          return absl::Status(
              loaded.code(),
              absl::StrCat(where, " was added to the repository but not loaded: ", reason));
        }
        v1::ModelVersionStatus status = v;
        *status.mutable_config() = config;
        return status;
      }
    }
    RETURN_IF_ERROR(loaded);
    return absl::InternalError(absl::StrCat("model ", config.name(), " version ", config.version(),
                                            " vanished from the repository"));
  }

  // Every model and version, on disk or known to the server, sorted.
  std::vector<v1::ModelStatus> Statuses(bool with_configs) const {
    std::map<std::string, std::pair<std::map<int64_t, VersionState>, ServedMap>> known;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& [name, entry] : models_) known[name] = {entry.versions, entry.served};
    }
    for (const std::string& name : repository_->ModelNames()) known[name];
    std::vector<v1::ModelStatus> statuses;
    for (auto& [name, known_model] : known) {
      const auto& [states, served] = known_model;
      std::set<int64_t> versions;
      for (int64_t v : repository_->Versions(name)) versions.insert(v);
      for (const auto& [v, state] : states) versions.insert(v);
      if (versions.empty()) continue;
      v1::ModelStatus& model = statuses.emplace_back();
      model.set_name(name);
      absl::StatusOr<v1::ModelSettings> settings = repository_->ReadSettings(name);
      *model.mutable_version_policy() =
          Effective(settings.ok() ? settings->version_policy() : v1::VersionPolicy());
      for (const auto& [v, servable] : served) model.add_served_versions(v);
      for (int64_t v : versions) {
        v1::ModelVersionStatus* status = model.add_versions();
        auto it = states.find(v);
        if (it != states.end()) {
          status->set_state(it->second.state);
          status->set_reason(it->second.reason);
          if (it->second.validation.has_value()) {
            *status->mutable_validation() = *it->second.validation;
          }
        } else {
          status->set_state(kUnavailable);
          status->set_reason(Unselected(model.version_policy(), v, served));
        }
        if (with_configs) AddConfig(name, v, status);
        status->mutable_config()->set_name(name);
        status->mutable_config()->set_version(v);
      }
    }
    return statuses;
  }

  void AddConfig(const std::string& name, int64_t version, v1::ModelVersionStatus* status) const {
    absl::StatusOr<v1::ModelConfig> config = repository_->ReadConfig(name, version);
    if (config.ok()) {
      *status->mutable_config() = *std::move(config);
    } else if (status->reason().empty()) {
      status->set_reason(std::string(config.status().message()));
    }
  }

  void Retire(std::shared_ptr<Servable> servable) const {
    if (servable == nullptr) return;
    std::lock_guard<std::mutex> lock(retired_mu_);
    retired_.push_back(std::move(servable));
  }

  // Stops and destroys retired servables no request holds any more, on the
  // calling thread (a public call's, never a batcher's).
  void Sweep() const {
    std::vector<std::shared_ptr<Servable>> idle;
    {
      std::lock_guard<std::mutex> lock(retired_mu_);
      if (retired_.empty()) return;
      auto keep =
          std::partition(retired_.begin(), retired_.end(),
                         [](const std::shared_ptr<Servable>& s) { return s.use_count() > 1; });
      idle.assign(std::make_move_iterator(keep), std::make_move_iterator(retired_.end()));
      retired_.erase(keep, retired_.end());
    }
    for (const auto& servable : idle) servable->Stop();
  }

  const Options options_;
  const std::unique_ptr<ModelRepository> repository_;
  const torch::Device device_;
  const DeviceCapabilities capabilities_;
  const std::unique_ptr<Metrics> own_metrics_;  // when Options.metrics is null
  Metrics* const metrics_;

  mutable std::mutex mu_;
  std::map<std::string, Entry> models_;  // guarded by mu_
  bool ready_ = false;                   // guarded by mu_
  std::atomic<bool> shutting_down_{false};

  mutable std::mutex retired_mu_;
  mutable std::vector<std::shared_ptr<Servable>> retired_;  // guarded by retired_mu_

  // Per model: serialises a change and its publication with the sync
  // thread's applying of other daemons' changes. Taken before any other.
  std::map<std::string, std::shared_ptr<std::mutex>> change_mus_;  // guarded by mu_
  // Follows the catalog; null without one. Set once, before LoadRepository.
  std::unique_ptr<ModelCatalogSync> sync_;
};

absl::StatusOr<std::unique_ptr<ModelServer>> ModelServer::Create(Options options) {
  if (options.state_dir.empty()) return absl::InvalidArgumentError("state_dir: empty");
  if (options.calibration_items < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("calibration_items: ", options.calibration_items, ", expected >= 1"));
  }
  if (options.default_max_batch_size < 1 || options.default_max_batch_size > kMaxBatchSizeLimit) {
    return absl::InvalidArgumentError(
        absl::StrCat("default_max_batch_size: ", options.default_max_batch_size, ", expected 1..",
                     kMaxBatchSizeLimit));
  }
  if (options.default_max_queue_delay_us < 0 ||
      options.default_max_queue_delay_us > kMaxQueueDelayUsLimit) {
    return absl::InvalidArgumentError(
        absl::StrCat("default_max_queue_delay_us: ", options.default_max_queue_delay_us,
                     ", expected 0..", kMaxQueueDelayUsLimit));
  }
  if (!options.device.probed()) {
    return absl::InvalidArgumentError("device: not probed (ProbeDevice)");
  }
  const DeviceCapabilities capabilities = *options.device.capabilities;
  const torch::Device device = capabilities.device;
  ModelRepository::Options repository_options;
  repository_options.root =
      options.repository_root.empty() ? options.state_dir + "/models" : options.repository_root;
  repository_options.shared = options.catalog != nullptr;
  repository_options.max_versions = options.max_versions_per_model;
  ASSIGN_OR_RETURN(std::unique_ptr<ModelRepository> repository,
                   ModelRepository::Create(std::move(repository_options)));
  std::unique_ptr<Metrics> own_metrics;
  if (options.metrics == nullptr) own_metrics = std::make_unique<Metrics>();
  ModelCatalog* const catalog = options.catalog;
  const absl::Duration recheck = options.catalog_recheck;
  auto impl = std::make_unique<Impl>(std::move(options), std::move(repository), device,
                                     std::move(capabilities), std::move(own_metrics));
  if (catalog != nullptr) {
    Impl* const target = impl.get();
    ASSIGN_OR_RETURN(std::unique_ptr<ModelCatalogSync> sync,
                     ModelCatalogSync::Create({.catalog = catalog,
                                               .recheck = recheck,
                                               .apply = [target](const ModelCatalogRecord& r) {
                                                 return target->ApplyRecord(r);
                                               }}));
    impl->SetSync(std::move(sync));
  }
  return std::unique_ptr<ModelServer>(new ModelServer(std::move(impl)));
}

ModelServer::ModelServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ModelServer::~ModelServer() { impl_->Shutdown(); }

void ModelServer::LoadRepository() { impl_->LoadRepository(); }
bool ModelServer::ready() const { return impl_->ready(); }
void ModelServer::Shutdown() { impl_->Shutdown(); }
void ModelServer::CatalogChanged() { impl_->CatalogChanged(); }

absl::StatusOr<bool> ModelServer::ModelReady(const std::string& name,
                                             const std::string& version) const {
  return impl_->ModelReady(name, version);
}

absl::StatusOr<inference::ModelMetadataResponse> ModelServer::ModelMetadata(
    const std::string& name, const std::string& version) const {
  return impl_->ModelMetadata(name, version);
}

void ModelServer::Infer(const inference::ModelInferRequest* request,
                        inference::ModelInferResponse* response,
                        std::function<void(absl::Status)> done) {
  impl_->Infer(request, response, std::move(done));
}

inference::RepositoryIndexResponse ModelServer::RepositoryIndex(bool ready_only) const {
  return impl_->RepositoryIndex(ready_only);
}

absl::Status ModelServer::Load(const std::string& name) { return impl_->Load(name); }
absl::Status ModelServer::Unload(const std::string& name) { return impl_->Unload(name); }
absl::Status ModelServer::DeleteVersion(const std::string& name, int64_t version) {
  return impl_->DeleteVersion(name, version);
}

absl::StatusOr<v1::ModelVersionStatus> ModelServer::Export(const v1::Job& job,
                                                           const v1::ExportModelRequest& request) {
  return impl_->Export(job, request);
}

absl::StatusOr<v1::ModelVersionStatus> ModelServer::Register(
    const v1::RegisterModelRequest& request) {
  return impl_->Register(request);
}

std::vector<v1::ModelStatus> ModelServer::List() const { return impl_->List(); }

absl::StatusOr<v1::ModelStatus> ModelServer::SetVersionPolicy(const std::string& name,
                                                              const v1::VersionPolicy& policy) {
  return impl_->SetVersionPolicy(name, policy);
}

absl::StatusOr<v1::ModelStatus> ModelServer::Rollback(const std::string& name, int64_t version) {
  return impl_->Rollback(name, version);
}

absl::StatusOr<inference::ModelStatisticsResponse> ModelServer::Statistics(
    const std::string& name, const std::string& version) const {
  return impl_->Statistics(name, version);
}

}  // namespace mantissa
