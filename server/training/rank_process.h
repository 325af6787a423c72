#ifndef MANTISSA_SERVER_TRAINING_RANK_PROCESS_H_
#define MANTISSA_SERVER_TRAINING_RANK_PROCESS_H_

#include "server/training/training_job_runner.h"

namespace mantissa {

// The body of `mantissad --rank_mode`: one rank of a data-parallel job,
// started by the daemon's RankLauncher. Reads its RankTask from stdin and
// its place from the environment (RankEnvironment), trains with
// TrainingJobRunner::RunRank, reports on fd 3 (rank 0: updates, warnings,
// step times; every rank: its step at each progress report and its end) and
// stops when the daemon says so on stdin. Returns the process's exit code: 0
// when the rank finished (or was cancelled as asked), 1 otherwise.
int RunRankProcess(TrainingJobRunner::Options runner_options);

}  // namespace mantissa

#endif  // MANTISSA_SERVER_TRAINING_RANK_PROCESS_H_
