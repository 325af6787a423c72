#include "server/serving/model_catalog_sync.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/message_differencer.h"
#include "server/artifacts/export_artifact.h"
#include "server/serving/model_server.h"
#include "tests/serving/serving_test_util.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/torchscript_writer.h"

namespace mantissa {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// The models table of one database, in memory: generations count up per
// model, as the job stores' PublishModelChange does.
class FakeCatalogTable {
 public:
  int64_t Publish(const std::string& name, bool loaded) {
    std::lock_guard<std::mutex> lock(mu_);
    ModelCatalogRecord& record = records_[name];
    record.name = name;
    record.loaded = loaded;
    return ++record.generation;
  }
  std::vector<ModelCatalogRecord> Records() {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<ModelCatalogRecord> records;
    for (const auto& [name, record] : records_) records.push_back(record);
    return records;
  }

  std::atomic<bool> unreachable{false};

 private:
  std::mutex mu_;
  std::map<std::string, ModelCatalogRecord> records_;
};

// One daemon's connection to the table, counting its reads.
class FakeCatalog : public ModelCatalog {
 public:
  explicit FakeCatalog(FakeCatalogTable* table) : table_(table) {}

  absl::StatusOr<int64_t> PublishChange(const std::string& name, bool loaded) override {
    if (table_->unreachable) return absl::UnavailableError("the database is down");
    return table_->Publish(name, loaded);
  }
  absl::StatusOr<std::vector<ModelCatalogRecord>> Records() override {
    ++reads;
    if (table_->unreachable) return absl::UnavailableError("the database is down");
    return table_->Records();
  }

  std::atomic<int> reads{0};

 private:
  FakeCatalogTable* const table_;
};

// Polls `done` until it holds, for at most a minute (a deadline, not a
// timing assertion: a working sync is far quicker).
bool Eventually(const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return done();
}

// --- ModelCatalogSync on its own, stepped by SyncOnce.

class ModelCatalogSyncTest : public ::testing::Test {
 protected:
  std::unique_ptr<ModelCatalogSync> MakeSync(FakeCatalog* catalog) {
    auto sync = ModelCatalogSync::Create(
        {.catalog = catalog, .apply = [this](const ModelCatalogRecord& record) {
           applied_.push_back(absl::StrCat(record.name, record.loaded ? " loaded" : " unloaded"));
           return true;
         }});
    EXPECT_OK(sync);
    return sync.ok() ? *std::move(sync) : nullptr;
  }

  FakeCatalogTable table_;
  FakeCatalog mine_{&table_};
  FakeCatalog theirs_{&table_};
  std::vector<std::string> applied_;
};

TEST_F(ModelCatalogSyncTest, AppliesOthersChangesOnceAndNeverItsOwn) {
  table_.Publish("old", false);
  auto sync = MakeSync(&mine_);
  ASSERT_NE(sync, nullptr);
  ASSERT_EQ(sync->Adopt().size(), 1u);  // seen: not applied again
  sync->Publish("mine", true);
  theirs_.PublishChange("theirs", true).IgnoreError();
  sync->SyncOnce();
  EXPECT_THAT(applied_, ElementsAre("theirs loaded"));
  sync->SyncOnce();  // nothing newer
  EXPECT_THAT(applied_, ElementsAre("theirs loaded"));
  // Two changes between syncs: only the latest state is applied.
  theirs_.PublishChange("mine", true).IgnoreError();
  theirs_.PublishChange("mine", false).IgnoreError();
  sync->SyncOnce();
  EXPECT_THAT(applied_, ElementsAre("theirs loaded", "mine unloaded"));
}

TEST_F(ModelCatalogSyncTest, AFailedPublishIsRetriedUnlessANewerChangeCame) {
  auto sync = MakeSync(&mine_);
  ASSERT_NE(sync, nullptr);
  EXPECT_THAT(sync->Adopt(), IsEmpty());
  table_.unreachable = true;
  sync->Publish("a", true);
  sync->Publish("b", true);
  sync->SyncOnce();  // still unreachable: nothing recorded, nothing applied
  EXPECT_THAT(table_.Records(), IsEmpty());
  table_.unreachable = false;
  theirs_.PublishChange("b", false).IgnoreError();  // newer than the failed publish
  sync->SyncOnce();
  const std::vector<ModelCatalogRecord> records = table_.Records();
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].name, "a");
  EXPECT_TRUE(records[0].loaded);
  EXPECT_EQ(records[1].name, "b");
  EXPECT_FALSE(records[1].loaded);
  EXPECT_EQ(records[1].generation, 1);  // not overwritten by the retry
  EXPECT_THAT(applied_, ElementsAre("b unloaded"));
}

