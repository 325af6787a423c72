#ifndef MANTISSA_SERVER_TRAINING_RANK_LAUNCHER_H_
#define MANTISSA_SERVER_TRAINING_RANK_LAUNCHER_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "mantissa/v1/training.pb.h"
#include "server/jobs/job_runner.h"

namespace mantissa {

// Runs a data-parallel job as child processes, one per rank on this node:
// the daemon's own binary in rank mode (--rank_mode, with the daemon's other
// flags), with torchrun's environment (RANK, LOCAL_RANK, WORLD_SIZE,
// MASTER_ADDR, MASTER_PORT), a RankTask on its stdin and its RankReports on
// fd 3 (rank.proto). A NCCL abort or a CUDA fault in a rank ends that
// process, never the daemon.
//
// Rank 0 starts first and hosts the rendezvous store on a free port; the
// other ranks start once it reports the port. Rank 0's updates, warnings
// and step times reach the JobContext (and so the store, watchers and
// metrics); the context's stop requests reach every rank, which agree on
// the step to stop at. The first rank to fail (a non-zero exit, a signal, an
// error it reported) fails the run with the rank, the host and the cause;
// the other ranks get SIGTERM, then SIGKILL after kill_grace.
class RankLauncher {
 public:
  struct Options {
    std::string executable;              // the daemon's binary (/proc/self/exe)
    std::vector<std::string> arguments;  // the daemon's flags (argv[1..]); --rank_mode is added
    absl::Duration collective_timeout = absl::Seconds(300);  // --collective_timeout_seconds
    absl::Duration kill_grace = absl::Seconds(10);
    // This node's address: rank 0's store and every rank's Gloo transport
    // bind it, and other nodes reach rank 0 there.
    std::string address = "127.0.0.1";
    std::string host;  // this host's name, for errors
    // The daemon's intra-op threads; on the CPU each rank gets its share.
    int intra_op_threads = 1;
    bool cuda = false;  // LOCAL_RANK picks cuda:<local rank>
  };

  // This node's part of the job.
  struct Node {
    int node_rank = 0;
    int num_nodes = 1;
    // node_rank > 0: where rank 0's store listens (from the leader).
    std::string master_addr;
    int master_port = 0;
    // node_rank 0 of several: tells the other nodes where rank 0's store
    // listens, once it does.
    std::function<absl::Status(const std::string& addr, int port)> publish_rendezvous;
  };

  static absl::StatusOr<std::unique_ptr<RankLauncher>> Create(Options options);

  // Starts this node's job.spec().devices() ranks and waits for them: rank
  // 0's result on node 0 (an empty result on the others), CANCELLED when the
  // context stopped the job, or the first rank's failure.
  absl::StatusOr<v1::JobResult> Run(const v1::Job& job, JobContext& context, const Node& node);

  // The fields of a v1::Job that a runner writes (progress, stats, memory,
  // checkpoint, result, world size, ...), copied from a rank's job into the
  // daemon's.
  static void CopyRunnerFields(const v1::Job& from, v1::Job& to);

 private:
  explicit RankLauncher(Options options) : options_(std::move(options)) {}
  const Options options_;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_TRAINING_RANK_LAUNCHER_H_
