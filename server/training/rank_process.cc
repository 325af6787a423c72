#include "server/training/rank_process.h"

#include <signal.h>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "mantissa/internal/rank.pb.h"
#include "server/common/logging.h"
#include "server/metrics/metrics.h"
#include "server/runtime/torch_runtime.h"
#include "server/training/rank_channel.h"
#include "server/training/rank_options.h"

namespace mantissa {
namespace {

using internal::RankControl;
using internal::RankReport;
using internal::RankTask;

// A rank that reports no progress for this long still says which step it is
// at, so the daemon's watchdog and its laggard naming stay current.
constexpr absl::Duration kStepsEvery = absl::Seconds(5);

// What the daemon asked on stdin; shared with the reader thread, which
// outlives the context (it stays blocked in read until the process exits).
struct StopState {
  std::atomic<int> stop{static_cast<int>(StopReason::kNone)};
};

void ReadControl(std::shared_ptr<StopState> state, std::shared_ptr<RankChannel> control) {
  while (true) {
    RankControl message;
    absl::StatusOr<bool> got = control->Read(message);
    if (!got.ok() || !*got) {
      // No daemon to report to: the job is no longer this worker's.
      state->stop = static_cast<int>(StopReason::kLeaseLost);
      return;
    }
    // Reasons only escalate (kNone < kCancelled < kPreempted < kLeaseLost).
    int current = state->stop.load();
    while (message.stop() > current &&
           !state->stop.compare_exchange_weak(current, static_cast<int>(message.stop()))) {
    }
  }
}

// The JobContext of one rank: its own copy of the job; rank 0's updates,
// warnings and step times go to the daemon over fd 3, every rank's step
// reaches it at each progress report.
class RankJobContext final : public JobContext {
 public:
  RankJobContext(v1::Job job, int rank, RankChannel& reports, std::shared_ptr<StopState> stop)
      : job_(std::move(job)),
        rank_(rank),
        reports_(reports),
        stop_(std::move(stop)),
        metrics_(metrics_registry_.StartJob(job_.id(), job_.spec().model(),
                                            job_.effective_precision())) {}

  bool cancelled() const override { return stop_reason() != StopReason::kNone; }
  StopReason stop_reason() const override { return static_cast<StopReason>(stop_->stop.load()); }

  void Update(v1::JobEvent::Type type, const std::function<void(v1::Job&)>& mutate,
              const std::string& message) override {
    mutate(job_);
    if (type == v1::JobEvent::PROGRESS) SendSteps(job_.progress().step());
    if (rank_ != 0) return;
    RankReport report;
    RankReport::Update* update = report.mutable_update();
    update->set_type(type);
    *update->mutable_job() = job_;
    update->set_message(message);
    Send(report);
  }

  void Warn(const std::string& warning) override {
    if (rank_ != 0) return;
    RankReport report;
    report.set_warning(warning);
    Send(report);
  }

  JobMetrics& metrics() override { return *metrics_; }

  // After every step (RankOptions::on_step).
  void OnStep(int64_t step, double seconds) {
    step_ = step;
    alive_step_ = step;
    if (rank_ == 0) seconds_.push_back(seconds);
    if (absl::Now() - last_steps_ >= kStepsEvery) SendSteps(step);
  }

  // The step times since the last progress report, before the rank's end.
  void FlushSteps() {
    if (!seconds_.empty()) SendSteps(step_);
  }

  // From the heartbeat thread: the rank is alive at its latest step, also
  // while no step ends (data loading, rank 0's evaluation, a checkpoint).
  void SendAlive() {
    RankReport report;
    report.mutable_steps()->set_step(alive_step_.load());
    Send(report);
  }

  void Send(const RankReport& report) {
    // A daemon that is gone closes stdin too: the reader stops the rank.
    if (absl::Status s = reports_.Write(report); !s.ok() && !write_failed_.exchange(true)) {
      LogWarning(absl::StrCat("rank ", rank_, ": ", s.message()));
    }
  }

 private:
  void SendSteps(int64_t step) {
    RankReport report;
    RankReport::Steps* steps = report.mutable_steps();
    steps->set_step(std::max(step, step_));
    for (double s : seconds_) steps->add_seconds(s);
    seconds_.clear();
    last_steps_ = absl::Now();
    Send(report);
  }

