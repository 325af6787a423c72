// Limits and retention through the real daemon and CLI: specs that overflow
// or exceed the caps are refused with INVALID_ARGUMENT and change nothing,
// a job past its max_duration ends FAILED, kept checkpoints, and deleting
// jobs and model versions. One daemon serves the whole suite.

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <filesystem>
#include <regex>
#include <string>
#include <vector>

#include "tests/testing/daemon_process.h"
#include "tests/testing/daemon_test.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/temp_dir.h"

namespace mantissa {
namespace {

using testing::CommandResult;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::TempDir;

// Two SUCCEEDED jobs with 3 MiB names, as daemons before the field caps
// could store them, written into the job store's table directly.
void WriteLegacyJobs(const std::string& path) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db,
                         "CREATE TABLE jobs (id TEXT PRIMARY KEY, state INTEGER NOT NULL, "
                         "job BLOB NOT NULL)",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  for (const char* id : {"1e9ac0000001", "1e9ac0000002"}) {
    v1::Job job;
    job.set_id(id);
    job.set_state(v1::SUCCEEDED);
    *job.mutable_spec() = testing::SyntheticMlpSpec(1);
    job.mutable_spec()->set_name(std::string(3 << 20, 'n'));
    const std::string blob = job.SerializeAsString();
    sqlite3_stmt* stmt = nullptr;
    ASSERT_EQ(sqlite3_prepare_v2(db, "INSERT INTO jobs VALUES (?1, ?2, ?3)", -1, &stmt, nullptr),
              SQLITE_OK);
    sqlite3_bind_text(stmt, 1, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(stmt, 2, job.state());
    sqlite3_bind_blob(stmt, 3, blob.data(), static_cast<int>(blob.size()), SQLITE_TRANSIENT);
    EXPECT_EQ(sqlite3_step(stmt), SQLITE_DONE);
    sqlite3_finalize(stmt);
  }
  sqlite3_close(db);
}

class LimitsTest : public testing::SharedDaemonTest {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::make_unique<TempDir>();
    WriteLegacyJobs(dir_->File("jobs.db"));
    StartSuiteDaemon({.state_dir = dir_->path(), .extra_flags = {"--keep_checkpoints=3"}});
  }

  // Submits with --wait; the job's id ("" on failure).
  static std::string SubmitAndWait(std::vector<std::string> flags) {
    flags.insert(flags.begin(), {"submit", "--model", "mlp", "--model-option", "hidden=16",
                                 "--dataset", "synthetic", "--dataset-option", "train_size=256",
                                 "--batch-size", "16", "--wait"});
    CommandResult r = Cli(flags);
    std::smatch m;
    if (!std::regex_search(r.out, m, std::regex("job ([0-9a-f]{12})"))) {
      ADD_FAILURE() << r.out << r.err;
      return "";
    }
    return m[1].str();
  }