TEST_F(ModelCatalogSyncTest, TheThreadSyncsAtStartAndWhenWoken) {
  auto sync = ModelCatalogSync::Create({.catalog = &mine_,
                                        .recheck = absl::Hours(1),
                                        .apply = [](const ModelCatalogRecord&) { return true; }});
  ASSERT_OK(sync);
  (*sync)->Start();
  ASSERT_TRUE(Eventually([&] { return mine_.reads == 1; }));  // the first sync
  (*sync)->Changed();
  EXPECT_TRUE(Eventually([&] { return mine_.reads == 2; }));
  (*sync)->Stop();
  (*sync)->Stop();  // idempotent
}

TEST_F(ModelCatalogSyncTest, CreateValidatesOptions) {
  EXPECT_THAT(ModelCatalogSync::Create({.apply = [](const ModelCatalogRecord&) { return true; }}),
              testing::StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("catalog")));
  EXPECT_THAT(ModelCatalogSync::Create({.catalog = &mine_,
                                        .recheck = absl::ZeroDuration(),
                                        .apply = [](const ModelCatalogRecord&) { return true; }}),
              testing::StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("catalog_recheck")));
}

// --- Two ModelServers (two daemons) over one repository root.

inference::ModelInferRequest Request(const std::string& model, const std::string& input,
                                     const torch::Tensor& x) {
  inference::ModelInferRequest request;
  request.set_model_name(model);
  auto* tensor = request.add_inputs();
  tensor->set_name(input);
  tensor->set_datatype("FP32");
  for (int64_t d : x.sizes()) tensor->add_shape(d);
  const torch::Tensor t = x.to(torch::kFloat32).contiguous();
  request.add_raw_input_contents(std::string(static_cast<const char*>(t.data_ptr()), t.nbytes()));
  return request;
}

// The raw bytes of the first output, or the error.
absl::StatusOr<std::string> InferBytes(ModelServer& server,
                                       const inference::ModelInferRequest& request) {
  inference::ModelInferResponse response;
  std::promise<absl::Status> answered;
  server.Infer(&request, &response, [&](absl::Status s) { answered.set_value(s); });
  absl::Status status = answered.get_future().get();
  if (!status.ok()) return status;
  return response.raw_output_contents(0);
}

v1::RegisterModelRequest Registration(const std::string& name, const std::string& file,
                                      const std::string& precision = "32-true") {
  v1::RegisterModelRequest request;
  request.set_name(name);
  request.set_torchscript_path(file);
  request.set_precision(precision);
  *request.add_inputs() = Spec("x", "FP32", {8});
  *request.add_outputs() = Spec("y", "FP32", {3});
  return request;
}

class SharedRepositoryTest : public ::testing::Test {
 protected:
  std::unique_ptr<ModelServer> StartServer(FakeCatalog* catalog,
                                           absl::Duration recheck = absl::Hours(1)) {
    ModelServer::Options options;
    options.state_dir = dir_.path();
    options.repository_root = dir_.File("shared-models");
    options.catalog = catalog;
    options.catalog_recheck = recheck;
    options.device = ProbedCpu();
    options.calibration_items = 16;
    options.torchscript_roots = FileRoots({dir_.path()}, "--torchscript_root");
    auto server = ModelServer::Create(options);
    EXPECT_OK(server);
    if (!server.ok()) return nullptr;
    (*server)->LoadRepository();
    return *std::move(server);
  }

