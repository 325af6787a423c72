// Real data end to end: the CLI submits an MLP on Fashion-MNIST (the Debian
// dataset-fashion-mnist package) for one epoch and watches it to the end.

#include <gtest/gtest.h>

#include <regex>

#include "tests/testing/daemon_process.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/temp_dir.h"

namespace mantissa {
namespace {

using testing::DaemonProcess;
using testing::RunCli;

TEST(FashionMnistTest, MlpOneEpochAbove80PercentTestAccuracy) {
  testing::TempDir dir;
  // One intra-op thread, as every test daemon: ctest runs tests side by side.
  auto daemon = DaemonProcess::Start({.state_dir = dir.path()});
  ASSERT_OK(daemon);
  const std::string server = (*daemon)->server_flag();

  auto submit = RunCli({server,
                        "--json",
                        "submit",
                        "--model",
                        "mlp",
                        "--model-option",
                        "hidden=256,128",
                        "--dataset",
                        "fashion-mnist",
                        "--epochs",
                        "1",
                        "--batch-size",
                        "64",
                        "--optimizer",
                        "adam",
                        "--lr",
                        "0.001",
                        "--seed",
                        "1",
                        "--progress-every-n-steps",
                        "100"});
  ASSERT_EQ(submit.exit_code, 0) << submit.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(submit.out, m, std::regex(R"re("id":\s*"([0-9a-f]+)")re")))
      << submit.out;
  const std::string id = m[1].str();

  auto watch = RunCli({server, "watch", id});
  EXPECT_EQ(watch.exit_code, 0) << watch.out << watch.err;
  EXPECT_NE(watch.out.find("SUCCEEDED"), std::string::npos) << watch.out;

  auto stub = (*daemon)->NewStub();
  auto job = testing::WaitForJob(*stub, id, testing::IsTerminal, absl::Seconds(10));
  ASSERT_OK(job);
  ASSERT_EQ(job->state(), v1::SUCCEEDED) << job->error();
  EXPECT_EQ(job->progress().step(), 938);  // ceil(60000 / 64)
  ASSERT_TRUE(job->result().has_eval_accuracy());
  EXPECT_GT(job->result().eval_accuracy(), 0.80);
  std::printf("fashion-mnist mlp 1 epoch: test accuracy %.4f, %.1f s, %.0f items/s\n",
              job->result().eval_accuracy(), job->result().train_seconds(),
              job->progress().items_per_second());
}

}  // namespace
}  // namespace mantissa