  static std::filesystem::path JobDir(const std::string& id) {
    return std::filesystem::path(dir_->path()) / "jobs" / id;
  }
};

TEST_F(LimitsTest, OverflowingStepsAndEpochsAreRefused) {
  CommandResult epochs = Cli(
      {"submit", "--model", "mlp", "--dataset", "synthetic", "--epochs", "9223372036854775807"});
  EXPECT_NE(epochs.exit_code, 0);
  EXPECT_THAT(epochs.err, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_THAT(epochs.err, HasSubstr("epochs: must be <= 100000000 (--max_job_steps"));

  CommandResult steps = Cli({"submit", "--model", "mlp", "--dataset", "synthetic", "--steps",
                             "4611686018427387904", "--accumulate-grad-batches", "4"});
  EXPECT_NE(steps.exit_code, 0);
  EXPECT_THAT(steps.err, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_THAT(steps.err, HasSubstr("steps: must be <= 100000000"));

  // Nothing was queued.
  CommandResult list = Cli({"list", "--state", "queued"});
  EXPECT_EQ(list.exit_code, 0) << list.err;
  EXPECT_THAT(list.out, Not(HasSubstr("mlp")));
}

TEST_F(LimitsTest, AHugeNameIsRefusedAndListKeepsWorking) {
  v1::JobSpec spec = testing::SyntheticMlpSpec(1);
  spec.set_name(std::string(3 << 20, 'n'));
  auto stub = daemon_->NewStub();
  testing::SubmitOutcome outcome = testing::Submit(*stub, spec);
  EXPECT_EQ(outcome.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(outcome.status.error_message(), HasSubstr("name: must be at most 256 bytes"));
  // The legacy records: the newest that fit in 4 MiB are listed, the rest
  // are counted, and the listing works.
  CommandResult list = Cli({"list"});
  EXPECT_EQ(list.exit_code, 0) << list.err;
  EXPECT_THAT(list.out, HasSubstr("1e9ac0000002"));
  EXPECT_THAT(list.err, HasSubstr("1 older job(s) not shown"));
  CommandResult limited = Cli({"list", "--state", "failed"});
  EXPECT_EQ(limited.exit_code, 0) << limited.err;
  EXPECT_THAT(limited.err, Not(HasSubstr("not shown")));
}

TEST_F(LimitsTest, AHugeResumeFromIsRefusedWithoutBeingEchoed) {
  v1::JobSpec spec;
  spec.set_resume_from(std::string(1 << 20, 'r'));
  auto stub = daemon_->NewStub();
  testing::SubmitOutcome outcome = testing::Submit(*stub, spec);
  EXPECT_EQ(outcome.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(outcome.status.error_message(), HasSubstr("resume_from: must be at most"));
  EXPECT_LT(outcome.status.error_message().size(), 200u);
}

TEST_F(LimitsTest, AJobPastItsMaxDurationEndsFailed) {
  CommandResult r = Cli({"submit", "--model", "mlp", "--dataset", "synthetic", "--steps",
                         "10000000", "--max-duration", "1s", "--wait"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.out + r.err, HasSubstr("FAILED"));
  EXPECT_THAT(r.out + r.err, HasSubstr("exceeded its max_duration of 1s"));

  CommandResult bad =
      Cli({"submit", "--model", "mlp", "--dataset", "synthetic", "--max-duration", "48h"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_THAT(bad.err, HasSubstr("max_duration: must be <= 24h"));
}

TEST_F(LimitsTest, KeepCheckpointsKeepsTheNewestAndDeleteRemovesThem) {
  const std::string id = SubmitAndWait(
      {"--steps", "20", "--checkpoint-every", "5", "--keep-checkpoints", "2", "--no-eval"});
  ASSERT_FALSE(id.empty());
  EXPECT_TRUE(std::filesystem::exists(JobDir(id) / "checkpoint.pt"));
  EXPECT_TRUE(std::filesystem::exists(JobDir(id) / "checkpoint-15.pt"));
  EXPECT_FALSE(std::filesystem::exists(JobDir(id) / "checkpoint-10.pt"));
  CommandResult get = Cli({"get", id});
  EXPECT_THAT(get.out, HasSubstr("checkpoint.pt"));

  CommandResult del = Cli({"delete", id});
  EXPECT_EQ(del.exit_code, 0) << del.err;
  EXPECT_THAT(del.out, HasSubstr("deleted"));
  EXPECT_FALSE(std::filesystem::exists(JobDir(id)));
  CommandResult gone = Cli({"get", id});
  EXPECT_NE(gone.exit_code, 0);
  EXPECT_THAT(gone.err, HasSubstr("NOT_FOUND"));
  CommandResult again = Cli({"delete", id});
  EXPECT_THAT(again.err, HasSubstr("NOT_FOUND"));
}

TEST_F(LimitsTest, DeleteModelRefusesTheServingVersionUntilUnloaded) {
  const std::string id = SubmitAndWait({"--steps", "5"});
  ASSERT_FALSE(id.empty());
  CommandResult exported = Cli({"export", id, "--name", "limits-net"});
  ASSERT_EQ(exported.exit_code, 0) << exported.out << exported.err;
  const std::filesystem::path model_dir =
      std::filesystem::path(dir_->path()) / "models" / "limits-net";
  ASSERT_TRUE(std::filesystem::exists(model_dir / "1"));

  CommandResult serving = Cli({"delete-model", "limits-net"});
  EXPECT_NE(serving.exit_code, 0);
  EXPECT_THAT(serving.err, HasSubstr("FAILED_PRECONDITION"));
  EXPECT_THAT(serving.err, HasSubstr("is serving"));
  EXPECT_TRUE(std::filesystem::exists(model_dir / "1"));

  CommandResult missing = Cli({"delete-model", "limits-net", "--version", "7"});
  EXPECT_THAT(missing.err, HasSubstr("NOT_FOUND"));

  ASSERT_EQ(Cli({"unload", "limits-net"}).exit_code, 0);
  CommandResult del = Cli({"delete-model", "limits-net"});
  EXPECT_EQ(del.exit_code, 0) << del.err;
  EXPECT_FALSE(std::filesystem::exists(model_dir));
  CommandResult models = Cli({"models"});
  EXPECT_THAT(models.out, Not(HasSubstr("limits-net")));
}

}  // namespace
}  // namespace mantissa
