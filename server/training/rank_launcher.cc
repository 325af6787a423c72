#include "server/training/rank_launcher.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "mantissa/internal/rank.pb.h"
#include "server/common/logging.h"
#include "server/training/rank_channel.h"

extern char** environ;

namespace mantissa {
namespace {

using internal::RankControl;
using internal::RankReport;

// How long the other ranks may take to end by themselves once one failed:
// a rank whose peer died fails its next collective within milliseconds, so
// by then the rank that caused it is known (a death outranks the errors it
// caused in the others).
constexpr absl::Duration kSettle = absl::Seconds(1);
constexpr absl::Duration kPoll = absl::Milliseconds(100);
// A rank that reports nothing between progress reports sends its step at
// least this often (rank_process.cc); the watchdog allows much more.
constexpr absl::Duration kWatchdogSlack = absl::Seconds(60);

// A message from a rank's report pipe, or its end.
struct Event {
  int local = 0;
  bool end = false;  // end of stream, or `error`
  absl::Status error;
  RankReport report;
};

// One rank process and what the daemon knows of it.
struct RankProcess {
  int rank = 0;   // global
  int local = 0;  // on this node
  pid_t pid = -1;
  std::unique_ptr<RankChannel> control;  // its stdin
  std::thread reader;
  bool reading = false;  // the reader has not seen the end yet
  bool exited = false;
  int wait_status = 0;
  bool signalled_by_us = false;
  bool has_final = false;
  RankReport::Final final;
  int64_t step = 0;
  absl::Time last_report;
};

std::string SignalName(int signal) {
  const char* abbrev = sigabbrev_np(signal);
  return abbrev != nullptr ? absl::StrCat("SIG", abbrev) : absl::StrCat("signal ", signal);
}

// The environment of a rank: the daemon's, with torchrun's variables set.
std::vector<std::string> RankEnvironmentStrings(int rank, int local, int world,
                                                const std::string& master_addr, int master_port) {
  static constexpr const char* kOwn[] = {
      "RANK=", "LOCAL_RANK=", "WORLD_SIZE=", "MASTER_ADDR=", "MASTER_PORT="};
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const bool own = std::any_of(std::begin(kOwn), std::end(kOwn),
                                 [&](const char* p) { return absl::StartsWith(*e, p); });
    if (!own) env.emplace_back(*e);
  }
  env.push_back(absl::StrCat("RANK=", rank));
  env.push_back(absl::StrCat("LOCAL_RANK=", local));
  env.push_back(absl::StrCat("WORLD_SIZE=", world));
  env.push_back(absl::StrCat("MASTER_ADDR=", master_addr));
  env.push_back(absl::StrCat("MASTER_PORT=", master_port));
  return env;
}

std::vector<char*> Pointers(std::vector<std::string>& strings) {
  std::vector<char*> p;
  for (std::string& s : strings) p.push_back(s.data());
  p.push_back(nullptr);
  return p;
}

// A pipe whose ends are close-on-exec and above the standard descriptors,
// so that the spawn's dup2 onto 0 and 3 never overwrites the other end.
absl::Status HighPipe(int fds[2]) {
  int raw[2];
  if (pipe2(raw, O_CLOEXEC) != 0) {
    return absl::ResourceExhaustedError(absl::StrCat("pipe: ", strerror(errno)));
  }
  for (int i = 0; i < 2; ++i) {
    fds[i] = fcntl(raw[i], F_DUPFD_CLOEXEC, 10);
    close(raw[i]);
  }
  if (fds[0] < 0 || fds[1] < 0) {
    if (fds[0] >= 0) close(fds[0]);
    if (fds[1] >= 0) close(fds[1]);
    return absl::ResourceExhaustedError(absl::StrCat("fcntl: ", strerror(errno)));
  }
  return absl::OkStatus();
}

// posix_spawn with the child's stdin from `stdin_fd` and fd 3 to
// `report_fd`, nothing else inherited, signals unblocked and at their
// defaults (the daemon blocks SIGTERM for sigwait), in a process group of
// its own (a terminal's ^C reaches the daemon, which stops its ranks).
absl::StatusOr<pid_t> Spawn(const std::string& executable, std::vector<std::string> argv,
                            std::vector<std::string> env, int stdin_fd, int report_fd) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, stdin_fd, 0);
  posix_spawn_file_actions_adddup2(&actions, report_fd, 3);
  posix_spawn_file_actions_addclosefrom_np(&actions, 4);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  for (int s : {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGCHLD}) sigaddset(&defaults, s);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
  std::vector<char*> args = Pointers(argv);
  std::vector<char*> envp = Pointers(env);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, executable.c_str(), &actions, &attr, args.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    return absl::InternalError(absl::StrCat("cannot start ", executable, ": ", strerror(rc)));
  }
  return pid;
}

