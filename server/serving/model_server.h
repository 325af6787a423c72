#ifndef MANTISSA_SERVER_SERVING_MODEL_SERVER_H_
#define MANTISSA_SERVER_SERVING_MODEL_SERVER_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "inference/grpc_service.pb.h"
#include "mantissa/v1/serving.pb.h"
#include "mantissa/v1/training.pb.h"
#include "server/common/file_roots.h"
#include "server/metrics/metrics.h"
#include "server/runtime/probed_device.h"
#include "server/serving/model_catalog.h"
#include "server/serving/shape_limits.h"

namespace mantissa {

// The serving half of the daemon: the model repository (NAME/VERSION/
// {config.json, weights} and NAME/model.json, by default under
// <state_dir>/models), the loaded servables (the versions of each model its
// version policy selects, by default the latest, cast to its serving
// precision and validated against fp32), and one dynamic batcher per served
// version running forwards on its own inference thread under InferenceMode.
//
// Several daemons may share one repository and one ModelCatalog: each
// change made through one of them (export, register, load, unload, delete)
// is recorded in the catalog after the files changed, and the others apply
// it on a sync thread of their own when told (CatalogChanged) or at the
// periodic recheck.
//
// Servables are shared: a request holds its servable until it completes, so
// a model replaced or unloaded mid-traffic finishes what it already took.
// Torch stays behind this header so that the gRPC services compile quickly.
// Thread-safe.
class ModelServer {
 public:
  struct Options {
    // Jobs' export artifacts are read from <state_dir>/jobs/<id>/export.pt.
    std::string state_dir;
    // As --model_repository; empty = <state_dir>/models.
    std::string repository_root;
    // The record of changes shared with the other daemons serving the same
    // repository root (not owned; outlives the server). Null: this daemon
    // is the repository's only user.
    ModelCatalog* catalog = nullptr;
    // How often the catalog is read without a CatalogChanged (a lost
    // notification costs at most this long).
    absl::Duration catalog_recheck = absl::Seconds(10);
    // The daemon's device (ProbeDevice, as --device), probed once; required.
    ProbedDevice device;
    Metrics* metrics = nullptr;  // not owned; outlives the server
    // Items in the calibration batch that validates each cast.
    int calibration_items = 256;
    // Batching of models whose config leaves it unset.
    int default_max_batch_size = 64;
    int64_t default_max_queue_delay_us = 500;
    // As --torchscript_root: where RegisterModel may copy modules from;
    // none = TorchScript registration is turned off (FAILED_PRECONDITION).
    FileRoots torchscript_roots;
    // As --max_tensor_dim and --max_tensor_elements: bounds on the shapes
    // RegisterModel and config.json declare.
    ShapeLimits shape_limits;
    // As --max_versions_per_model: versions one model may hold.
    int max_versions_per_model = 16;
  };

  static absl::StatusOr<std::unique_ptr<ModelServer>> Create(Options options);
  ~ModelServer();  // Shutdown()

  // Loads what the version policy of every model in the repository
  // selects, except models the catalog records as unloaded, then starts
  // following the catalog. A
  // model that fails (a bad config.json, a shape over the limits, an
  // allocation that fails, a module that throws) is left UNAVAILABLE with
  // its reason (and logged); never fatal.
  // ready() turns true when this returns.
  void LoadRepository();
  // LoadRepository has finished and Shutdown has not begun.
  bool ready() const;
  // The catalog changed (a store notification): wakes the sync thread, which
  // applies what other daemons changed. Cheap; callable from any thread.
  void CatalogChanged();
  // Refuses new requests, stops following the catalog, lets every batcher
  // finish the requests it holds and joins the inference threads.
  // Idempotent.
  void Shutdown();

  // --- inference.GRPCInferenceService. NOT_FOUND for unknown models or
  // versions; INVALID_ARGUMENT for malformed requests, naming the tensor.
  absl::StatusOr<bool> ModelReady(const std::string& name, const std::string& version) const;
  absl::StatusOr<inference::ModelMetadataResponse> ModelMetadata(const std::string& name,
                                                                 const std::string& version) const;
  // Validates `request`, converts its inputs to the model's precision and
  // queues them on the model's batcher. `done` runs exactly once: on an
  // inference thread after the forward, or on the calling thread when the
  // request is refused up front. `request` and `response` must stay valid
  // until then.
  void Infer(const inference::ModelInferRequest* request, inference::ModelInferResponse* response,
             std::function<void(absl::Status)> done);
  inference::RepositoryIndexResponse RepositoryIndex(bool ready_only) const;
  // Load, Unload, DeleteVersion, Export and Register record their change in
  // the catalog when they succeed; a change the catalog fails to record is
  // logged and retried, and still answered OK (it is done here).
  //
  // (Re)loads what the version policy of `name` selects from disk; a version
  // it replaces keeps serving the requests it holds. Requests without a
  // version go to the newest served version.
  absl::Status Load(const std::string& name);
  // Stops serving `name`; its files stay in the repository.
  absl::Status Unload(const std::string& name);
  // Deletes `version` of `name` from the repository (0: every version and
  // the model). The version being served is FAILED_PRECONDITION until it is
  // unloaded; NOT_FOUND for a missing model or version.
  absl::Status DeleteVersion(const std::string& name, int64_t version);

  // --- mantissa.v1.ModelService. `job` is a SUCCEEDED job (the service
  // checks its state); its export artifact holds the weights.
  absl::StatusOr<v1::ModelVersionStatus> Export(const v1::Job& job,
                                                const v1::ExportModelRequest& request);
  absl::StatusOr<v1::ModelVersionStatus> Register(const v1::RegisterModelRequest& request);
  std::vector<v1::ModelStatus> List() const;

  // Sets which versions of `name` are served and persists it in the
  // repository (NAME/model.json), then loads and unloads versions to match.
  // Bad input (an empty policy, num_versions 0, a version not in the
  // repository) is INVALID_ARGUMENT or NOT_FOUND and changes nothing; so
  // does a policy none of whose versions loads (the load's error). Returns
  // the model's status after the change.
  absl::StatusOr<v1::ModelStatus> SetVersionPolicy(const std::string& name,
                                                   const v1::VersionPolicy& policy);
  // SetVersionPolicy(name, specific [version]).
  absl::StatusOr<v1::ModelStatus> Rollback(const std::string& name, int64_t version);

  // --- Statistics extension: `name` empty = every known model, `version`
  // empty = every version with statistics. NOT_FOUND for an unknown model
  // or version.
  absl::StatusOr<inference::ModelStatisticsResponse> Statistics(const std::string& name,
                                                                const std::string& version) const;

 private:
  class Impl;
  explicit ModelServer(std::unique_ptr<Impl> impl);
  const std::unique_ptr<Impl> impl_;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_SERVING_MODEL_SERVER_H_
