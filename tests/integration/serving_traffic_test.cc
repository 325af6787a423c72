// Serving under concurrent traffic through the real daemon: requests that
// arrive together are merged into batches (and each still gets its own rows
// back), and replacing, reloading or unloading a model mid-traffic loses no
// request and hangs none. Every call carries a deadline; no timings are
// asserted.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "tests/testing/serving_daemon_test.h"

namespace mantissa {
namespace {

using ::testing::ElementsAre;
using testing::OutputFloats;

constexpr int kFeatures = 32;
constexpr int kClasses = 4;
constexpr absl::Duration kCallTimeout = absl::Seconds(20);

// What a crowd of clients saw.
struct Outcomes {
  std::mutex mu;
  std::map<grpc::StatusCode, int> codes;
  std::map<grpc::StatusCode, std::string> first_message;  // of each code, for failures
  std::vector<std::string> unexpected;  // descriptions of failures the test did not allow
  int after_unload_ok = 0;              // OK answers to requests sent after the unload returned
  std::atomic<int> completed{0};

  void Record(const grpc::Status& status) {
    std::lock_guard<std::mutex> lock(mu);
    ++codes[status.error_code()];
    first_message.emplace(status.error_code(), status.error_message());
  }
  std::string Describe() {
    std::lock_guard<std::mutex> lock(mu);
    std::string out;
    for (const auto& [code, n] : codes) {
      absl::StrAppend(&out, "code ", code, ": ", n, " (", first_message[code], "); ");
    }
    return out;
  }
  int Count(grpc::StatusCode code) {
    std::lock_guard<std::mutex> lock(mu);
    return codes[code];
  }
};

class ServingTrafficTest : public testing::ServingDaemonTest {
 protected:
  void SetUp() override {
    ServingDaemonTest::SetUp();
    job_ = Train(testing::SyntheticMlpSpec(20));
    ASSERT_FALSE(job_.empty());
    Export(job_, "a", "bf16-true");
    ASSERT_FALSE(HasFailure());
  }

  // Runs `threads` clients, each on its own channel (as separate processes
  // would be), calling `body(thread)` until it returns false.
  static void RunClients(int threads, const std::function<bool(int)>& body) {
    std::vector<std::thread> clients;
    for (int t = 0; t < threads; ++t) {
      clients.emplace_back([&body, t] {
        while (body(t)) {
        }
      });
    }
    for (std::thread& c : clients) c.join();
  }

