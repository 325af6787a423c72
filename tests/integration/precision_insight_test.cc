// Gradient norms, non-finite steps traced to their parameters and batch, and
// compensated bf16-true updates, as the real CLI shows them from the real
// daemon on CPU.

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <iterator>
#include <memory>
#include <regex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/daemon_test.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/temp_dir.h"

namespace mantissa {
namespace {

using testing::CommandResult;
using ::testing::HasSubstr;
using ::testing::Not;

// One daemon for the suite: each case looks only at its own jobs.
class PrecisionInsightTest : public testing::SharedDaemonTest {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::make_unique<testing::TempDir>();
    StartSuiteDaemon({.state_dir = dir_->path()});
  }

  // A small MLP on the synthetic dataset with `flags` added; progress every
  // 5 steps so that every job reports several intervals.
  static std::vector<std::string> JobFlags(std::vector<std::string> flags) {
    std::vector<std::string> args = {
        "--model",   "mlp",       "--model-option", "hidden=32",
        "--dataset", "synthetic", "--batch-size",   "16",
        "--seed",    "7",         "--no-eval",      "--progress-every-n-steps",
        "5"};
    args.insert(args.end(), flags.begin(), flags.end());
    return args;
  }

  // `submit --wait` with JobFlags(flags); the result and the new job's id.
  static std::pair<CommandResult, std::string> SubmitWait(std::vector<std::string> flags) {
    std::vector<std::string> args = JobFlags(std::move(flags));
    args.insert(args.begin(), "submit");
    args.push_back("--wait");
    CommandResult result = Cli(args);
    std::smatch m;
    std::string id;
    if (std::regex_search(result.out, m, std::regex("job ([0-9a-f]{12}) submitted"))) id = m[1];
    return {result, id};
  }

