// What a client may make the real daemon read, load or allocate: dataset
// and TorchScript paths only under their roots (missing and forbidden read
// alike, no file content in any message), declared tensor shapes bounded,
// and a committed version over the bounds UNAVAILABLE at start-up instead of
// a crash loop. One daemon serves every case.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "inference/grpc_service.grpc.pb.h"
#include "mantissa/v1/serving.grpc.pb.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/daemon_test.h"
#include "tests/testing/inference_client.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/temp_dir.h"

namespace mantissa {
namespace {

using ::mantissa::testing::RunCli;
using ::mantissa::testing::RunCommand;
using ::mantissa::testing::Submit;
using ::mantissa::testing::TempDir;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

// A committed version of a TorchScript model as RegisterModel would leave
// it, but whose config declares `input_shape` (JSON numbers as strings).
void WriteVersion(const std::string& state_dir, const std::string& name,
                  const std::string& input_shape) {
  const std::string dir = absl::StrCat(state_dir, "/models/", name, "/1");
  std::filesystem::create_directories(dir);
  ASSERT_EQ(
      RunCommand({MANTISSA_WRITE_TORCHSCRIPT_BIN, dir + "/model.ts", "4", "8", "3"}).exit_code, 0);
  WriteFile(dir + "/config.json",
            absl::StrCat(R"({"name": ")", name,
                         R"(", "version": "1", "platform": "pytorch_libtorch", )"
                         R"("model": "torchscript", "task": "custom", "precision": "32-true", )"
                         R"("inputs": [{"name": "x", "datatype": "FP32", "shape": )",
                         input_shape,
                         R"(}], "outputs": [{"name": "y", "datatype": "FP32", "shape": ["3"]}], )"
                         R"("weightsFile": "model.ts"})"));
}

class ConfinementTest : public testing::SharedDaemonTest {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::make_unique<TempDir>();
    data_ = std::make_unique<TempDir>();
    modules_ = std::make_unique<TempDir>();
    outside_ = std::make_unique<TempDir>();
    WriteVersion(dir_->path(), "huge", R"(["100000", "100000"])");
    WriteVersion(dir_->path(), "huge31", R"(["2147483648", "2147483648"])");
    WriteFile(data_->File("iris.csv"), "a,b,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n");
    WriteFile(outside_->File("secret.csv"), "s3cr3t,hunter2,label\n1,2,0\n");
    ASSERT_EQ(::symlink(outside_->File("secret.csv").c_str(), data_->File("link.csv").c_str()), 0);
    ASSERT_EQ(RunCommand({MANTISSA_WRITE_TORCHSCRIPT_BIN, modules_->File("mlp.pt"), "4", "8", "3"})
                  .exit_code,
              0);
    ASSERT_EQ(RunCommand({MANTISSA_WRITE_TORCHSCRIPT_BIN, outside_->File("mlp.pt"), "4", "8", "3"})
                  .exit_code,
              0);
    StartSuiteDaemon({.state_dir = dir_->path(),
                      .extra_flags = {"--data_root=" + data_->path(),
                                      "--torchscript_root=" + modules_->path()}});
    if (daemon_ == nullptr) return;
    // The port file appears before the repository has loaded.
    testing::InferenceClient client(daemon_->grpc_address());
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (absl::Now() < deadline) {
      auto ready = client.ServerReady();
      if (ready.ok() && *ready) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  static void TearDownTestSuite() {
    SharedDaemonTest::TearDownTestSuite();
    data_.reset();
    modules_.reset();
    outside_.reset();
  }

  void SetUp() override {
    SharedDaemonTest::SetUp();
    if (HasFatalFailure()) return;
    stub_ = daemon_->NewStub();
    models_ = v1::ModelService::NewStub(
        grpc::CreateChannel(daemon_->grpc_address(), grpc::InsecureChannelCredentials()));
  }

  // After every case: the daemon still answers.
  void TearDown() override {
    if (models_ != nullptr) EXPECT_OK(List());
  }

  absl::StatusOr<v1::ListModelsResponse> List() {
    grpc::ClientContext context;
    v1::ListModelsResponse response;
    grpc::Status s = models_->ListModels(&context, v1::ListModelsRequest(), &response);
    if (!s.ok()) return absl::UnavailableError(s.error_message());
    return response;
  }

  grpc::Status Register(const std::string& name, const std::string& path,
                        std::vector<int64_t> input_shape = {4}) {
    v1::RegisterModelRequest request;
    request.set_name(name);
    request.set_torchscript_path(path);
    request.set_precision("32-true");
    auto* in = request.add_inputs();
    in->set_name("x");
    in->set_datatype("FP32");
    for (int64_t d : input_shape) in->add_shape(d);
    auto* out = request.add_outputs();
    out->set_name("y");
    out->set_datatype("FP32");
    out->add_shape(3);
    grpc::ClientContext context;
    v1::RegisterModelResponse response;
    return models_->RegisterModel(&context, request, &response);
  }

  static v1::JobSpec Csv(const std::string& path) {
    v1::JobSpec spec;
    spec.set_model("mlp");
    spec.set_dataset("csv");
    (*spec.mutable_dataset_options())["path"] = path;
    spec.set_steps(1);
    spec.set_memory_baseline_steps(0);
    return spec;
  }

  static inline std::unique_ptr<TempDir> data_;
  static inline std::unique_ptr<TempDir> modules_;
  static inline std::unique_ptr<TempDir> outside_;
  std::unique_ptr<v1::TrainingService::Stub> stub_;
  std::unique_ptr<v1::ModelService::Stub> models_;
};

TEST_F(ConfinementTest, ACommittedVersionOverTheShapeLimitsStartsUnavailable) {
  auto listed = List();
  ASSERT_OK(listed);
  int seen = 0;
  for (const v1::ModelStatus& model : listed->models()) {
    if (model.name() != "huge" && model.name() != "huge31") continue;
    ASSERT_EQ(model.versions_size(), 1);
    EXPECT_EQ(model.versions(0).state(), "UNAVAILABLE");
    EXPECT_THAT(model.versions(0).reason(),
                HasSubstr(model.name() == "huge" ? "--max_tensor_elements" : "--max_tensor_dim"));
    ++seen;
  }
  EXPECT_EQ(seen, 2);
  EXPECT_THAT(daemon_->Log(), HasSubstr("huge"));
}

TEST_F(ConfinementTest, RegisterModelRefusesHugeDeclaredShapes) {
  for (std::vector<int64_t> shape : {std::vector<int64_t>{100000, 100000},
                                     std::vector<int64_t>{int64_t{1} << 31, int64_t{1} << 31}}) {
    grpc::Status s = Register("big", modules_->File("mlp.pt"), shape);
    EXPECT_EQ(s.error_code(), grpc::INVALID_ARGUMENT) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr("inputs[0] (x)"));
  }
  // Nothing was added.
  auto listed = List();
  ASSERT_OK(listed);
  for (const v1::ModelStatus& model : listed->models()) EXPECT_NE(model.name(), "big");
}