// Whether a rank's own error says that a collective ran out of time (Gloo:
// "Timed out waiting ... for recv", c10d: "... timeout ...").
bool IsCollectiveTimeout(const RankReport::Final& final) {
  const std::string message = absl::AsciiStrToLower(final.message());
  return absl::StrContains(message, "timed out") || absl::StrContains(message, "timeout");
}

// A rank's own error: anything but the CANCELLED that a stop asked for.
bool ReportedFailure(const RankProcess& r, StopReason sent) {
  if (!r.has_final || r.final.ok()) return false;
  return !(r.final.code() == static_cast<int>(absl::StatusCode::kCancelled) &&
           sent != StopReason::kNone);
}

}  // namespace

// One Run: the node's rank processes, their report readers and the loop
// that relays, stops and judges them. Lives on the calling (job) thread.
class RankSession {
 public:
  RankSession(const RankLauncher::Options& options, const v1::Job& job, JobContext& context,
              const RankLauncher::Node& node)
      : options_(options), job_(job), context_(context), node_(node) {
    devices_ = std::max(1, job.spec().devices());
    world_ = devices_ * std::max(1, node.num_nodes);
    ranks_.resize(devices_);
    for (int i = 0; i < devices_; ++i) {
      ranks_[i].local = i;
      ranks_[i].rank = node.node_rank * devices_ + i;
    }
  }
  ~RankSession() { Terminate(); }

  absl::StatusOr<v1::JobResult> Run();

 private:
  absl::Status Watch(std::optional<absl::Time>& failed_at);
  absl::Status Start(RankProcess& r, const std::string& master_addr, int master_port);
  absl::Status StartOthers(int master_port);
  void Reader(int local, int fd);
  // Handles the reports queued within `wait`.
  void Drain(absl::Duration wait);
  void Handle(RankProcess& r, const RankReport& report);
  void Relay(const RankReport::Update& update);
  // Notes the ranks that exited (waitpid, WNOHANG).
  void Reap();
  void SendStop(StopReason stop);
  // Whether some rank failed, or went silent past the watchdog.
  bool AnyFailed() const;
  // The run's failure, once AnyFailed (and the others had kSettle to end).
  absl::Status Judge() const;
  absl::Status CrashOf(const RankProcess& r) const;
  absl::Status CollectiveTimeout() const;
  std::vector<const RankProcess*> Silent() const;
  absl::StatusOr<v1::JobResult> Outcome() const;
  // "rank 1 of 2 (host h, pid 123)"
  std::string Describe(const RankProcess& r) const;
  // Started, exited, and its reports read to the end; never started counts.
  static bool Ended(const RankProcess& r) { return r.pid < 0 || (r.exited && !r.reading); }
  bool AllEnded() const;
  // SIGTERM to the ranks still running, SIGKILL after kill_grace; reaps them
  // and joins their readers.
  void Terminate();

  const RankLauncher::Options& options_;
  const v1::Job& job_;
  JobContext& context_;
  const RankLauncher::Node& node_;
  int devices_ = 1;
  int world_ = 1;
  std::vector<RankProcess> ranks_;
  bool others_started_ = false;
  int store_port_ = 0;  // rank 0's, once it reported it
  StopReason sent_stop_ = StopReason::kNone;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Event> events_;
};

