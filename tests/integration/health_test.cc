// What generic tools see of the daemon: the standard gRPC health-checking
// service (grpc_health_probe, Kubernetes gRPC probes) with ServerReady
// beside it, flipping to NOT_SERVING while a SIGTERM drains the daemon, and
// server reflection (grpcurl) listing and describing every service. The
// clients are generated from the public protos vendored in tests/protos/.

#include <google/protobuf/descriptor.pb.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <future>
#include <thread>

#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "tests/testing/serving_daemon_test.h"

namespace mantissa {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using HealthStatus = grpc::health::v1::HealthCheckResponse;
namespace reflection = grpc::reflection::v1alpha;

constexpr char kInferenceService[] = "inference.GRPCInferenceService";

class HealthTest : public testing::ServingDaemonTest {
 protected:
  // The health of `service` ("" = the whole server); UNKNOWN with `error`
  // set when the call fails.
  HealthStatus::ServingStatus Check(const std::string& service, grpc::Status* error = nullptr) {
    auto stub = grpc::health::v1::Health::NewStub(client_->channel());
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    HealthStatus response;
    const grpc::Status status = stub->Check(&context, request, &response);
    if (error != nullptr) *error = status;
    return status.ok() ? response.status() : HealthStatus::UNKNOWN;
  }

  // Trains and exports a small model "m", so that inference can be probed.
  void ExportModel() {
    const std::string job = Train(testing::SyntheticMlpSpec(10));
    ASSERT_FALSE(job.empty());
    Export(job, "m", "bf16-true");
  }

  grpc::Status InferOnce() {
    inference::ModelInferResponse response;
    return client_->Infer(
        testing::FloatRequest("m", "input", {1, 32}, testing::PseudoRandomFloats(32, 4)),
        &response);
  }