TEST_F(ConfinementTest, TorchScriptOnlyFromUnderItsRoot) {
  grpc::Status outside = Register("ts", outside_->File("mlp.pt"));
  EXPECT_EQ(outside.error_code(), grpc::PERMISSION_DENIED) << outside.error_message();
  grpc::Status missing = Register("ts", modules_->File("missing.pt"));
  EXPECT_EQ(missing.error_code(), grpc::PERMISSION_DENIED);
  EXPECT_EQ(absl::StrReplaceAll(missing.error_message(), {{modules_->File("missing.pt"), "P"}}),
            absl::StrReplaceAll(outside.error_message(), {{outside_->File("mlp.pt"), "P"}}));
  grpc::Status inside = Register("ts", modules_->File("mlp.pt"));
  EXPECT_TRUE(inside.ok()) << inside.error_message();

  v1::JobSpec train;
  train.set_model("torchscript");
  (*train.mutable_model_options())["path"] = outside_->File("mlp.pt");
  train.set_dataset("synthetic");
  train.set_steps(1);
  EXPECT_EQ(Submit(*stub_, train).status.error_code(), grpc::PERMISSION_DENIED);
}

TEST_F(ConfinementTest, EtcPasswdAsACsvIsRefusedWithoutItsContent) {
  testing::CommandResult r =
      RunCli({daemon_->server_flag(), "submit", "--model", "mlp", "--dataset", "csv",
              "--dataset-option", "path=/etc/passwd", "--dataset-option", "label=zzz"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.out + r.err, AllOf(HasSubstr("PERMISSION_DENIED"), Not(HasSubstr("root:x:"))));
}

TEST_F(ConfinementTest, DotDotAndSymlinksOutOfTheRootAreRefused) {
  const std::string outside_name = outside_->path().substr(outside_->path().rfind('/') + 1);
  const std::string escape = absl::StrCat(data_->path(), "/../", outside_name, "/secret.csv");
  for (const std::string& path : {escape, data_->File("link.csv")}) {
    testing::SubmitOutcome refused = Submit(*stub_, Csv(path));
    EXPECT_EQ(refused.status.error_code(), grpc::PERMISSION_DENIED) << path;
    EXPECT_THAT(refused.status.error_message(),
                AllOf(Not(HasSubstr("s3cr3t")), Not(HasSubstr("hunter2"))));
  }
  // A missing file reads exactly like a forbidden one.
  testing::SubmitOutcome missing = Submit(*stub_, Csv(data_->File("nope.csv")));
  testing::SubmitOutcome forbidden = Submit(*stub_, Csv(outside_->File("secret.csv")));
  EXPECT_EQ(missing.status.error_code(), grpc::PERMISSION_DENIED);
  EXPECT_EQ(
      absl::StrReplaceAll(missing.status.error_message(), {{data_->File("nope.csv"), "P"}}),
      absl::StrReplaceAll(forbidden.status.error_message(), {{outside_->File("secret.csv"), "P"}}));
  // Inside the root: trains.
  testing::SubmitOutcome ok = Submit(*stub_, Csv(data_->File("iris.csv")));
  ASSERT_TRUE(ok.status.ok()) << ok.status.error_message();
  auto job = testing::WaitForJob(*stub_, ok.job.id(), testing::IsTerminal);
  ASSERT_OK(job);
  EXPECT_EQ(job->state(), v1::SUCCEEDED) << job->error();
}

}  // namespace
}  // namespace mantissa
