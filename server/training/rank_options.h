#ifndef MANTISSA_SERVER_TRAINING_RANK_OPTIONS_H_
#define MANTISSA_SERVER_TRAINING_RANK_OPTIONS_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace mantissa {

// A rank's place in its job, as torchrun describes it in the environment:
// RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT.
struct RankEnvironment {
  int rank = 0;
  int local_rank = 0;
  int world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;  // rank 0: 0 = pick a free port

  // INVALID_ARGUMENT naming the variable that is missing or malformed.
  static absl::StatusOr<RankEnvironment> FromEnvironment();
};

// What one rank of a data-parallel job needs beside the job itself
// (TrainingJobRunner::RunRank).
struct RankOptions {
  RankEnvironment env;
  std::string store_prefix;  // "<job id>/<attempt>"
  absl::Duration collective_timeout = absl::Seconds(300);
  std::string address = "127.0.0.1";  // this rank's Gloo address
  // Rank 0: the rendezvous store listens on `port`.
  std::function<void(int port)> on_store_ready;
  // After every step, with its wall time (rank 0 relays them as metrics).
  std::function<void(int64_t step, double seconds)> on_step;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_TRAINING_RANK_OPTIONS_H_