absl::Status RankSession::Start(RankProcess& r, const std::string& master_addr, int master_port) {
  int control[2], reports[2];
  if (absl::Status s = HighPipe(control); !s.ok()) return s;
  if (absl::Status s = HighPipe(reports); !s.ok()) {
    close(control[0]);
    close(control[1]);
    return s;
  }
  std::vector<std::string> argv = {options_.executable};
  argv.insert(argv.end(), options_.arguments.begin(), options_.arguments.end());
  argv.push_back("--rank_mode");
  absl::StatusOr<pid_t> pid =
      Spawn(options_.executable, std::move(argv),
            RankEnvironmentStrings(r.rank, r.local, world_, master_addr, master_port), control[0],
            reports[1]);
  close(control[0]);
  close(reports[1]);
  if (!pid.ok()) {
    close(control[1]);
    close(reports[0]);
    return pid.status();
  }
  r.pid = *pid;
  r.control = std::make_unique<RankChannel>(control[1]);
  r.last_report = absl::Now();
  r.reading = true;
  r.reader = std::thread([this, local = r.local, fd = reports[0]] { Reader(local, fd); });
  LogInfo(absl::StrCat("job ", job_.id(), ": rank ", r.rank, " of ", world_, " started (pid ",
                       r.pid, ")"));

  internal::RankTask task;
  *task.mutable_job() = job_;
  task.set_store_prefix(absl::StrCat(job_.id(), "/", job_.attempt()));
  task.set_collective_timeout_ms(absl::ToInt64Milliseconds(options_.collective_timeout));
  task.set_address(options_.address);
  task.set_intra_op_threads(options_.cuda ? options_.intra_op_threads
                                          : std::max(1, options_.intra_op_threads / devices_));
  // A rank that died at once is judged by its exit status, not by this.
  (void)r.control->Write(task);
  return absl::OkStatus();
}

absl::Status RankSession::StartOthers(int master_port) {
  others_started_ = true;
  if (node_.num_nodes > 1 && node_.publish_rendezvous) {
    if (absl::Status s = node_.publish_rendezvous(options_.address, master_port); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("publishing rank 0's rendezvous: ", s.message()));
    }
  }
  for (int i = 1; i < devices_; ++i) {
    if (absl::Status s = Start(ranks_[i], options_.address, master_port); !s.ok()) return s;
  }
  return absl::OkStatus();
}

void RankSession::Reader(int local, int fd) {
  RankChannel channel(fd);
  while (true) {
    Event event;
    event.local = local;
    absl::StatusOr<bool> got = channel.Read(event.report);
    if (!got.ok() || !*got) {
      event.end = true;
      if (!got.ok()) event.error = got.status();
    }
    const bool end = event.end;
    {
      std::lock_guard<std::mutex> lock(mu_);
      events_.push_back(std::move(event));
    }
    cv_.notify_all();
    if (end) return;
  }
}

void RankSession::Drain(absl::Duration wait) {
  std::deque<Event> events;
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, absl::ToChronoMilliseconds(wait), [&] { return !events_.empty(); });
    events.swap(events_);
  }
  for (Event& e : events) {
    RankProcess& r = ranks_[e.local];
    if (e.end) {
      r.reading = false;
      if (!e.error.ok()) {
        LogWarning(absl::StrCat("job ", job_.id(), ": rank ", r.rank, ": ", e.error.message()));
      }
      continue;
    }
    r.last_report = absl::Now();
    Handle(r, e.report);
  }
}

void RankSession::Handle(RankProcess& r, const RankReport& report) {
  switch (report.report_case()) {
    case RankReport::kStoreReady:
      if (r.local == 0 && node_.node_rank == 0 && !others_started_) {
        store_port_ = report.store_ready().port();
      }
      break;
    case RankReport::kUpdate:
      if (r.rank == 0) Relay(report.update());
      break;
    case RankReport::kWarning:
      if (r.rank == 0) context_.Warn(report.warning());
      break;
    case RankReport::kSteps:
      r.step = std::max(r.step, report.steps().step());
      if (r.rank == 0) {
        for (double s : report.steps().seconds()) context_.metrics().ObserveStep(s);
      }
      break;
    case RankReport::kFinal:
      r.has_final = true;
      r.final = report.final();
      break;
    case RankReport::REPORT_NOT_SET:
      break;
  }
}

