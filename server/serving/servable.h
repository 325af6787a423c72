#ifndef MANTISSA_SERVER_SERVING_SERVABLE_H_
#define MANTISSA_SERVER_SERVING_SERVABLE_H_

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "mantissa/v1/serving.pb.h"
#include "server/metrics/metrics.h"
#include "server/runtime/device_capabilities.h"
#include "server/serving/dynamic_batcher.h"
#include "server/serving/model_statistics.h"
#include "server/serving/shape_limits.h"

namespace mantissa {

// The dtype of a serving precision's datatype (ServingDatatype):
// "bf16-true" -> kBFloat16, "16-true" -> kHalf, "32-true" -> kFloat32;
// INVALID_ARGUMENT naming `precision` otherwise.
absl::StatusOr<torch::Dtype> ServingDtype(const std::string& precision);

// Resolves a requested serving precision on a device: empty = "16-true"
// where the device computes fp16, else "bf16-true". FAILED_PRECONDITION
// naming the field `precision`, the device and the precisions valid there
// when the device cannot compute the requested one.
absl::StatusOr<std::string> ResolveServingPrecision(const std::string& requested,
                                                    const DeviceCapabilities& device);

// One loaded version of a model: the cast model on its device and the
// dynamic batcher that runs its forwards. Held by shared_ptr, as TensorFlow
// Serving's servable handles: the ModelServer's entry holds one reference and
// every queued request another, so a replaced version finishes what it took.
//
// The owner must make sure the last reference is never dropped on the
// servable's own batcher thread (ModelServer keeps one reference until it
// has seen the servable idle; see model_server.cc). Thread-safe.
class Servable {
 public:
  struct Options {
    v1::ModelConfig config;
    std::string version_dir;  // holds config.weights_file (calibration.pt, module.ts)
    torch::Device device = torch::kCPU;
    // Items in the calibration batch that validates the cast.
    int64_t calibration_items = 256;
    // Batching when the config leaves it unset.
    int64_t default_max_batch_size = 64;
    int64_t default_max_queue_delay_us = 500;
    Metrics* metrics = nullptr;  // batch sizes; not owned, may be null
    // The model's statistics, shared by its versions: each forward is
    // recorded (RecordExecution). May be null.
    std::shared_ptr<ModelStatistics> statistics;
    ShapeLimits shape_limits;  // bounds on the config's declared shapes
  };

  // Builds the fp32 model from the version directory, casts a copy to the
  // config's precision on `device`, validates the cast against fp32 on a
  // calibration batch (HalfCastValidator) and starts the batcher.
  // `validation`, when given, receives the figures whenever the validation
  // ran, also when it refused the cast. Errors: INVALID_ARGUMENT for a bad
  // config or weights that do not fit the model (naming the tensor),
  // FAILED_PRECONDITION for missing files, for casts with non-finite
  // outputs and for a promotion policy asking for the top-1 agreement of a
  // model without one, UNAVAILABLE for a cast that misses the config's
  // promotion policy (HalfCastValidator::Promote), INTERNAL for LibTorch
  // failures.
  static absl::StatusOr<std::shared_ptr<Servable>> Load(
      Options options, v1::HalfCastValidation* validation = nullptr);

  ~Servable();  // Stop()

  const v1::ModelConfig& config() const { return config_; }
  const std::string& name() const { return config_.name(); }
  int64_t version() const { return config_.version(); }
  const std::vector<v1::TensorSpec>& inputs() const { return inputs_; }
  const std::vector<v1::TensorSpec>& outputs() const { return outputs_; }
  int64_t max_batch_size() const { return max_batch_size_; }
  torch::Dtype dtype() const { return dtype_; }
  torch::Device device() const { return device_; }
  const v1::HalfCastValidation& validation() const { return validation_; }

  // One forward on the calling thread under InferenceMode: `inputs` in
  // declaration order, [N, ...] on any device (floats converted to the
  // model's dtype); returns one CPU tensor per declared output in its
  // declared dtype. For the batcher, benchmarks and tests.
  absl::StatusOr<std::vector<torch::Tensor>> Run(const std::vector<torch::Tensor>& inputs);

  // Queues decoded inputs on the batcher; `done` runs on the batcher thread
  // after the forward. Language models: INVALID_ARGUMENT for windows longer
  // than seq_len or token ids outside the vocabulary, checked here so one
  // bad request cannot fail the batch it would share. RESOURCE_EXHAUSTED
  // when the queue is full, UNAVAILABLE after Stop; `done` is not called
  // when this returns an error.
  absl::Status Enqueue(DynamicBatcher::Task task);

  // Refuses new requests, runs the queued ones and joins the batcher
  // thread. Idempotent; not on the batcher thread.
  void Stop();

  // The model behind the servable, as Load built it (internal).
  class Forward;

 private:
  Servable();
  // Load's steps: checks the config and sets the members it decides; runs
  // the calibration batch through `reference` (fp32) and the served model
  // and refuses a cast with non-finite outputs; starts the batcher.
  absl::Status Configure(const Options& options);
  absl::Status ValidateCast(const Options& options, Forward& reference,
                            v1::HalfCastValidation* validation);
  absl::Status StartBatcher(const Options& options);

  v1::ModelConfig config_;
  std::string where_;  // "model NAME version N", for errors
  std::vector<v1::TensorSpec> inputs_;
  std::vector<v1::TensorSpec> outputs_;
  std::vector<torch::Dtype> output_dtypes_;
  torch::Dtype dtype_ = torch::kFloat32;
  torch::Device device_;
  int64_t max_batch_size_ = 64;
  v1::HalfCastValidation validation_;
  std::unique_ptr<Forward> model_;
  std::shared_ptr<InferenceMetrics> metrics_;  // may be null
  std::unique_ptr<DynamicBatcher> batcher_;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_SERVING_SERVABLE_H_