  void SetUp() override {
    a_ = StartServer(&catalog_a_);
    b_ = StartServer(&catalog_b_);
    ASSERT_NE(a_, nullptr);
    ASSERT_NE(b_, nullptr);
    ASSERT_OK(testing::WriteTorchScriptMlp(dir_.File("v1.pt"), 8, 16, 3, /*seed=*/1));
    ASSERT_OK(testing::WriteTorchScriptMlp(dir_.File("v2.pt"), 8, 16, 3, /*seed=*/2));
  }

  static bool Serves(ModelServer& server, const std::string& name, const std::string& version) {
    absl::StatusOr<bool> ready = server.ModelReady(name, version);
    return ready.ok() && *ready;
  }

  // The versions `server` lists for `name`, as "VERSION STATE".
  static std::vector<std::string> Versions(ModelServer& server, const std::string& name) {
    std::vector<std::string> versions;
    for (const v1::ModelStatus& model : server.List()) {
      if (model.name() != name) continue;
      for (const v1::ModelVersionStatus& v : model.versions()) {
        versions.push_back(absl::StrCat(v.config().version(), " ", v.state()));
      }
    }
    return versions;
  }

  static v1::HalfCastValidation Validation(ModelServer& server, const std::string& name) {
    for (const v1::ModelStatus& model : server.List()) {
      if (model.name() == name) return model.versions().rbegin()->validation();
    }
    return {};
  }

  const torch::Tensor x_ = torch::rand({2, 8});
  testing::TempDir dir_;
  FakeCatalogTable table_;
  FakeCatalog catalog_a_{&table_};
  FakeCatalog catalog_b_{&table_};
  std::unique_ptr<ModelServer> a_;
  std::unique_ptr<ModelServer> b_;
};

TEST_F(SharedRepositoryTest, AJobExportedThroughAIsServedByBOnNotification) {
  std::unique_ptr<Model> trained = BuildMlp(7);
  v1::Job job;
  job.set_id("job1");
  job.set_state(v1::SUCCEEDED);
  ASSERT_OK(ExportArtifact::Write(ExportArtifact::PathFor(dir_.path(), "job1"),
                                  MlpArtifact("job1", *trained)));
  v1::ExportModelRequest request;
  request.set_job_id("job1");
  request.set_name("exported");
  request.set_precision("32-true");
  ASSERT_OK(a_->Export(job, request));
  EXPECT_FALSE(Serves(*b_, "exported", ""));  // on disk, not loaded yet

  b_->CatalogChanged();
  ASSERT_TRUE(Eventually([&] { return Serves(*b_, "exported", "1"); }));
  const torch::Tensor x = torch::rand({3, kFeatures});
  auto from_a = InferBytes(*a_, Request("exported", "input", x));
  auto from_b = InferBytes(*b_, Request("exported", "input", x));
  ASSERT_OK(from_a);
  ASSERT_OK(from_b);
  EXPECT_EQ(*from_a, *from_b);
}

