#ifndef MANTISSA_TESTS_TESTING_SERVING_DAEMON_TEST_H_
#define MANTISSA_TESTS_TESTING_SERVING_DAEMON_TEST_H_

#include <gtest/gtest.h>

#include <memory>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "tests/testing/daemon_test.h"
#include "tests/testing/inference_client.h"
#include "tests/testing/subprocess.h"

namespace mantissa::testing {

// Small real workloads that train in well under a second on one thread.
// Fashion-MNIST (Debian's dataset-fashion-mnist): images [1, 28, 28], 10 classes.
inline v1::JobSpec FashionMnistMlpSpec(int64_t steps = 200) {
  v1::JobSpec spec;
  spec.set_model("mlp");
  (*spec.mutable_model_options())["hidden"] = "64";
  spec.set_dataset("fashion-mnist");
  (*spec.mutable_dataset_options())["train_limit"] = "2000";
  (*spec.mutable_dataset_options())["test_limit"] = "512";
  spec.set_steps(steps);
  spec.set_batch_size(32);
  spec.set_seed(1);
  spec.set_memory_baseline_steps(0);
  return spec;
}

inline v1::JobSpec FashionMnistCnnSpec(int64_t steps = 40) {
  v1::JobSpec spec;
  spec.set_model("cnn");
  (*spec.mutable_model_options())["channels"] = "8,16";
  spec.set_dataset("fashion-mnist");
  (*spec.mutable_dataset_options())["train_limit"] = "1280";
  (*spec.mutable_dataset_options())["test_limit"] = "256";
  spec.set_steps(steps);
  spec.set_batch_size(32);
  spec.set_lr(2e-3);
  spec.set_seed(1);
  spec.set_memory_baseline_steps(0);
  return spec;
}

// A DaemonTest whose daemon has loaded its model repository, with an
// InferenceClient on it.
class ServingDaemonTest : public DaemonTest {
 protected:
  void SetUp() override { StartServing({}); }

  // (Re)starts the daemon and waits until ServerReady: the port file appears
  // before the repository has loaded.
  void StartServing(std::vector<std::string> flags) {
    StartDaemon(std::move(flags));
    if (daemon_ == nullptr) return;
    client_ = std::make_unique<InferenceClient>(daemon_->grpc_address());
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (absl::Now() < deadline) {
      auto ready = client_->ServerReady();
      if (ready.ok() && *ready) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    FAIL() << "mantissad never became ready: " << daemon_->Log();
  }

  // Trains `spec` to success and returns the job id ("" after a failure).
  std::string Train(const v1::JobSpec& spec) {
    const v1::Job job = SubmitAndWait(spec);
    EXPECT_EQ(job.state(), v1::SUCCEEDED) << job.error();
    return job.state() == v1::SUCCEEDED ? job.id() : "";
  }

  // Exports, expecting success; the exported version's status.
  v1::ModelVersionStatus Export(const std::string& job_id, const std::string& name,
                                const std::string& precision,
                                std::optional<int> max_batch_size = std::nullopt) {
    v1::ModelVersionStatus model;
    grpc::Status s = client_->Export(job_id, name, precision, &model, max_batch_size);
    EXPECT_TRUE(s.ok()) << name << " (" << precision << "): " << s.error_code() << " "
                        << s.error_message();
    return model;
  }

  CommandResult Cli(std::vector<std::string> args) {
    args.insert(args.begin(), daemon_->server_flag());
    return RunCli(args);
  }

  // The status of `name` in ListModels; an empty one if absent.
  v1::ModelStatus FindModel(const std::string& name) {
    auto models = client_->ListModels();
    EXPECT_OK(models);
    if (!models.ok()) return {};
    for (const v1::ModelStatus& m : *models) {
      if (m.name() == name) return m;
    }
    return {};
  }

  std::unique_ptr<InferenceClient> client_;
};

}  // namespace mantissa::testing

#endif  // MANTISSA_TESTS_TESTING_SERVING_DAEMON_TEST_H_