  std::string job_;
};

TEST_F(ServingTrafficTest, ConcurrentRequestsAreBatchedAndEachGetsItsOwnRows) {
  constexpr int kThreads = 16;
  constexpr int kPerThread = 25;
  // Every thread sends its own item; the answer to each, computed alone first.
  std::vector<std::vector<float>> items, expected;
  for (int t = 0; t < kThreads; ++t) {
    items.push_back(testing::PseudoRandomFloats(kFeatures, 100 + t));
    inference::ModelInferRequest request =
        testing::FloatRequest("a", "input", {1, kFeatures}, items.back());
    testing::RequestFp32Output(&request, "logits");
    inference::ModelInferResponse response;
    ASSERT_TRUE(client_->Infer(request, &response).ok());
    auto values = OutputFloats(response);
    ASSERT_OK(values);
    expected.push_back(*values);
  }
  auto before = daemon_->ScrapeMetrics();
  ASSERT_OK(before);
  const double ok_before = testing::FindSample(*before, "mantissa_inference_requests_total",
                                               {"model=\"a\"", "status=\"OK\""})
                               .value_or(0);

  std::vector<std::unique_ptr<testing::InferenceClient>> clients;
  for (int t = 0; t < kThreads; ++t) {
    clients.push_back(std::make_unique<testing::InferenceClient>(daemon_->grpc_address(),
                                                                 /*own_connection=*/true));
  }
  Outcomes outcomes;
  std::vector<int> sent(kThreads, 0);
  RunClients(kThreads, [&](int t) {
    inference::ModelInferRequest request =
        testing::FloatRequest("a", "input", {1, kFeatures}, items[t]);
    testing::RequestFp32Output(&request, "logits");
    inference::ModelInferResponse response;
    const grpc::Status status = clients[t]->Infer(request, &response, kCallTimeout);
    outcomes.Record(status);
    if (status.ok()) {
      auto values = OutputFloats(response);
      std::lock_guard<std::mutex> lock(outcomes.mu);
      bool mine = values.ok() && values->size() == expected[t].size();
      for (size_t i = 0; mine && i < values->size(); ++i) {
        // Another batch composition may round differently in bf16, but
        // another request's row would be far off.
        mine = std::fabs((*values)[i] - expected[t][i]) <= 0.05 + 0.02 * std::fabs(expected[t][i]);
      }
      if (!mine) outcomes.unexpected.push_back(absl::StrCat("thread ", t, " got another row"));
    }
    return ++sent[t] < kPerThread;
  });

  EXPECT_EQ(outcomes.Count(grpc::OK), kThreads * kPerThread) << outcomes.Describe();
  EXPECT_THAT(outcomes.unexpected, ::testing::IsEmpty());

  auto metrics = daemon_->ScrapeMetrics();
  ASSERT_OK(metrics);
  const auto ok = testing::FindSample(*metrics, "mantissa_inference_requests_total",
                                      {"model=\"a\"", "status=\"OK\""});
  ASSERT_TRUE(ok.has_value()) << *metrics;
  EXPECT_EQ(*ok - ok_before, kThreads * kPerThread);
  const auto count =
      testing::FindSample(*metrics, "mantissa_inference_batch_size_count", {"model=\"a\""});
  const auto sum =
      testing::FindSample(*metrics, "mantissa_inference_batch_size_sum", {"model=\"a\""});
  ASSERT_TRUE(count.has_value() && sum.has_value()) << *metrics;
  // Every item went through exactly one forward...
  EXPECT_EQ(*sum, kThreads * kPerThread + kThreads);
  // ...and concurrent ones shared them.
  EXPECT_GT(*sum / *count, 1.0);
  std::printf("%d requests from %d clients: %.0f forwards, mean batch %.2f\n",
              kThreads * kPerThread, kThreads, *count - kThreads, *sum / *count);
  EXPECT_EQ(testing::FindSample(*metrics, "mantissa_inference_request_duration_seconds_count",
                                {"model=\"a\""}),
            kThreads * kPerThread + kThreads);
  // Some batch held more than one request: a bucket above 1 gained samples.
  const auto le1 = testing::FindSample(*metrics, "mantissa_inference_batch_size_bucket",
                                       {"model=\"a\"", "le=\"1\""});
  ASSERT_TRUE(le1.has_value());
  EXPECT_LT(*le1, *count);
}

TEST_F(ServingTrafficTest, ReplacingAndReloadingAModelMidTrafficLosesNoRequest) {
  constexpr int kThreads = 8;
  std::atomic<bool> stop{false};
  Outcomes outcomes;
  std::set<std::string> versions;
  std::vector<std::unique_ptr<testing::InferenceClient>> clients;
  for (int t = 0; t < kThreads; ++t) {
    clients.push_back(std::make_unique<testing::InferenceClient>(daemon_->grpc_address(),
                                                                 /*own_connection=*/true));
  }
  std::thread traffic([&] {
    RunClients(kThreads, [&](int t) {
      inference::ModelInferRequest request = testing::FloatRequest(
          "a", "input", {2, kFeatures}, testing::PseudoRandomFloats(2 * kFeatures, t));
      inference::ModelInferResponse response;
      const grpc::Status status = clients[t]->Infer(request, &response, kCallTimeout);
      outcomes.Record(status);
      ++outcomes.completed;
      std::lock_guard<std::mutex> lock(outcomes.mu);
      if (status.ok()) {
        versions.insert(response.model_version());
        // Versions alternate between bf16-true and 32-true.
        const size_t width =
            response.outputs_size() == 1 && response.outputs(0).datatype() == "FP32" ? 4 : 2;
        if (response.outputs_size() != 1 || response.raw_output_contents_size() != 1 ||
            response.raw_output_contents(0).size() != 2u * kClasses * width) {
          outcomes.unexpected.push_back(response.ShortDebugString());
        }
      } else {
        outcomes.unexpected.push_back(
            absl::StrCat(status.error_code(), ": ", status.error_message()));
      }
      return !stop.load();
    });
  });
  const auto wait_for_traffic = [&](int more) {
    const int target = outcomes.completed.load() + more;
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (outcomes.completed.load() < target && absl::Now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  };

  wait_for_traffic(20);
  for (int i = 0; i < 3; ++i) {
    // A new version replaces the served one; then the same version again.
    const v1::ModelVersionStatus exported = Export(job_, "a", i % 2 ? "32-true" : "bf16-true");
    EXPECT_EQ(exported.config().version(), 2 + i);
    wait_for_traffic(20);
    const grpc::Status reload = client_->Load("a");
    EXPECT_TRUE(reload.ok()) << reload.error_message();
    wait_for_traffic(20);
  }
  stop = true;
  traffic.join();

  EXPECT_GT(outcomes.Count(grpc::OK), 100);
  EXPECT_THAT(outcomes.unexpected, ::testing::IsEmpty());
  // Replies came from more than one version while they were swapped.
  EXPECT_GT(versions.size(), 1u);
  // The last version serves now, with its own precision.
  inference::ModelInferResponse response;
  ASSERT_TRUE(client_
                  ->Infer(testing::FloatRequest("a", "input", {1, kFeatures},
                                                testing::PseudoRandomFloats(kFeatures, 1)),
                          &response)
                  .ok());
  EXPECT_EQ(response.model_version(), "4");
  EXPECT_EQ(response.outputs(0).datatype(), "BF16");  // version 4 is bf16-true
}

TEST_F(ServingTrafficTest, UnloadingMidTrafficEndsEveryRequestAndHangsNone) {
  constexpr int kThreads = 8;
  std::atomic<bool> stop{false};
  std::atomic<bool> unloaded{false};
  Outcomes outcomes;
  std::vector<std::unique_ptr<testing::InferenceClient>> clients;
  for (int t = 0; t < kThreads; ++t) {
    clients.push_back(std::make_unique<testing::InferenceClient>(daemon_->grpc_address(),
                                                                 /*own_connection=*/true));
  }
  std::thread traffic([&] {
    RunClients(kThreads, [&](int t) {
      const bool sent_after_unload = unloaded.load();
      inference::ModelInferRequest request = testing::FloatRequest(
          "a", "input", {1, kFeatures}, testing::PseudoRandomFloats(kFeatures, t));
      inference::ModelInferResponse response;
      const grpc::Status status = clients[t]->Infer(request, &response, kCallTimeout);
      outcomes.Record(status);
      ++outcomes.completed;
      const grpc::StatusCode code = status.error_code();
      std::lock_guard<std::mutex> lock(outcomes.mu);
      if (code != grpc::OK && code != grpc::NOT_FOUND && code != grpc::FAILED_PRECONDITION &&
          code != grpc::UNAVAILABLE) {
        outcomes.unexpected.push_back(absl::StrCat(code, ": ", status.error_message()));
      }
      if (sent_after_unload && status.ok()) ++outcomes.after_unload_ok;
      return !stop.load();
    });
  });
  const auto wait_for_traffic = [&](int more) {
    const int target = outcomes.completed.load() + more;
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (outcomes.completed.load() < target && absl::Now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  };

  wait_for_traffic(50);
  const grpc::Status unload = client_->Unload("a");
  EXPECT_TRUE(unload.ok()) << unload.error_message();
  unloaded = true;
  wait_for_traffic(50);
  auto ready = client_->ModelReady("a");
  ASSERT_OK(ready);
  EXPECT_FALSE(*ready);
  stop = true;
  traffic.join();

  EXPECT_THAT(outcomes.unexpected, ::testing::IsEmpty());
  EXPECT_GE(outcomes.Count(grpc::OK), 50);
  EXPECT_EQ(outcomes.after_unload_ok, 0);
  EXPECT_GE(outcomes.Count(grpc::FAILED_PRECONDITION) + outcomes.Count(grpc::NOT_FOUND) +
                outcomes.Count(grpc::UNAVAILABLE),
            40);

  // Loaded again, it serves again; the daemon never stopped.
  ASSERT_TRUE(client_->Load("a").ok());
  inference::ModelInferResponse response;
  EXPECT_TRUE(client_
                  ->Infer(testing::FloatRequest("a", "input", {1, kFeatures},
                                                testing::PseudoRandomFloats(kFeatures, 3)),
                          &response)
                  .ok());
  auto live = client_->ServerLive();
  ASSERT_OK(live);
  EXPECT_TRUE(*live);
}

}  // namespace
}  // namespace mantissa