TEST_F(SharedRepositoryTest, RegisterUnloadLoadAndDeleteThroughAReachB) {
  ASSERT_OK(a_->Register(Registration("ts", dir_.File("v1.pt"))));
  b_->CatalogChanged();
  ASSERT_TRUE(Eventually([&] { return Serves(*b_, "ts", "1"); }));

  // A second version replaces the first on B as on A.
  ASSERT_OK(a_->Register(Registration("ts", dir_.File("v2.pt"))));
  b_->CatalogChanged();
  ASSERT_TRUE(Eventually([&] { return Serves(*b_, "ts", "2"); }));
  EXPECT_EQ(*InferBytes(*a_, Request("ts", "x", x_)), *InferBytes(*b_, Request("ts", "x", x_)));

  // Deleting the older version: B forgets it and keeps serving version 2.
  ASSERT_OK(a_->DeleteVersion("ts", 1));
  b_->CatalogChanged();
  ASSERT_TRUE(Eventually([&] { return Versions(*b_, "ts").size() == 1; }));
  EXPECT_THAT(Versions(*b_, "ts"), ElementsAre("2 READY"));

  ASSERT_OK(a_->Unload("ts"));
  b_->CatalogChanged();
  ASSERT_TRUE(Eventually([&] { return !Serves(*b_, "ts", ""); }));
  EXPECT_THAT(Versions(*b_, "ts"), ElementsAre("2 UNAVAILABLE"));

  ASSERT_OK(a_->Load("ts"));
  b_->CatalogChanged();
  ASSERT_TRUE(Eventually([&] { return Serves(*b_, "ts", "2"); }));

  ASSERT_OK(b_->Unload("ts"));  // either way round
  a_->CatalogChanged();
  ASSERT_TRUE(Eventually([&] { return !Serves(*a_, "ts", ""); }));
  ASSERT_OK(a_->DeleteVersion("ts", 0));
  b_->CatalogChanged();
  ASSERT_TRUE(Eventually([&] { return Versions(*b_, "ts").empty(); }));
  EXPECT_FALSE(Serves(*b_, "ts", ""));
}

// A version policy set through A is read from model.json by B.
TEST_F(SharedRepositoryTest, AVersionPolicySetThroughAReachesB) {
  ASSERT_OK(a_->Register(Registration("ts", dir_.File("v1.pt"))));
  ASSERT_OK(a_->Register(Registration("ts", dir_.File("v2.pt"))));
  b_->CatalogChanged();
  ASSERT_TRUE(Eventually([&] { return Serves(*b_, "ts", "2"); }));

  ASSERT_OK(a_->Rollback("ts", 1));
  b_->CatalogChanged();
  ASSERT_TRUE(Eventually([&] { return Serves(*b_, "ts", "1") && !Serves(*b_, "ts", "2"); }));
  EXPECT_EQ(*InferBytes(*a_, Request("ts", "x", x_)), *InferBytes(*b_, Request("ts", "x", x_)));

  v1::VersionPolicy all;
  all.mutable_all();
  ASSERT_OK(b_->SetVersionPolicy("ts", all));
  a_->CatalogChanged();
  ASSERT_TRUE(Eventually([&] { return Serves(*a_, "ts", "1") && Serves(*a_, "ts", "2"); }));
}

TEST_F(SharedRepositoryTest, ARefusedCastIsNotValidatedAgainAtEveryRecheck) {
  b_.reset();
  b_ = StartServer(&catalog_b_, absl::Milliseconds(20));
  ASSERT_NE(b_, nullptr);
  ASSERT_OK(a_->Register(Registration("ts", dir_.File("v1.pt"), "bf16-true")));
  v1::RegisterModelRequest strict = Registration("ts", dir_.File("v2.pt"), "bf16-true");
  strict.mutable_promotion()->set_max_mean_rel_diff(1e-12);
  EXPECT_THAT(a_->Register(strict),
              testing::StatusIs(absl::StatusCode::kUnavailable, HasSubstr("promotion policy")));
  b_->CatalogChanged();
  ASSERT_TRUE(Eventually([&] {
    return Versions(*b_, "ts") == std::vector<std::string>{"1 READY", "2 UNAVAILABLE"} &&
           Validation(*b_, "ts").duration_seconds() > 0;
  }));
  const v1::HalfCastValidation refused = Validation(*b_, "ts");
  // Two reads later at least one whole recheck ran: the refused files are
  // not loaded (and validated) again.
  const int reads = catalog_b_.reads;
  ASSERT_TRUE(Eventually([&] { return catalog_b_.reads >= reads + 2; }));
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(Validation(*b_, "ts"), refused));
  EXPECT_TRUE(Serves(*b_, "ts", "1"));
}

