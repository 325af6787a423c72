#ifndef MANTISSA_SERVER_TRAINING_DATA_PARALLEL_H_
#define MANTISSA_SERVER_TRAINING_DATA_PARALLEL_H_

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace mantissa {

// One rank's view of a data-parallel job's process group, on PyTorch's own
// c10d: a TCPStore (hosted by rank 0) under a PrefixStore per job and
// attempt for rendezvous, ProcessGroupNCCL for CUDA tensors and
// ProcessGroupGloo for CPU tensors. Gloo also carries the control plane
// (stop agreement, loss sums) on the host, so a CUDA job's control messages
// never wait on its stream.
//
// What the trainer asks of it, in Fabric's DDP order: broadcast the initial
// weights from rank 0; after the last backward of a step, all-reduce the
// gradients (summed, in buckets of about bucket_bytes; the trainer weights
// each rank's loss so the sum is the global mean) before the grad scaler
// unscales them and before clipping; the grad scaler's found-inf and FP8
// amax histories reduced with max.
//
// Collectives throw c10::Error on a peer that left or a timeout; the rank's
// one LibTorch boundary (GuardTorch) turns that into its failure. Used from
// one thread (the rank's trainer).
class DataParallel {
 public:
  struct Options {
    int rank = 0;
    int world_size = 1;
    // Where rank 0's TCPStore listens. Rank 0: master_port 0 picks a free
    // port, reported through on_store_ready before the group forms.
    std::string master_addr = "127.0.0.1";
    int master_port = 0;
    // The address this rank's Gloo transport binds (its own host's).
    std::string address = "127.0.0.1";
    // Every key of this group lives under it: "<job id>/<attempt>".
    std::string store_prefix;
    absl::Duration timeout = absl::Seconds(300);
    // The rank's device: gradients and the FP8 state live there.
    torch::Device device = torch::kCPU;
    int64_t bucket_bytes = int64_t{25} << 20;
    // Rank 0 only: called with the store's port once it listens.
    std::function<void(int port)> on_store_ready;
  };

  // Forms the group; blocks until every rank joined or the timeout passed
  // (DEADLINE_EXCEEDED naming the ranks' rendezvous). INVALID_ARGUMENT for
  // a bad rank or world size.
  static absl::StatusOr<std::unique_ptr<DataParallel>> Create(Options options);
  ~DataParallel();

  int rank() const;
  int world_size() const;
  // "gloo" or "nccl": the backend of the device's tensors.
  std::string backend() const;

  // Copies rank 0's tensors into every rank's, in place (parameters and
  // buffers after the model is built or restored).
  void Broadcast(const std::vector<torch::Tensor>& tensors);

  // Sums every parameter's gradient over the ranks, in place, in flat
  // buckets of about bucket_bytes (one per dtype). An undefined gradient
  // (a rank with no items in its last batch) counts as zeros.
  void AllReduceGradients(const std::vector<torch::Tensor>& parameters);

  // In place, over the ranks: max (found-inf, FP8 amax histories) and sum
  // (the interval's loss and item counts), on the tensor's own device.
  void AllReduceMax(const torch::Tensor& tensor);
  void AllReduceSum(const torch::Tensor& tensor);

  // The largest of the ranks' `local` values, on the host (Gloo): the step's
  // stop agreement, so every rank stops at the same step for the same reason.
  int64_t AgreeMax(int64_t local);

  // True once a collective threw: a peer left, its host went away or the
  // collective timed out. The rank's failure is then the group's, not its
  // own (the job may be retried as a whole).
  bool collective_failed() const { return collective_failed_; }

 private:
  // Runs `collective`, noting when it throws.
  template <typename F>
  auto Noting(F&& collective) -> decltype(collective()) {
    try {
      return collective();
    } catch (...) {
      collective_failed_ = true;
      throw;
    }
  }

  struct Group;
  explicit DataParallel(std::unique_ptr<Group> group);
  std::unique_ptr<Group> group_;
  bool collective_failed_ = false;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_TRAINING_DATA_PARALLEL_H_
