// job_store_benchmark: the job stores' throughput and latency on this machine.
//
//   job_store_benchmark [--stores=sqlite,postgresql] [--claim_jobs=1000] [--workers=4]
//                       [--read_jobs=10000] [--samples=1000] [--fsync=true]
//
// Per store: claims per second with --workers threads draining --claim_jobs
// queued jobs (PostgreSQL: a store instance per thread, as separate workers
// have; SQLite: one instance, as only one process may open it), then Get and
// List(limit 50) latencies (median and p99) with --read_jobs jobs stored.
// PostgreSQL is a throwaway local server on a unix socket, durable like a
// real one unless --fsync=false. Prints; asserts nothing.

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "mantissa/v1/training.pb.h"
#include "server/jobs/job_store.h"
#include "server/jobs/postgres_job_store.h"
#include "server/jobs/sqlite_job_store.h"
#include "tests/testing/postgres_server.h"
#include "tests/testing/temp_dir.h"

ABSL_FLAG(std::string, stores, "sqlite,postgresql", "Stores to measure: sqlite, postgresql.");
ABSL_FLAG(int, claim_jobs, 1000, "Queued jobs the workers drain.");
ABSL_FLAG(int, workers, 4, "Claiming threads.");
ABSL_FLAG(int, read_jobs, 10000, "Jobs stored while Get and List are timed.");
ABSL_FLAG(int, samples, 1000, "Timed calls of each of Get and List.");
ABSL_FLAG(bool, fsync, true, "PostgreSQL: fsync and synchronous_commit on (as in production).");

namespace mantissa {
namespace {

using testing::PostgresServer;
using testing::TempDir;

// Opens stores on one fresh database of a kind.
class StoreFactory {
 public:
  virtual ~StoreFactory() = default;
  virtual std::string kind() const = 0;
  // Starts on a fresh, empty database.
  virtual absl::Status NewDatabase() = 0;
  virtual absl::StatusOr<std::unique_ptr<JobStore>> Open() = 0;
  // Whether a second instance may open the database while one is open.
  virtual bool shared() const = 0;
  // Brings the database to its steady state after a bulk load.
  virtual absl::Status Settle() { return absl::OkStatus(); }
};

class SqliteFactory : public StoreFactory {
 public:
  std::string kind() const override { return "sqlite"; }
  absl::Status NewDatabase() override {
    path_ = dir_.File(absl::StrCat("jobs", ++databases_, ".db"));
    return absl::OkStatus();
  }
  absl::StatusOr<std::unique_ptr<JobStore>> Open() override {
    absl::StatusOr<std::unique_ptr<SqliteJobStore>> store = SqliteJobStore::Create({.path = path_});
    if (!store.ok()) return store.status();
    return std::unique_ptr<JobStore>(std::move(*store));
  }
  bool shared() const override { return false; }

 private:
  TempDir dir_;
  std::string path_;
  int databases_ = 0;
};

class PostgresFactory : public StoreFactory {
 public:
  explicit PostgresFactory(std::unique_ptr<PostgresServer> server) : server_(std::move(server)) {}
  std::string kind() const override { return "postgresql"; }
  absl::Status NewDatabase() override {
    database_ = absl::StrCat("bench", ++databases_);
    return server_->CreateDatabase(database_);
  }
  absl::StatusOr<std::unique_ptr<JobStore>> Open() override {
    absl::StatusOr<std::unique_ptr<PostgresJobStore>> store =
        PostgresJobStore::Create({.uri = server_->uri(database_)});
    if (!store.ok()) return store.status();
    return std::unique_ptr<JobStore>(std::move(*store));
  }
  bool shared() const override { return true; }
  // Statistics, as autovacuum gathers within a minute of the load: without
  // them the planner sorts every row matching a filter (15 ms, not 0.1 ms,
  // for a filtered page of 10,000 jobs).
  absl::Status Settle() override { return server_->Execute(database_, "ANALYZE"); }

