// The real `mantissa` CLI against the real daemon: exit codes, output and
// error messages as a user or a script sees them.

#include <gtest/gtest.h>

#include <fstream>
#include <memory>
#include <regex>
#include <string>
#include <thread>
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
using testing::RunCli;

// One daemon for the suite: each case looks only at its own jobs.
class CliTest : public testing::SharedDaemonTest {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::make_unique<testing::TempDir>();
    StartSuiteDaemon({.state_dir = dir_->path()});
  }

  // Submits with --json and returns the new job's id.
  static std::string SubmitJson(std::vector<std::string> flags) {
    flags.insert(flags.begin(), {"--json", "submit"});
    CommandResult r = Cli(flags);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::smatch m;
    if (!std::regex_search(r.out, m, std::regex(R"re("id":\s*"([0-9a-f]+)")re"))) return "";
    return m[1].str();
  }

  // How many jobs the daemon lists.
  static size_t JobCount() {
    CommandResult list = Cli({"--json", "list"});
    EXPECT_EQ(list.exit_code, 0) << list.err;
    size_t count = 0;
    for (size_t at = list.out.find("\"id\""); at != std::string::npos;
         at = list.out.find("\"id\"", at + 1)) {
      ++count;
    }
    return count;
  }
};

TEST_F(CliTest, SubmitWaitSucceedsAndGetListShowTheJob) {
  CommandResult submit =
      Cli({"submit", "--model", "mlp", "--model-option", "hidden=32", "--dataset", "synthetic",
           "--dataset-option", "train_size=512", "--steps", "40", "--batch-size", "16", "--name",
           "cli-demo", "--wait"});
  ASSERT_EQ(submit.exit_code, 0) << submit.out << submit.err;
  EXPECT_THAT(submit.out, HasSubstr("SUCCEEDED"));
  std::smatch m;
  ASSERT_TRUE(std::regex_search(submit.out, m, std::regex("job ([0-9a-f]{12})"))) << submit.out;
  const std::string id = m[1].str();

  CommandResult get = Cli({"get", id});
  EXPECT_EQ(get.exit_code, 0);
  EXPECT_THAT(get.out, HasSubstr(id));
  EXPECT_THAT(get.out, HasSubstr("cli-demo"));
  EXPECT_THAT(get.out, HasSubstr("SUCCEEDED"));
  EXPECT_THAT(get.out, HasSubstr("32-true"));

  CommandResult get_json = Cli({"--json", "get", id});
  EXPECT_EQ(get_json.exit_code, 0);
  EXPECT_THAT(get_json.out, HasSubstr("\"state\": \"SUCCEEDED\""));
  EXPECT_THAT(get_json.out, HasSubstr("\"stepsCompleted\": \"40\""));
  EXPECT_THAT(get_json.out, HasSubstr("\"hidden\": \"32\""));

  CommandResult list = Cli({"list"});
  EXPECT_EQ(list.exit_code, 0);
  EXPECT_THAT(list.out, HasSubstr(id));
  EXPECT_THAT(list.out, HasSubstr("cli-demo"));
  CommandResult running = Cli({"list", "--state", "running"});
  EXPECT_EQ(running.exit_code, 0);
  EXPECT_THAT(running.out, Not(HasSubstr(id)));
}

