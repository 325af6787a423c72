#ifndef MANTISSA_SERVER_SERVING_MODEL_STATISTICS_H_
#define MANTISSA_SERVER_SERVING_MODEL_STATISTICS_H_

#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "absl/time/time.h"
#include "inference/grpc_service.pb.h"

namespace mantissa {

// How one answered request spent its time, as Triton splits it.
struct RequestTiming {
  int64_t items = 0;              // the request's batch size
  absl::Duration total;           // from arrival to the answer written
  absl::Duration queue;           // waiting in the dynamic batcher
  absl::Duration compute_input;   // decoding and converting its tensors
  absl::Duration compute_infer;   // the forward of the merged batch holding it
  absl::Duration compute_output;  // slicing and encoding its outputs
};

// Triton's per-model statistics (the ModelStatistics extension), one
// ModelStatistics per version, counted since the version was first served
// by this daemon. Free of torch. Thread-safe.
class ModelStatistics {
 public:
  explicit ModelStatistics(std::string model) : model_(std::move(model)) {}

  // One request answered OK by `version`.
  void RecordSuccess(int64_t version, const RequestTiming& timing);
  // One request refused or failed after it was routed to `version` (0 when
  // it never reached one: unknown version, nothing served).
  void RecordFailure(int64_t version, absl::Duration total);
  // One forward of a merged batch of `batch_size` items by `version`.
  void RecordExecution(int64_t version, int64_t batch_size, absl::Duration compute);

  // Appends this model's statistics to `response`: every version with any
  // recorded request or forward when `version` is 0, else that version's
  // (zeros when none was recorded). batch_stats ascend by batch size.
  void AppendTo(int64_t version, inference::ModelStatisticsResponse* response) const;

 private:
  const std::string model_;
  mutable std::mutex mu_;
  std::map<int64_t, inference::ModelStatistics> versions_;  // guarded by mu_
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_SERVING_MODEL_STATISTICS_H_
