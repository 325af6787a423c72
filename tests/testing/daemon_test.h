#ifndef MANTISSA_TESTS_TESTING_DAEMON_TEST_H_
#define MANTISSA_TESTS_TESTING_DAEMON_TEST_H_

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tests/testing/daemon_process.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/temp_dir.h"

namespace mantissa::testing {

// A fixture with a fresh mantissad in its own state directory, and a stub.
class DaemonTest : public ::testing::Test {
 protected:
  void SetUp() override { StartDaemon({}); }

  // (Re)starts the daemon on the same state directory with extra flags.
  void StartDaemon(std::vector<std::string> flags) {
    if (daemon_ != nullptr) daemon_->Kill();
    auto daemon = DaemonProcess::Start({.state_dir = dir_.path(), .extra_flags = flags});
    ASSERT_OK(daemon);
    daemon_ = std::move(*daemon);
    stub_ = daemon_->NewStub();
  }

  std::vector<v1::Job> ListJobs() {
    grpc::ClientContext context;
    v1::ListJobsResponse response;
    EXPECT_TRUE(stub_->ListJobs(&context, v1::ListJobsRequest(), &response).ok());
    return {response.jobs().begin(), response.jobs().end()};
  }

  // Submits and waits for the job to end; the job as it ended.
  v1::Job SubmitAndWait(const v1::JobSpec& spec) {
    SubmitOutcome submitted = Submit(*stub_, spec);
    EXPECT_TRUE(submitted.status.ok()) << submitted.status.error_message();
    auto job = WaitForJob(*stub_, submitted.job.id(), IsTerminal);
    EXPECT_OK(job);
    return job.ok() ? *job : v1::Job();
  }

  TempDir dir_;
  std::unique_ptr<DaemonProcess> daemon_;
  std::unique_ptr<v1::TrainingService::Stub> stub_;
};

// One mantissad for every case of a suite (a start takes seconds). The
// suite's SetUpTestSuite makes dir_, writes what the daemon needs there and
// calls StartSuiteDaemon; a case whose suite could not start it fails at
// once. Suites of one binary run one after another, so they share the slots.
class SharedDaemonTest : public ::testing::Test {
 protected:
  static void TearDownTestSuite() {
    daemon_.reset();
    dir_.reset();
  }

  void SetUp() override { ASSERT_NE(daemon_, nullptr) << "the suite's mantissad did not start"; }

  static void StartSuiteDaemon(DaemonProcess::Options options) {
    auto daemon = DaemonProcess::Start(std::move(options));
    ASSERT_OK(daemon);
    daemon_ = std::move(*daemon);
  }

  // The real CLI against the suite's daemon.
  static CommandResult Cli(std::vector<std::string> args) {
    args.insert(args.begin(), daemon_->server_flag());
    return RunCli(args);
  }

  static inline std::unique_ptr<TempDir> dir_;
  static inline std::unique_ptr<DaemonProcess> daemon_;
};

}  // namespace mantissa::testing

#endif  // MANTISSA_TESTS_TESTING_DAEMON_TEST_H_