 private:
  std::unique_ptr<PostgresServer> server_;
  std::string database_;
  int databases_ = 0;
};

// What the daemon stores for a small submitted job, defaults filled in.
v1::Job NoOpJob(int i) {
  v1::Job job;
  job.set_id(absl::StrFormat("%016x", 0x5eed0000ull + i));
  job.set_state(v1::QUEUED);
  job.set_attempt(1);
  v1::JobSpec& spec = *job.mutable_spec();
  spec.set_model(i % 2 == 0 ? "mlp" : "cnn");
  spec.set_dataset("synthetic");
  spec.set_precision("32-true");
  spec.set_steps(1);
  spec.set_batch_size(64);
  spec.set_optimizer("adamw");
  spec.set_lr(1e-3);
  spec.set_name(absl::StrCat("bench-", i % 10));
  job.set_effective_precision("32-true");
  job.set_principal(absl::StrCat("user", i % 5));
  job.mutable_create_time()->set_seconds(1700000000 + i);
  return job;
}

absl::Status InsertJobs(JobStore& store, int count) {
  for (int i = 0; i < count; ++i) {
    if (absl::Status s = store.Insert(NoOpJob(i), {}); !s.ok()) return s;
  }
  return absl::OkStatus();
}

// Claims per second with `workers` threads until the queue is empty.
absl::StatusOr<double> MeasureClaims(StoreFactory& factory, int jobs, int workers) {
  if (absl::Status s = factory.NewDatabase(); !s.ok()) return s;
  std::vector<std::unique_ptr<JobStore>> stores;
  const int instances = factory.shared() ? workers : 1;
  for (int i = 0; i < instances; ++i) {
    absl::StatusOr<std::unique_ptr<JobStore>> store = factory.Open();
    if (!store.ok()) return store.status();
    stores.push_back(std::move(*store));
  }
  if (absl::Status s = InsertJobs(*stores[0], jobs); !s.ok()) return s;

  std::atomic<int> claimed{0};
  std::atomic<bool> failed{false};
  const absl::Time start = absl::Now();
  std::vector<std::thread> threads;
  for (int w = 0; w < workers; ++w) {
    threads.emplace_back([&, w] {
      JobStore& store = *stores[w % instances];
      const std::string worker = absl::StrCat("bench-worker-", w);
      while (!failed) {
        absl::StatusOr<std::optional<v1::Job>> job = store.Claim(worker, absl::Seconds(60));
        if (!job.ok()) {
          std::fprintf(stderr, "claim: %s\n", job.status().ToString().c_str());
          failed = true;
        }
        if (!job.ok() || !job->has_value()) return;
        ++claimed;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  if (failed) return absl::InternalError("a claim failed");
  if (claimed != jobs) return absl::InternalError(absl::StrCat("claimed ", claimed.load()));
  return claimed / seconds;
}

struct Latency {
  double median_ms = 0;
  double p99_ms = 0;
};

template <typename Call>
absl::StatusOr<Latency> TimeCalls(int samples, Call call) {
  std::vector<double> ms;
  for (int i = 0; i < samples; ++i) {
    const absl::Time start = absl::Now();
    if (absl::Status s = call(i); !s.ok()) return s;
    ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - start));
  }
  std::sort(ms.begin(), ms.end());
  return Latency{ms[ms.size() / 2], ms[std::min(ms.size() - 1, ms.size() * 99 / 100)]};
}

void PrintLatency(const std::string& kind, const std::string& what,
                  const absl::StatusOr<Latency>& latency) {
  if (!latency.ok()) {
    std::printf("%-10s %-34s error: %s\n", kind.c_str(), what.c_str(),
                latency.status().ToString().c_str());
    return;
  }
  std::printf("%-10s %-34s median %.3f ms  p99 %.3f ms\n", kind.c_str(), what.c_str(),
              latency->median_ms, latency->p99_ms);
}

absl::Status MeasureReads(StoreFactory& factory, int jobs, int samples) {
  if (absl::Status s = factory.NewDatabase(); !s.ok()) return s;
  absl::StatusOr<std::unique_ptr<JobStore>> store = factory.Open();
  if (!store.ok()) return store.status();
  const absl::Time start = absl::Now();
  if (absl::Status s = InsertJobs(**store, jobs); !s.ok()) return s;
  std::printf("%-10s %-34s %.0f /s\n", factory.kind().c_str(),
              absl::StrCat("inserts (", jobs, ", one thread)").c_str(),
              jobs / absl::ToDoubleSeconds(absl::Now() - start));
  if (absl::Status s = factory.Settle(); !s.ok()) return s;

  std::mt19937 random(1);
  std::uniform_int_distribution<int> pick(0, jobs - 1);
  PrintLatency(factory.kind(), "Get", TimeCalls(samples, [&](int) {
                 return (*store)->Get(NoOpJob(pick(random)).id()).status();
               }));
  PrintLatency(factory.kind(), "List(limit 50), newest",
               TimeCalls(samples, [&](int) { return (*store)->List({.limit = 50}).status(); }));
  // A later page of a filtered listing, as `mantissa list --model` pages.
  absl::StatusOr<JobPage> first = (*store)->List({.model = "cnn", .limit = 50});
  if (!first.ok()) return first.status();
  PrintLatency(factory.kind(), "List(limit 50), model, 2nd page", TimeCalls(samples, [&](int) {
                 return (*store)
                     ->List({.model = "cnn", .limit = 50, .before_seq = first->next_before_seq})
                     .status();
               }));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<StoreFactory>> MakeFactory(const std::string& kind) {
  if (kind == "sqlite") return std::unique_ptr<StoreFactory>(new SqliteFactory());
  if (kind == "postgresql") {
    absl::StatusOr<std::unique_ptr<PostgresServer>> server =
        PostgresServer::Start({.fsync = absl::GetFlag(FLAGS_fsync)});
    if (!server.ok()) return server.status();
    return std::unique_ptr<StoreFactory>(new PostgresFactory(std::move(*server)));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--stores: unknown store '", kind, "'; valid: sqlite, postgresql"));
}

int Run() {
  const int workers = absl::GetFlag(FLAGS_workers);
  const int claim_jobs = absl::GetFlag(FLAGS_claim_jobs);
  int failures = 0;
  const std::vector<std::string> kinds = absl::StrSplit(absl::GetFlag(FLAGS_stores), ',');
  for (const std::string& kind : kinds) {
    absl::StatusOr<std::unique_ptr<StoreFactory>> factory = MakeFactory(kind);
    if (!factory.ok()) {
      std::fprintf(stderr, "%s\n", factory.status().ToString().c_str());
      // Missing PostgreSQL binaries skip the store; anything else fails.
      if (!absl::IsNotFound(factory.status())) ++failures;
      continue;
    }
    absl::StatusOr<double> claims = MeasureClaims(**factory, claim_jobs, workers);
    if (claims.ok()) {
      std::printf("%-10s %-34s %.0f /s\n", kind.c_str(),
                  absl::StrCat("claims (", workers, " workers, ", claim_jobs, " jobs)").c_str(),
                  *claims);
    } else {
      std::fprintf(stderr, "%s claims: %s\n", kind.c_str(), claims.status().ToString().c_str());
      ++failures;
    }
    absl::Status reads =
        MeasureReads(**factory, absl::GetFlag(FLAGS_read_jobs), absl::GetFlag(FLAGS_samples));
    if (!reads.ok()) {
      std::fprintf(stderr, "%s reads: %s\n", kind.c_str(), reads.ToString().c_str());
      ++failures;
    }
    std::fflush(stdout);
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace
}  // namespace mantissa

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // each figure as it is measured
  absl::SetProgramUsageMessage(
      "Measures the job stores: claims per second with concurrent workers, and Get/List "
      "latency with many jobs stored.");
  absl::ParseCommandLine(argc, argv);
  return mantissa::Run();
}