TEST_F(SharedRepositoryTest, AVersionAPolicyNamesIsNotDeleted) {
  ASSERT_OK(a_->Register(Registration("ts", dir_.File("v1.pt"))));
  ASSERT_OK(a_->Register(Registration("ts", dir_.File("v2.pt"))));
  ASSERT_OK(a_->Rollback("ts", 1));
  ASSERT_OK(a_->Unload("ts"));
  // Unloaded, version 1 serves nowhere, but model.json still pins it: deleting
  // it would leave a policy that never loads.
  EXPECT_THAT(a_->DeleteVersion("ts", 1),
              testing::StatusIs(absl::StatusCode::kFailedPrecondition,
                                HasSubstr("named by its version policy (specific 1)")));
  EXPECT_THAT(Versions(*a_, "ts"), ::testing::Contains(::testing::StartsWith("1 ")));
  ASSERT_OK(a_->DeleteVersion("ts", 2));  // not named: deleted
  ASSERT_OK(a_->Load("ts"));
  EXPECT_TRUE(Serves(*a_, "ts", "1"));
}

TEST_F(SharedRepositoryTest, TheRecheckCatchesAChangeWithoutNotification) {
  FakeCatalog catalog_c(&table_);
  std::unique_ptr<ModelServer> c = StartServer(&catalog_c, absl::Milliseconds(50));
  ASSERT_NE(c, nullptr);
  // Adopt at start-up, then the first sync.
  ASSERT_TRUE(Eventually([&] { return catalog_c.reads >= 2; }));
  ASSERT_OK(a_->Register(Registration("ts", dir_.File("v1.pt"))));
  EXPECT_TRUE(Eventually([&] { return Serves(*c, "ts", "1"); }));
}

TEST_F(SharedRepositoryTest, ADaemonDoesNotReloadItsOwnChange) {
  // A rechecks often; its own publication must not make it load again.
  a_.reset();
  a_ = StartServer(&catalog_a_, absl::Milliseconds(20));
  ASSERT_NE(a_, nullptr);
  ASSERT_OK(a_->Register(Registration("ts", dir_.File("v1.pt"), "bf16-true")));
  const v1::HalfCastValidation loaded = Validation(*a_, "ts");
  ASSERT_GT(loaded.duration_seconds(), 0.0);
  a_->CatalogChanged();
  // Two reads after the change: at least one whole sync ran after it.
  const int reads = catalog_a_.reads;
  ASSERT_TRUE(Eventually([&] { return catalog_a_.reads >= reads + 2; }));
  // A reload would validate the cast again and time it anew.
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(Validation(*a_, "ts"), loaded));
  EXPECT_TRUE(Serves(*a_, "ts", "1"));
}

TEST_F(SharedRepositoryTest, ADaemonStartingLeavesModelsUnloadedEverywhereUnloaded) {
  ASSERT_OK(a_->Register(Registration("on", dir_.File("v1.pt"))));
  ASSERT_OK(a_->Register(Registration("off", dir_.File("v2.pt"))));
  ASSERT_OK(a_->Unload("off"));
  FakeCatalog catalog_c(&table_);
  std::unique_ptr<ModelServer> c = StartServer(&catalog_c);
  ASSERT_NE(c, nullptr);
  EXPECT_TRUE(Serves(*c, "on", "1"));
  EXPECT_FALSE(Serves(*c, "off", ""));
  EXPECT_THAT(Versions(*c, "off"), ElementsAre("1 UNAVAILABLE"));
}

TEST_F(SharedRepositoryTest, AFailedPublishIsAnsweredOkAndRecordedLater) {
  table_.unreachable = true;
  ASSERT_OK(a_->Register(Registration("ts", dir_.File("v1.pt"))));  // served here
  EXPECT_TRUE(Serves(*a_, "ts", "1"));
  table_.unreachable = false;
  a_->CatalogChanged();  // A's next sync records it; B then follows
  ASSERT_TRUE(Eventually([&] { return table_.Records().size() == 1; }));
  b_->CatalogChanged();
  EXPECT_TRUE(Eventually([&] { return Serves(*b_, "ts", "1"); }));
}

}  // namespace
}  // namespace mantissa