TEST_F(CliTest, ListPagesThroughTheJobsItsFiltersMatch) {
  // A name of their own keeps the other cases' jobs out of these pages.
  std::vector<std::string> submitted;
  for (int i = 0; i < 5; ++i) {
    submitted.push_back(SubmitJson({"--model", "mlp", "--model-option", "hidden=8", "--dataset",
                                    "synthetic", "--dataset-option", "train_size=64", "--steps",
                                    "1", "--batch-size", "8", "--name", "paging"}));
    ASSERT_FALSE(submitted.back().empty());
  }
  const std::regex row(R"re((?:^|\n)([0-9a-f]{12})  )re");
  const std::regex next_page(R"re(\nnext page: --page-token (\S+)\n)re");
  std::vector<std::string> listed;
  std::vector<std::string> flags = {"list", "--name", "paging", "--limit", "2"};
  for (int page = 1; page <= 3; ++page) {
    CommandResult r = Cli(flags);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    for (std::sregex_iterator it(r.out.begin(), r.out.end(), row), end; it != end; ++it) {
      listed.push_back((*it)[1].str());
    }
    std::smatch token;
    const bool more = std::regex_search(r.out, token, next_page);
    ASSERT_EQ(more, page < 3) << "page " << page << ":\n" << r.out;
    if (more) flags = {"list", "--name", "paging", "--limit", "2", "--page-token", token[1].str()};
  }
  // Newest first, each job once, none left out.
  EXPECT_EQ(listed, std::vector<std::string>(submitted.rbegin(), submitted.rend()));

  CommandResult bad = Cli({"list", "--page-token", "not-a-token"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_THAT(bad.err, HasSubstr("INVALID_ARGUMENT: page_token: "));
}

TEST_F(CliTest, WatchStreamsPlainProgressLinesUntilCancelled) {
  const std::string id = SubmitJson({"--model", "mlp", "--dataset", "synthetic", "--steps",
                                     "100000000", "--progress-every-n-steps", "10"});
  ASSERT_FALSE(id.empty());
  // Watch from another process, its output into a file (not a terminal).
  const std::string log = dir_->File("watch.out");
  const pid_t watch = testing::Spawn({MANTISSA_CLI_BIN, daemon_->server_flag(), "watch", id}, log);
  const auto read_log = [&] {
    std::ifstream in(log);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  };
  // Cancel only once the watcher has printed live progress.
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (read_log().find("/100000000") == std::string::npos && absl::Now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  CommandResult cancel = Cli({"cancel", id});
  EXPECT_EQ(cancel.exit_code, 0) << cancel.err;
  EXPECT_THAT(cancel.out, HasSubstr(id));

  EXPECT_EQ(testing::WaitForExit(watch), 1);  // the job did not succeed
  const std::string out = read_log();
  EXPECT_THAT(out, HasSubstr("/100000000"));
  EXPECT_THAT(out, Not(HasSubstr("\r")));  // no progress bar into a file
  EXPECT_THAT(out, HasSubstr("CANCELLED"));

  // A watch of an ended job: the snapshot, then the end. JSON: one per line.
  CommandResult json = Cli({"--json", "watch", id});
  EXPECT_EQ(json.exit_code, 1);
  EXPECT_THAT(json.out, HasSubstr("\"type\":\"SNAPSHOT\""));
  EXPECT_THAT(json.out, HasSubstr("\"type\":\"FINISHED\""));
  EXPECT_THAT(json.out, HasSubstr("\"state\":\"CANCELLED\""));
}

TEST_F(CliTest, ServerErrorsExitOneWithTheServersMessage) {
  const size_t jobs_before = JobCount();
  CommandResult bad_model = Cli({"submit", "--model", "vit", "--dataset", "synthetic"});
  EXPECT_EQ(bad_model.exit_code, 1);
  EXPECT_THAT(bad_model.err, HasSubstr("NOT_FOUND"));
  EXPECT_THAT(bad_model.err, HasSubstr("valid models: mlp"));

  CommandResult bad_lr = Cli({"submit", "--model", "mlp", "--dataset", "synthetic", "--lr", "-1"});
  EXPECT_EQ(bad_lr.exit_code, 1);
  EXPECT_THAT(bad_lr.err, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_THAT(bad_lr.err, HasSubstr("lr"));

  CommandResult bad_precision =
      Cli({"submit", "--model", "mlp", "--dataset", "synthetic", "--precision", "8-true"});
  EXPECT_EQ(bad_precision.exit_code, 1);
  EXPECT_THAT(bad_precision.err, HasSubstr("bf16-mixed"));

  CommandResult unknown_job = Cli({"get", "0123456789ab"});
  EXPECT_EQ(unknown_job.exit_code, 1);
  EXPECT_THAT(unknown_job.err, HasSubstr("NOT_FOUND"));

  // Nothing was created by the refused submissions.
  EXPECT_EQ(JobCount(), jobs_before);
}

TEST_F(CliTest, UsageErrorsExitTwoWithoutCallingTheDaemon) {
  CommandResult unknown_flag = Cli({"submit", "--modle", "mlp"});
  EXPECT_EQ(unknown_flag.exit_code, 2);
  EXPECT_THAT(unknown_flag.err, HasSubstr("--modle"));
  CommandResult not_a_number = Cli({"submit", "--model", "mlp", "--steps", "many"});
  EXPECT_EQ(not_a_number.exit_code, 2);
  EXPECT_THAT(not_a_number.err, HasSubstr("--steps"));
  CommandResult bad_option = Cli({"submit", "--model", "mlp", "--model-option", "hidden"});
  EXPECT_EQ(bad_option.exit_code, 2);
  CommandResult unknown_command = Cli({"train"});
  EXPECT_EQ(unknown_command.exit_code, 2);
  EXPECT_THAT(unknown_command.err, HasSubstr("train"));
}

TEST_F(CliTest, CapabilitiesShowPrecisionSupport) {
  CommandResult caps = Cli({"capabilities"});
  ASSERT_EQ(caps.exit_code, 0) << caps.err;
  EXPECT_THAT(caps.out, HasSubstr("cpu"));
  EXPECT_THAT(caps.out, HasSubstr("32-true"));
  EXPECT_THAT(caps.out, HasSubstr("transformer-engine"));
  CommandResult json = Cli({"--json", "capabilities"});
  EXPECT_EQ(json.exit_code, 0);
  EXPECT_THAT(json.out, HasSubstr("\"libtorchVersion\""));
}

TEST_F(CliTest, PrecisionFlagsReachTheJobAndGetShowsTheirEffect) {
  CommandResult submit = Cli({"submit",
                              "--model",
                              "mlp",
                              "--dataset",
                              "synthetic",
                              "--steps",
                              "20",
                              "--precision",
                              "bf16-true",
                              "--grad-scaler-enabled",
                              "--grad-scaler-init-scale",
                              "1024",
                              "--grad-scaler-growth-interval",
                              "7",
                              "--memory-baseline-steps",
                              "1",
                              "--gradient-clip-norm",
                              "1.5",
                              "--lr-schedule",
                              "cosine",
                              "--warmup-steps",
                              "3",
                              "--wait"});
  ASSERT_EQ(submit.exit_code, 0) << submit.out << submit.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(submit.out, m, std::regex("job ([0-9a-f]{12})"))) << submit.out;
  const std::string id = m[1].str();

  CommandResult json = Cli({"--json", "get", id});
  ASSERT_EQ(json.exit_code, 0);
  for (const char* field :
       {"\"initScale\": 1024", "\"growthInterval\": \"7\"", "\"gradientClipNorm\": 1.5",
        "\"lrSchedule\": \"cosine\"", "\"memoryBaselineSteps\": \"1\"",
        "\"gradScalerEnabled\": true", "\"parameterDtype\": \"bfloat16\""}) {
    EXPECT_THAT(json.out, HasSubstr(field));
  }
  CommandResult get = Cli({"get", id});
  ASSERT_EQ(get.exit_code, 0);
  for (const char* text : {"Parameter dtype:  bfloat16", "Grad scaler:      enabled",
                           "FP32 baseline peak", "Savings", "cpu counting allocator"}) {
    EXPECT_THAT(get.out, HasSubstr(text));
  }
}

TEST_F(CliTest, Fp8RecipeFlagsAreCheckedByTheDaemon) {
  const size_t jobs_before = JobCount();
  const std::vector<std::string> base = {"submit", "--model", "mlp", "--dataset", "synthetic"};
  auto with = [&base](std::vector<std::string> flags) {
    flags.insert(flags.begin(), base.begin(), base.end());
    return flags;
  };
  CommandResult bad_format =
      Cli(with({"--precision", "transformer-engine", "--fp8-format", "E5M2"}));
  EXPECT_EQ(bad_format.exit_code, 1);
  EXPECT_THAT(bad_format.err, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_THAT(bad_format.err, HasSubstr("fp8.fp8_format"));
  EXPECT_THAT(bad_format.err, HasSubstr("HYBRID"));

  CommandResult bad_history =
      Cli(with({"--precision", "transformer-engine", "--fp8-amax-history-len", "0"}));
  EXPECT_EQ(bad_history.exit_code, 1);
  EXPECT_THAT(bad_history.err, HasSubstr("fp8.amax_history_len"));

  CommandResult wrong_precision = Cli(with({"--precision", "bf16-mixed", "--fp8-margin", "1"}));
  EXPECT_EQ(wrong_precision.exit_code, 1);
  EXPECT_THAT(wrong_precision.err, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_THAT(wrong_precision.err, HasSubstr("transformer-engine"));

  // A valid recipe on this CPU daemon meets the precision's own refusal.
  CommandResult no_fp8_device =
      Cli(with({"--precision", "transformer-engine", "--fp8-format", "HYBRID"}));
  EXPECT_EQ(no_fp8_device.exit_code, 1);
  EXPECT_THAT(no_fp8_device.err, HasSubstr("FAILED_PRECONDITION"));
  EXPECT_THAT(no_fp8_device.err, HasSubstr("compute capability >= 8.9"));

  EXPECT_EQ(JobCount(), jobs_before);
}

TEST_F(CliTest, CudaGraphOnTheCpuTrainsEagerlyWithAWarning) {
  CommandResult submit = Cli({"submit", "--model", "mlp", "--model-option", "hidden=32",
                              "--dataset", "synthetic", "--steps", "5", "--cuda-graph", "--wait"});
  ASSERT_EQ(submit.exit_code, 0) << submit.out << submit.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(submit.out, m, std::regex("job ([0-9a-f]{12})"))) << submit.out;
  CommandResult get = Cli({"get", m[1].str()});
  ASSERT_EQ(get.exit_code, 0);
  EXPECT_THAT(get.out, HasSubstr("CUDA graph:"));
  EXPECT_THAT(get.out, HasSubstr("cuda_graph:"));
  EXPECT_THAT(get.out, HasSubstr("training eagerly"));
}

TEST(CliUnreachableTest, SaysTheDaemonCannotBeReached) {
  // Port 1 on loopback: nothing listens there.
  CommandResult r = RunCli({"--server=127.0.0.1:1", "list"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("cannot reach mantissad at 127.0.0.1:1"));
}

}  // namespace
}  // namespace mantissa