// Rank 0's update, as the trainer in this process would have made it.
void RankSession::Relay(const RankReport::Update& update) {
  const v1::Job& from = update.job();
  if (from.progress().step() > ranks_[0].step) ranks_[0].step = from.progress().step();
  if (update.type() == v1::JobEvent::PROGRESS) {
    JobMetrics& metrics = context_.metrics();
    metrics.SetLoss(from.progress().loss());
    metrics.SetItemsPerSecond(from.progress().items_per_second());
    if (from.progress().has_max_grad_norm()) metrics.SetGradNorm(from.progress().max_grad_norm());
    const v1::PrecisionStats& stats = from.precision_stats();
    if (stats.grad_scaler_enabled()) metrics.SetGradScaler(stats.skipped_steps(), stats.scale());
    metrics.SetMemory(from.memory().peak_bytes(), from.memory().baseline_fp32_peak_bytes(),
                      from.memory().savings_ratio());
  }
  context_.Update(
      update.type(), [&](v1::Job& job) { RankLauncher::CopyRunnerFields(from, job); },
      update.message());
}

void RankSession::Reap() {
  for (RankProcess& r : ranks_) {
    if (r.pid < 0 || r.exited) continue;
    int status = 0;
    if (waitpid(r.pid, &status, WNOHANG) == r.pid) {
      r.exited = true;
      r.wait_status = status;
    }
  }
}

void RankSession::SendStop(StopReason stop) {
  sent_stop_ = stop;
  RankControl control;
  control.set_stop(static_cast<RankControl::Stop>(static_cast<int>(stop)));
  for (RankProcess& r : ranks_) {
    // A rank that already ended has nothing to stop.
    if (r.control != nullptr && !r.exited) (void)r.control->Write(control);
  }
}

bool RankSession::AllEnded() const {
  return std::all_of(ranks_.begin(), ranks_.end(), [](const RankProcess& r) { return Ended(r); });
}

std::string RankSession::Describe(const RankProcess& r) const {
  return absl::StrCat("rank ", r.rank, " of ", world_, " (host ", options_.host, ", pid ", r.pid,
                      ")");
}

// A rank that ended without reporting an error of its own: killed by a
// signal (not ours), a non-zero exit, or an exit without its Final.
absl::Status RankSession::CrashOf(const RankProcess& r) const {
  if (!Ended(r) || r.pid < 0) return absl::OkStatus();
  // Its work is done and reported: a fault on its way out costs nothing.
  if (r.has_final && r.final.ok()) return absl::OkStatus();
  const std::string at = absl::StrCat(" at step ", r.step);
  if (WIFSIGNALED(r.wait_status)) {
    if (r.signalled_by_us) return absl::OkStatus();
    const int sig = WTERMSIG(r.wait_status);
    return absl::UnavailableError(
        absl::StrCat(Describe(r), " was killed by signal ", sig, " (", SignalName(sig), ")", at));
  }
  const int code = WIFEXITED(r.wait_status) ? WEXITSTATUS(r.wait_status) : -1;
  if (r.has_final && !r.final.ok() && code != 0) return absl::OkStatus();  // it said why
  if (code != 0) {
    return absl::UnavailableError(
        absl::StrCat(Describe(r), " exited with status ", code, at, " without saying why"));
  }
  if (!r.has_final) {
    return absl::UnavailableError(
        absl::StrCat(Describe(r), " exited", at, " without reporting its end"));
  }
  return absl::OkStatus();
}

std::vector<const RankProcess*> RankSession::Silent() const {
  std::vector<const RankProcess*> silent;
  const absl::Time now = absl::Now();
  for (const RankProcess& r : ranks_) {
    if (r.pid < 0 || r.exited) continue;
    if (now - r.last_report > options_.collective_timeout + kWatchdogSlack) silent.push_back(&r);
  }
  return silent;
}

bool RankSession::AnyFailed() const {
  for (const RankProcess& r : ranks_) {
    if (!CrashOf(r).ok() || ReportedFailure(r, sent_stop_)) return true;
  }
  return !Silent().empty();
}