  // Polls until the server's health is `want`; false if it never was.
  bool WaitForHealth(HealthStatus::ServingStatus want, absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      if (Check("") == want) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }
};

TEST_F(HealthTest, ServingAndReadyOnceStarted) {
  EXPECT_EQ(Check(""), HealthStatus::SERVING);
  for (const char* service :
       {kInferenceService, "mantissa.v1.TrainingService", "mantissa.v1.ModelService"}) {
    EXPECT_EQ(Check(service), HealthStatus::SERVING) << service;
  }
  grpc::Status error;
  EXPECT_EQ(Check("no.such.Service", &error), HealthStatus::UNKNOWN);
  EXPECT_EQ(error.error_code(), grpc::NOT_FOUND);

  auto live = client_->ServerLive();
  ASSERT_OK(live);
  EXPECT_TRUE(*live);
  auto ready = client_->ServerReady();
  ASSERT_OK(ready);
  EXPECT_TRUE(*ready);
}

// Each test starts its daemon with its own --drain_seconds.
class DrainTest : public HealthTest {
 protected:
  void SetUp() override {}
};

TEST_F(DrainTest, SigtermDrainsWithNotServingWhileStillAnsweringThenExitsZero) {
  StartServing({"--drain_seconds=3"});
  ExportModel();
  ASSERT_FALSE(HasFailure());
  ASSERT_EQ(Check(""), HealthStatus::SERVING);

  // A watcher, as a load balancer would hold, sees the flip as it happens.
  std::vector<HealthStatus::ServingStatus> watched;
  grpc::ClientContext watch_context;
  watch_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto health = grpc::health::v1::Health::NewStub(client_->channel());
  grpc::health::v1::HealthCheckRequest watch_request;
  auto watch = health->Watch(&watch_context, watch_request);
  // It stops at NOT_SERVING: an open stream would hold the shutdown up.
  std::promise<void> first_update;
  std::thread watcher([&] {
    HealthStatus update;
    while (watch->Read(&update)) {
      watched.push_back(update.status());
      if (watched.size() == 1) first_update.set_value();
      if (update.status() == HealthStatus::NOT_SERVING) watch_context.TryCancel();
    }
    watch->Finish();
  });
  // On an early return: end the watch, then the thread.
  struct Joiner {
    grpc::ClientContext& context;
    std::thread& thread;
    ~Joiner() {
      context.TryCancel();
      if (thread.joinable()) thread.join();
    }
  } joiner{watch_context, watcher};

  // The watch has reported the state before the signal.
  ASSERT_EQ(first_update.get_future().wait_for(std::chrono::seconds(30)),
            std::future_status::ready);

  daemon_->SendSignal(SIGTERM);
  ASSERT_TRUE(WaitForHealth(HealthStatus::NOT_SERVING, absl::Seconds(10))) << daemon_->Log();
  // Draining: not ready for new traffic, but alive and still answering.
  EXPECT_EQ(Check(kInferenceService), HealthStatus::NOT_SERVING);
  auto ready = client_->ServerReady();
  ASSERT_OK(ready);
  EXPECT_FALSE(*ready);
  auto live = client_->ServerLive();
  ASSERT_OK(live);
  EXPECT_TRUE(*live);
  const grpc::Status infer = InferOnce();
  EXPECT_TRUE(infer.ok()) << infer.error_message();
  EXPECT_EQ(ListJobs().size(), 1u);

  watcher.join();
  EXPECT_EQ(daemon_->WaitForExit(absl::Seconds(60)), 0);
  ASSERT_FALSE(watched.empty());
  EXPECT_EQ(watched.front(), HealthStatus::SERVING);
  EXPECT_THAT(watched, Contains(HealthStatus::NOT_SERVING));
}

TEST_F(DrainTest, ASecondSignalEndsTheDrainEarly) {
  StartServing({"--drain_seconds=600"});
  daemon_->SendSignal(SIGTERM);
  ASSERT_TRUE(WaitForHealth(HealthStatus::NOT_SERVING, absl::Seconds(10))) << daemon_->Log();
  daemon_->SendSignal(SIGTERM);
  // Far sooner than the 600 s drain.
  EXPECT_EQ(daemon_->WaitForExit(absl::Seconds(60)), 0);
}

TEST_F(HealthTest, ReflectionListsAndDescribesTheServices) {
  auto stub = reflection::ServerReflection::NewStub(client_->channel());
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  auto stream = stub->ServerReflectionInfo(&context);
  const auto ask = [&](const reflection::ServerReflectionRequest& request) {
    reflection::ServerReflectionResponse response;
    EXPECT_TRUE(stream->Write(request));
    EXPECT_TRUE(stream->Read(&response));
    return response;
  };

  reflection::ServerReflectionRequest list;
  list.set_list_services("");
  const reflection::ServerReflectionResponse services = ask(list);
  ASSERT_TRUE(services.has_list_services_response()) << services.ShortDebugString();
  std::vector<std::string> names;
  for (const auto& s : services.list_services_response().service()) names.push_back(s.name());
  for (const char* service : {kInferenceService, "mantissa.v1.TrainingService",
                              "mantissa.v1.ModelService", "grpc.health.v1.Health"}) {
    EXPECT_THAT(names, Contains(service));
  }

  // Descriptors, with their dependencies, for what a tool would call.
  const auto describe = [&](const std::string& symbol) {
    reflection::ServerReflectionRequest request;
    request.set_file_containing_symbol(symbol);
    std::vector<google::protobuf::FileDescriptorProto> files;
    const reflection::ServerReflectionResponse response = ask(request);
    EXPECT_TRUE(response.has_file_descriptor_response())
        << symbol << ": " << response.ShortDebugString();
    for (const std::string& bytes : response.file_descriptor_response().file_descriptor_proto()) {
      google::protobuf::FileDescriptorProto file;
      EXPECT_TRUE(file.ParseFromString(bytes));
      files.push_back(file);
    }
    return files;
  };
  const auto find_file =
      [](const std::vector<google::protobuf::FileDescriptorProto>& files,
         const std::string& name) -> const google::protobuf::FileDescriptorProto* {
    for (const auto& f : files) {
      if (f.name() == name) return &f;
    }
    return nullptr;
  };

  const auto inference_files = describe(kInferenceService);
  const auto* grpc_service = find_file(inference_files, "inference/grpc_service.proto");
  ASSERT_NE(grpc_service, nullptr);
  EXPECT_EQ(grpc_service->package(), "inference");
  ASSERT_EQ(grpc_service->service_size(), 1);
  EXPECT_EQ(grpc_service->service(0).name(), "GRPCInferenceService");
  std::vector<std::string> methods;
  for (const auto& m : grpc_service->service(0).method()) methods.push_back(m.name());
  for (const char* method :
       {"ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer",
        "RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"}) {
    EXPECT_THAT(methods, Contains(method));
  }

  const auto serving_files = describe("mantissa.v1.ModelService");
  EXPECT_NE(find_file(serving_files, "mantissa/v1/serving.proto"), nullptr);
  // A message type resolves to its file too.
  EXPECT_NE(find_file(describe("inference.ModelInferRequest"), "inference/grpc_service.proto"),
            nullptr);

  reflection::ServerReflectionRequest unknown;
  unknown.set_file_containing_symbol("no.such.Symbol");
  const reflection::ServerReflectionResponse error = ask(unknown);
  ASSERT_TRUE(error.has_error_response()) << error.ShortDebugString();
  EXPECT_EQ(error.error_response().error_code(), grpc::NOT_FOUND);

  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

}  // namespace
}  // namespace mantissa