  static std::string Get(const std::string& id) {
    CommandResult get = Cli({"get", id});
    EXPECT_EQ(get.exit_code, 0) << get.err;
    return get.out;
  }
};

// Inputs of inf make the loss and every gradient non-finite at the first
// step; without a grad scaler the job fails there, and says where.
TEST_F(PrecisionInsightTest, InfiniteInputsFailTheJobNamingTheStepAndParameters) {
  auto [submit, id] =
      SubmitWait({"--precision", "32-true", "--steps", "20", "--dataset-option", "noise=1e39"});
  ASSERT_FALSE(id.empty()) << submit.out << submit.err;
  EXPECT_EQ(submit.exit_code, 1) << submit.out << submit.err;
  EXPECT_THAT(submit.out, HasSubstr("FAILED"));

  const std::string get = Get(id);
  EXPECT_THAT(get, HasSubstr("State:"));
  EXPECT_THAT(get, HasSubstr("FAILED"));
  EXPECT_THAT(get, HasSubstr("Last non-finite step:  step 1: epoch 1, batch 0, items 0-15\n"));
  EXPECT_THAT(get, HasSubstr("loss not finite\n"));
  // The Flatten-Linear-ReLU-Linear MLP: backward reaches the last layer first.
  EXPECT_THAT(get, HasSubstr("non-finite gradients: 3.bias, 3.weight, 1.bias, 1.weight\n"));
  EXPECT_THAT(get, HasSubstr("not skipped (no grad scaler)"));
  // The error carries the same attribution.
  std::smatch error;
  ASSERT_TRUE(std::regex_search(get, error, std::regex("Error: +([^\n]*)"))) << get;
  EXPECT_THAT(error[1].str(), HasSubstr("3.weight"));
  EXPECT_THAT(error[1].str(), HasSubstr("1.weight"));
  EXPECT_THAT(error[1].str(), HasSubstr("items 0-15"));
}

// With the grad scaler on, every step is skipped rather than fatal: the job
// succeeds, and the skips are traced like a failure would be.
TEST_F(PrecisionInsightTest, ScalerSkippedStepsAreTracedAndTheJobSucceeds) {
  auto [submit, id] = SubmitWait({"--precision", "bf16-mixed", "--grad-scaler-enabled", "--steps",
                                  "10", "--dataset-option", "noise=1e39"});
  ASSERT_FALSE(id.empty()) << submit.out << submit.err;
  EXPECT_EQ(submit.exit_code, 0) << submit.out << submit.err;

  const std::string get = Get(id);
  EXPECT_THAT(get, HasSubstr("10 of 10 steps skipped"));
  EXPECT_THAT(get, HasSubstr("Last non-finite step:  step 6: epoch 1, batch 5, items 80-95\n"));
  EXPECT_THAT(get, HasSubstr("skipped by the grad scaler\n"));
  EXPECT_THAT(get, HasSubstr("first of 5 non-finite steps in its progress interval"));
  EXPECT_THAT(get, HasSubstr("non-finite gradients: 3.bias, 3.weight, 1.bias, 1.weight\n"));
  // No finite norm was ever seen.
  EXPECT_THAT(get, Not(HasSubstr("Gradient norm:")));
  // Each interval's first skip was a WARNING event, kept with the job.
  for (const char* step :
       {R"(step 1 \(epoch 1, batch 0 of \d+ in the seeded order, items 0-15\))",
        R"(step 6 \(epoch 1, batch 5 of \d+ in the seeded order, items 80-95\))"}) {
    const std::regex warning(std::string(step) +
                             R"(: loss not finite; [^\n]*: 3\.bias, 3\.weight, 1\.bias, 1\.weight)"
                             R"(; skipped by the grad scaler)");
    EXPECT_TRUE(std::regex_search(get, warning)) << step << "\n" << get;
  }

  CommandResult json = Cli({"--json", "get", id});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  EXPECT_THAT(json.out, HasSubstr("\"lastNonFinite\""));
  EXPECT_THAT(json.out, HasSubstr("\"skipped\": true"));
}

TEST_F(PrecisionInsightTest, CompensatedAndStochasticBf16TrueUpdatesTrain) {
  auto [kahan, kahan_id] =
      SubmitWait({"--precision", "bf16-true", "--bf16-update", "kahan", "--steps", "10"});
  ASSERT_FALSE(kahan_id.empty()) << kahan.out << kahan.err;
  EXPECT_EQ(kahan.exit_code, 0) << kahan.out << kahan.err;
  const std::string get = Get(kahan_id);
  std::smatch m;
  ASSERT_TRUE(std::regex_search(
      get, m, std::regex(R"(Update rounding: +kahan \(compensation ([0-9.]+) (B|KiB|MiB)\))")))
      << get;
  EXPECT_GT(std::stod(m[1].str()), 0);
  CommandResult json = Cli({"--json", "get", kahan_id});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  EXPECT_THAT(json.out, HasSubstr("\"bf16Update\": \"kahan\""));
  // The JSON view prints zero fields too: the count itself must be positive.
  EXPECT_TRUE(std::regex_search(json.out, std::regex(R"("compensationBytes": "[1-9][0-9]*")")))
      << json.out;

  auto [stochastic, stochastic_id] =
      SubmitWait({"--precision", "bf16-true", "--bf16-update", "stochastic", "--steps", "10"});
  ASSERT_FALSE(stochastic_id.empty()) << stochastic.out << stochastic.err;
  EXPECT_EQ(stochastic.exit_code, 0) << stochastic.out << stochastic.err;
  const std::string stochastic_get = Get(stochastic_id);
  EXPECT_THAT(stochastic_get, HasSubstr("Update rounding:  stochastic\n"));
}

TEST_F(PrecisionInsightTest, UpdateRoundingIsRefusedWhereItDoesNotApply) {
  std::vector<std::string> mixed =
      JobFlags({"--precision", "bf16-mixed", "--bf16-update", "kahan", "--steps", "5"});
  mixed.insert(mixed.begin(), "submit");
  CommandResult refused = Cli(mixed);
  EXPECT_EQ(refused.exit_code, 1) << refused.out;
  EXPECT_THAT(refused.err, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_THAT(refused.err, HasSubstr("bf16_update"));
  EXPECT_THAT(refused.err, HasSubstr("bf16-true"));
  EXPECT_THAT(refused.err, HasSubstr("bf16-mixed"));

  std::vector<std::string> unknown =
      JobFlags({"--precision", "bf16-true", "--bf16-update", "round-up", "--steps", "5"});
  unknown.insert(unknown.begin(), "submit");
  CommandResult bad = Cli(unknown);
  EXPECT_EQ(bad.exit_code, 1) << bad.out;
  EXPECT_THAT(bad.err, HasSubstr("bf16_update"));
  EXPECT_THAT(bad.err, HasSubstr("round-up"));
  EXPECT_THAT(bad.err, HasSubstr("nearest, stochastic, kahan"));
}

// A healthy job reports a finite, positive gradient norm: in `get` and on
// every `watch` progress line.
TEST_F(PrecisionInsightTest, HealthyJobsReportTheirGradientNorm) {
  std::vector<std::string> args = JobFlags({"--steps", "100000000"});
  args.insert(args.begin(), {"--json", "submit"});
  CommandResult submit = Cli(args);
  ASSERT_EQ(submit.exit_code, 0) << submit.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(submit.out, m, std::regex(R"re("id":\s*"([0-9a-f]+)")re")));
  const std::string id = m[1];

  // Watch from another process, its output into a file (plain lines).
  const std::string log = dir_->File("watch-" + id + ".out");
  const pid_t watch = testing::Spawn({MANTISSA_CLI_BIN, daemon_->server_flag(), "watch", id}, log);
  const auto read_log = [&] {
    std::ifstream in(log);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  };
  const std::regex progress_line(R"(step (\d+)/100000000 [^\n]* grad norm ([0-9.e+-]+))");
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  int lines = 0;
  while (absl::Now() < deadline) {
    const std::string out = read_log();
    lines = std::distance(std::sregex_iterator(out.begin(), out.end(), progress_line),
                          std::sregex_iterator());
    if (lines >= 3) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const std::string get = Get(id);
  EXPECT_EQ(Cli({"cancel", id}).exit_code, 0);
  EXPECT_EQ(testing::WaitForExit(watch), 1);  // cancelled, not succeeded
  const std::string out = read_log();
  ASSERT_GE(lines, 3) << out;
  for (std::sregex_iterator it(out.begin(), out.end(), progress_line), end; it != end; ++it) {
    const double norm = std::stod((*it)[2].str());
    EXPECT_TRUE(std::isfinite(norm) && norm > 0) << (*it)[0].str();
  }

  std::smatch norm;
  ASSERT_TRUE(std::regex_search(
      get, norm,
      std::regex(R"(Gradient norm: +([0-9.e+-]+) \(largest in the last interval ([0-9.e+-]+)\))")))
      << get;
  const double latest = std::stod(norm[1].str());
  const double largest = std::stod(norm[2].str());
  EXPECT_TRUE(std::isfinite(latest) && latest > 0) << get;
  EXPECT_GE(largest, latest * 0.999) << get;  // printed to 3 digits
  EXPECT_THAT(get, Not(HasSubstr("Last non-finite step")));
}

TEST_F(PrecisionInsightTest, CompareShowsEveryEntryWithItsUpdateRounding) {
  std::vector<std::string> args =
      JobFlags({"--steps", "10", "--precisions", "bf16-true,bf16-true:kahan"});
  args.insert(args.begin(), "compare");
  CommandResult compare = Cli(args);
  ASSERT_EQ(compare.exit_code, 0) << compare.out << compare.err;
  EXPECT_THAT(compare.out, HasSubstr("\nbf16-true        bf16-true  SUCCEEDED "));
  EXPECT_THAT(compare.out, HasSubstr("\nbf16-true:kahan  bf16-true  SUCCEEDED "));
  EXPECT_THAT(compare.out, HasSubstr("COMPENSATION"));
  EXPECT_THAT(compare.out, HasSubstr("GRAD NORM"));
  EXPECT_THAT(compare.err, HasSubstr("submitted bf16-true:kahan as job "));
}

}  // namespace
}  // namespace mantissa