// A collective timed out: the rank whose last reported step is behind the
// others' is the one they waited for.
absl::Status RankSession::CollectiveTimeout() const {
  const RankProcess* timed_out = nullptr;
  for (const RankProcess& r : ranks_) {
    if (ReportedFailure(r, sent_stop_) && IsCollectiveTimeout(r.final)) {
      timed_out = &r;
      break;
    }
  }
  if (timed_out == nullptr) return absl::OkStatus();
  const RankProcess* laggard = nullptr;
  int64_t ahead = 0;
  for (const RankProcess& r : ranks_) {
    ahead = std::max(ahead, r.step);
    const bool behind = laggard == nullptr || r.step < laggard->step ||
                        (r.step == laggard->step && laggard->has_final && !r.has_final);
    if (behind) laggard = &r;
  }
  const std::string behind =
      laggard->step < ahead
          ? absl::StrCat(" fell behind at step ", laggard->step, " while the others reached step ",
                         ahead)
          : absl::StrCat(" did not join it (its last report: step ", laggard->step, ")");
  return absl::UnavailableError(absl::StrCat(
      "a collective timed out after ", absl::FormatDuration(options_.collective_timeout),
      " (--collective_timeout_seconds): ", Describe(*laggard), behind, "; rank ", timed_out->rank,
      ": ", timed_out->final.message()));
}

absl::Status RankSession::Judge() const {
  // A death explains the errors it caused in the others.
  for (const RankProcess& r : ranks_) {
    if (absl::Status s = CrashOf(r); !s.ok()) return s;
  }
  if (absl::Status s = CollectiveTimeout(); !s.ok()) return s;
  // A rank's own error before the UNAVAILABLE it caused in its peers (a
  // rank that fails leaves the others' next collective without it).
  for (const bool peer_errors : {false, true}) {
    for (const RankProcess& r : ranks_) {
      if (!ReportedFailure(r, sent_stop_)) continue;
      if (!peer_errors && r.final.code() == static_cast<int>(absl::StatusCode::kUnavailable)) {
        continue;
      }
      return absl::Status(static_cast<absl::StatusCode>(r.final.code()),
                          absl::StrCat("rank ", r.rank, " of ", world_, " (host ", options_.host,
                                       "): ", r.final.message()));
    }
  }
  const std::vector<const RankProcess*> silent = Silent();
  if (!silent.empty()) {
    std::vector<std::string> names;
    for (const RankProcess* r : silent) {
      names.push_back(absl::StrCat(Describe(*r), " at step ", r->step));
    }
    return absl::UnavailableError(
        absl::StrCat(absl::StrJoin(names, ", "), " reported nothing for more than ",
                     absl::FormatDuration(options_.collective_timeout + kWatchdogSlack),
                     " (--collective_timeout_seconds + 60 s)"));
  }
  return absl::OkStatus();
}

// Every rank ended well: rank 0's result (node 0), an empty one (the other
// nodes), or CANCELLED when they stopped as asked.
absl::StatusOr<v1::JobResult> RankSession::Outcome() const {
  for (const RankProcess& r : ranks_) {
    if (r.has_final && !r.final.ok()) {
      return absl::CancelledError(absl::StrCat("rank ", r.rank, ": ", r.final.message()));
    }
  }
  if (node_.node_rank == 0) return ranks_[0].final.result();
  return v1::JobResult();
}