  v1::Job job_;
  const int rank_;
  RankChannel& reports_;
  std::shared_ptr<StopState> stop_;
  Metrics metrics_registry_;  // local and unserved: the daemon keeps the job's series
  std::shared_ptr<JobMetrics> metrics_;
  int64_t step_ = 0;
  std::atomic<int64_t> alive_step_{0};
  std::vector<double> seconds_;
  absl::Time last_steps_ = absl::Now();
  std::atomic<bool> write_failed_{false};
};

// Says the rank is alive every kStepsEvery until destroyed.
class Heartbeat {
 public:
  explicit Heartbeat(RankJobContext& context)
      : thread_([this, &context] {
          std::unique_lock<std::mutex> lock(mu_);
          while (!cv_.wait_for(lock, absl::ToChronoMilliseconds(kStepsEvery),
                               [this] { return done_; })) {
            context.SendAlive();
          }
        }) {}
  ~Heartbeat() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;  // last: starts once the rest is built
};

RankReport FinalReport(const absl::StatusOr<v1::JobResult>& result) {
  RankReport report;
  RankReport::Final* final = report.mutable_final();
  final->set_ok(result.ok());
  if (result.ok()) {
    *final->mutable_result() = *result;
  } else {
    final->set_code(static_cast<int>(result.status().code()));
    final->set_message(std::string(result.status().message()));
  }
  return report;
}

// The rank's failure before it could train (no task, a bad environment).
int FailEarly(RankChannel& reports, const absl::Status& status) {
  LogError(absl::StrCat("rank process: ", status.message()));
  (void)reports.Write(FinalReport(status));
  return 1;
}

}  // namespace

int RunRankProcess(TrainingJobRunner::Options runner_options) {
  // Gloo writes to its peers' sockets without MSG_NOSIGNAL: a peer that died
  // must fail the collective with EPIPE, not kill this rank.
  signal(SIGPIPE, SIG_IGN);
  RankChannel reports(3);
  auto control = std::make_shared<RankChannel>(0);
  RankTask task;
  absl::StatusOr<bool> got = control->Read(task);
  if (!got.ok() || !*got) {
    return FailEarly(reports,
                     got.ok() ? absl::DataLossError("no RankTask on stdin") : got.status());
  }
  absl::StatusOr<RankEnvironment> env = RankEnvironment::FromEnvironment();
  if (!env.ok()) return FailEarly(reports, env.status());
  ConfigureIntraOpThreads(std::max(1, task.intra_op_threads()));
  // The ranks' own job: it must not start ranks of its own.
  runner_options.ranks = RankLauncher::Options();
  auto runner = TrainingJobRunner::Create(std::move(runner_options));
  if (!runner.ok()) return FailEarly(reports, runner.status());

  auto stop = std::make_shared<StopState>();
  // Detached: it stays blocked in read(0) until the daemon closes the pipe
  // or this process exits.
  std::thread(ReadControl, stop, control).detach();
  RankJobContext context(task.job(), env->rank, reports, stop);
  RankOptions rank;
  rank.env = *env;
  rank.store_prefix = task.store_prefix();
  rank.collective_timeout = absl::Milliseconds(task.collective_timeout_ms());
  rank.address = task.address();
  rank.on_store_ready = [&context](int port) {
    RankReport report;
    report.mutable_store_ready()->set_port(port);
    context.Send(report);
  };
  rank.on_step = [&context](int64_t step, double seconds) { context.OnStep(step, seconds); };
  absl::StatusOr<v1::JobResult> result;
  {
    Heartbeat heartbeat(context);
    result = (*runner)->RunRank(task.job(), context, rank);
  }
  // CANCELLED only comes from a stop the ranks agreed on, which may reach
  // this rank through the others before its own stdin says so.
  const bool asked = absl::IsCancelled(result.status());
  if (!result.ok() && !asked) {
    const std::string line =
        absl::StrCat("rank ", env->rank, " of ", env->world_size, ": ", result.status().message());
    // ABORTED: stopped with a checkpoint as another node shuts down; the
    // job is released, not failed.
    absl::IsAborted(result.status()) ? LogInfo(line) : LogError(line);
  }
  context.FlushSteps();
  context.Send(FinalReport(result));
  return result.ok() || asked ? 0 : 1;
}

}  // namespace mantissa