void RankSession::Terminate() {
  bool any = false;
  for (RankProcess& r : ranks_) {
    if (r.pid < 0 || r.exited) continue;
    kill(r.pid, SIGTERM);
    kill(r.pid, SIGCONT);  // a stopped rank (SIGSTOP, a debugger) must see it too
    r.signalled_by_us = true;
    any = true;
  }
  const absl::Time deadline = absl::Now() + options_.kill_grace;
  while (any) {
    Reap();
    any = std::any_of(ranks_.begin(), ranks_.end(),
                      [](const RankProcess& r) { return r.pid >= 0 && !r.exited; });
    if (!any) break;
    if (absl::Now() >= deadline) {
      for (RankProcess& r : ranks_) {
        if (r.pid < 0 || r.exited) continue;
        LogWarning(absl::StrCat("job ", job_.id(), ": ", Describe(r),
                                " did not end on SIGTERM; killing it"));
        kill(r.pid, SIGKILL);
        int status = 0;
        waitpid(r.pid, &status, 0);
        r.exited = true;
        r.wait_status = status;
      }
      break;
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  for (RankProcess& r : ranks_) {
    if (r.control != nullptr) r.control->Close();
    if (r.reader.joinable()) r.reader.join();
  }
}

absl::StatusOr<v1::JobResult> RankSession::Run() {
  const bool leader = node_.node_rank == 0;
  if (leader) {
    if (absl::Status s = Start(ranks_[0], options_.address, 0); !s.ok()) return s;
  } else {
    others_started_ = true;
    for (RankProcess& r : ranks_) {
      if (absl::Status s = Start(r, node_.master_addr, node_.master_port); !s.ok()) return s;
    }
  }
  std::optional<absl::Time> failed_at;
  while (true) {
    if (absl::Status s = Watch(failed_at); !s.ok()) return s;
    if (failed_at.has_value() || AnyFailed()) {
      const absl::Status failure = Judge();
      if (!failure.ok()) {
        LogWarning(absl::StrCat("job ", job_.id(), ": ", failure.message()));
        // A worker that shuts down may see its ranks go first (a service
        // manager signals the whole group): the job is released, not failed.
        if (const StopReason stop = context_.stop_reason();
            stop == StopReason::kPreempted || stop == StopReason::kLeaseLost) {
          return absl::CancelledError(
              absl::StrCat("stopped as the worker shut down: ", failure.message()));
        }
        return failure;
      }
    }
    if (AllEnded()) return Outcome();
    failed_at.reset();  // a rank that fell silent spoke again
  }
}

// Relays, reaps and stops the ranks until they all ended or one failed
// (and kSettle passed, for the others to say why).
absl::Status RankSession::Watch(std::optional<absl::Time>& failed_at) {
  while (!AllEnded()) {
    Drain(kPoll);
    Reap();
    if (!others_started_ && store_port_ > 0) {
      if (absl::Status s = StartOthers(store_port_); !s.ok()) return s;
      LogInfo(absl::StrCat("job ", job_.id(), ": rank 0's store listens on port ", store_port_));
    }
    if (const StopReason stop = context_.stop_reason();
        stop != StopReason::kNone && stop != sent_stop_) {
      // Rank 0 waits in the rendezvous for ranks that were never started.
      if (!others_started_) return absl::CancelledError("stopped before every rank started");
      SendStop(stop);
    }
    if (!failed_at.has_value() && AnyFailed()) failed_at = absl::Now();
    if (failed_at.has_value() && absl::Now() - *failed_at >= kSettle) break;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<RankLauncher>> RankLauncher::Create(Options options) {
  if (options.executable.empty()) {
    return absl::InvalidArgumentError("executable: required (the daemon's own binary)");
  }
  if (options.collective_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("collective_timeout: must be positive, got ",
                     absl::FormatDuration(options.collective_timeout)));
  }
  if (options.host.empty()) {
    char host[256] = {};
    options.host = gethostname(host, sizeof(host) - 1) == 0 && host[0] != '\0' ? host : "localhost";
  }
  options.intra_op_threads = std::max(1, options.intra_op_threads);
  return std::unique_ptr<RankLauncher>(new RankLauncher(std::move(options)));
}

absl::StatusOr<v1::JobResult> RankLauncher::Run(const v1::Job& job, JobContext& context,
                                                const Node& node) {
  RankSession session(options_, job, context, node);
  return session.Run();
}

void RankLauncher::CopyRunnerFields(const v1::Job& from, v1::Job& to) {
  to.set_parameter_count(from.parameter_count());
  to.set_start_step(from.start_step());
  if (from.attempts_size() > 0 && to.attempts_size() > 0) {
    to.mutable_attempts(to.attempts_size() - 1)
        ->set_start_step(from.attempts(from.attempts_size() - 1).start_step());
  }
  *to.mutable_progress() = from.progress();
  *to.mutable_precision_stats() = from.precision_stats();
  *to.mutable_memory() = from.memory();
  if (from.has_checkpoint()) {
    *to.mutable_checkpoint() = from.checkpoint();
  } else {
    to.clear_checkpoint();
  }
  *to.mutable_result() = from.result();
  to.set_world_size(from.world_size());
  to.set_global_batch_size(from.global_batch_size());
}

}  // namespace mantissa
