#include "server/serving/model_repository.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "google/protobuf/util/message_differencer.h"
#include "tests/serving/serving_test_util.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace mantissa {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::StatusIs;

// Writes one file, as an exporter would.
absl::Status WriteWeights(const std::string& dir, v1::ModelConfig& config) {
  std::ofstream(dir + "/weights.pt") << "weights";
  config.set_weights_file("weights.pt");
  return absl::OkStatus();
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

size_t StagingEntries(const std::string& root) {
  std::error_code ec;
  if (!fs::exists(root + "/.staging", ec)) return 0;
  return std::distance(fs::directory_iterator(root + "/.staging"), fs::directory_iterator());
}

TEST(ModelRepositoryTest, VersionsCountUpFromOne) {
  testing::TempDir dir;
  const std::string root = dir.File("models");
  auto repository = MakeRepository(root);
  ASSERT_NE(repository, nullptr);
  EXPECT_TRUE(fs::is_directory(root));
  EXPECT_TRUE(repository->ModelNames().empty());
  EXPECT_TRUE(repository->Versions("m").empty());

  for (int64_t expected = 1; expected <= 3; ++expected) {
    auto config = repository->AddVersion("m", v1::ModelConfig(), WriteWeights);
    ASSERT_OK(config);
    EXPECT_EQ(config->name(), "m");
    EXPECT_EQ(config->version(), expected);
    EXPECT_EQ(config->weights_file(), "weights.pt");
    EXPECT_GT(config->create_time().seconds(), 0);
  }
  EXPECT_THAT(repository->Versions("m"), ElementsAre(1, 2, 3));
  EXPECT_THAT(repository->ModelNames(), ElementsAre("m"));
  EXPECT_EQ(repository->VersionDir("m", 2), root + "/m/2");
  EXPECT_EQ(ReadFile(root + "/m/2/weights.pt"), "weights");
  EXPECT_TRUE(fs::is_regular_file(root + "/m/3/config.json"));
  EXPECT_EQ(StagingEntries(root), 0u);

  ASSERT_OK(repository->AddVersion("a-model.v2", v1::ModelConfig(), WriteWeights));
  EXPECT_THAT(repository->ModelNames(), ElementsAre("a-model.v2", "m"));
  EXPECT_THAT(repository->Versions("a-model.v2"), ElementsAre(1));

  // A new repository object over the same root sees the same versions and
  // continues the numbering.
  auto reopened = MakeRepository(root);
  ASSERT_NE(reopened, nullptr);
  EXPECT_THAT(reopened->Versions("m"), ElementsAre(1, 2, 3));
  auto next = reopened->AddVersion("m", v1::ModelConfig(), WriteWeights);
  ASSERT_OK(next);
  EXPECT_EQ(next->version(), 4);
}

TEST(ModelRepositoryTest, VersionsPerModelAreCappedUntilOldOnesAreDeleted) {
  testing::TempDir dir;
  auto repository = ModelRepository::Create({.root = dir.File("models"), .max_versions = 2});
  ASSERT_OK(repository);
  ASSERT_OK((*repository)->AddVersion("m", v1::ModelConfig(), WriteWeights));
  ASSERT_OK((*repository)->AddVersion("m", v1::ModelConfig(), WriteWeights));
  EXPECT_THAT((*repository)->AddVersion("m", v1::ModelConfig(), WriteWeights),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       AllOf(HasSubstr("--max_versions_per_model"),
                             HasSubstr("delete-model m --version 1"))));
  EXPECT_THAT((*repository)->Versions("m"), ElementsAre(1, 2));
  EXPECT_EQ(StagingEntries(dir.File("models")), 0u);
  // Other models have their own count; deleting a version makes room.
  ASSERT_OK((*repository)->AddVersion("other", v1::ModelConfig(), WriteWeights));
  ASSERT_OK((*repository)->DeleteVersion("m", 1));
  auto next = (*repository)->AddVersion("m", v1::ModelConfig(), WriteWeights);
  ASSERT_OK(next);
  EXPECT_EQ(next->version(), 3);
  EXPECT_THAT(ModelRepository::Create({.root = dir.File("models"), .max_versions = 0}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_versions")));
}

TEST(ModelRepositoryTest, ConfigRoundTripsThroughJson) {
  testing::TempDir dir;
  auto repository = MakeRepository(dir.File("models"));
  ASSERT_NE(repository, nullptr);
  v1::ModelConfig config;
  config.set_platform("mantissa_libtorch");
  config.set_model("mlp");
  (*config.mutable_model_options())["hidden"] = "16,8";
  config.set_task("classification");
  config.set_precision("bf16-true");
  v1::TensorSpec* input = config.add_inputs();
  input->set_name("input");
  input->set_datatype("BF16");
  input->add_shape(1);
  input->add_shape(28);
  input->add_shape(28);
  v1::TensorSpec* output = config.add_outputs();
  output->set_name("logits");
  output->set_datatype("BF16");
  output->add_shape(10);
  config.mutable_batching()->set_max_batch_size(8);  // max_queue_delay_us left unset
  config.set_source_job_id("job-1");
  config.set_trained_precision("bf16-mixed");
  config.set_dataset("synthetic");
  (*config.mutable_dataset_options())["features"] = "6";
  config.set_seed(18446744073709551615ull);  // uint64 max survives JSON
  config.set_num_classes(10);

  auto added = repository->AddVersion("m", config, WriteWeights);
  ASSERT_OK(added);
  auto read = repository->ReadConfig("m", 1);
  ASSERT_OK(read);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*read, *added))
      << read->DebugString() << "\nvs\n"
      << added->DebugString();
  EXPECT_TRUE(read->batching().has_max_batch_size());
  EXPECT_FALSE(read->batching().has_max_queue_delay_us());
  EXPECT_EQ(read->seed(), 18446744073709551615ull);

  // Proto field names, pretty printed: readable and stable for other tools.
  const std::string json = ReadFile(repository->VersionDir("m", 1) + "/config.json");
  EXPECT_THAT(json, HasSubstr("\"source_job_id\": \"job-1\""));
  EXPECT_THAT(json, HasSubstr("\n"));
}

TEST(ModelRepositoryTest, ReadConfigErrors) {
  testing::TempDir dir;
  const std::string root = dir.File("models");
  auto repository = MakeRepository(root);
  ASSERT_NE(repository, nullptr);
  EXPECT_THAT(repository->ReadConfig("m", 1),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("version 1")));
  ASSERT_OK(repository->AddVersion("m", v1::ModelConfig(), WriteWeights));
  EXPECT_THAT(repository->ReadConfig("m", 2), StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  EXPECT_THAT(repository->ReadConfig("m", 0), StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  EXPECT_THAT(repository->ReadConfig("../x", 1),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));

  // A field this daemon does not know (written by a newer one) is ignored.
  const std::string path = root + "/m/1/config.json";
  std::string json = ReadFile(path);
  json.insert(json.find('{') + 1, "\"future_field\": {\"x\": 1},");
  std::ofstream(path, std::ios::trunc) << json;
  EXPECT_OK(repository->ReadConfig("m", 1));

  // A version directory copied under another number does not pass as it.
  fs::copy(root + "/m/1", root + "/m/7");
  EXPECT_THAT(repository->ReadConfig("m", 7),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("says model 'm' version 1, expected 'm' version 7")));

  std::ofstream(path, std::ios::trunc) << "{ not json";
  EXPECT_THAT(repository->ReadConfig("m", 1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(path)));
}

TEST(ModelRepositoryTest, StagingLeftoversAndForeignEntriesAreIgnored) {
  testing::TempDir dir;
  const std::string root = dir.File("models");
  // What a crash mid-AddVersion leaves, plus entries that are not versions.
  fs::create_directories(root + "/.staging/m-1-abc");
  std::ofstream(root + "/.staging/m-1-abc/config.json") << "{}";
  fs::create_directories(root + "/m/tmp");
  fs::create_directories(root + "/m/01");
  std::ofstream(root + "/m/5") << "a file, not a directory";
  fs::create_directories(root + "/not a name/1");
  std::ofstream(root + "/stray.txt") << "x";

  auto repository = MakeRepository(root);
  ASSERT_NE(repository, nullptr);
  EXPECT_FALSE(fs::exists(root + "/.staging")) << "Create cleans the staging area";
  EXPECT_TRUE(repository->ModelNames().empty());
  EXPECT_TRUE(repository->Versions("m").empty());

  auto config = repository->AddVersion("m", v1::ModelConfig(), WriteWeights);
  ASSERT_OK(config);
  EXPECT_EQ(config->version(), 1);
  EXPECT_THAT(repository->ModelNames(), ElementsAre("m"));
  EXPECT_THAT(repository->Versions("m"), ElementsAre(1));
}

TEST(ModelRepositoryTest, AnIncompleteVersionDirectoryIsSkippedNotReused) {
  testing::TempDir dir;
  const std::string root = dir.File("models");
  auto repository = MakeRepository(root);
  ASSERT_NE(repository, nullptr);
  ASSERT_OK(repository->AddVersion("m", v1::ModelConfig(), WriteWeights));
  fs::create_directories(root + "/m/2");  // e.g. made by hand, no config.json
  EXPECT_THAT(repository->Versions("m"), ElementsAre(1));
  auto config = repository->AddVersion("m", v1::ModelConfig(), WriteWeights);
  ASSERT_OK(config);
  EXPECT_EQ(config->version(), 3);
  EXPECT_THAT(repository->Versions("m"), ElementsAre(1, 3));
}

TEST(ModelRepositoryTest, AFailingWriteLeavesNothingBehind) {
  testing::TempDir dir;
  const std::string root = dir.File("models");
  auto repository = MakeRepository(root);
  ASSERT_NE(repository, nullptr);
  std::string staged;
  auto failed = repository->AddVersion("m", v1::ModelConfig(),
                                       [&](const std::string& d, v1::ModelConfig&) -> absl::Status {
                                         staged = d;
                                         EXPECT_TRUE(fs::is_directory(d));
                                         EXPECT_THAT(d, HasSubstr(root + "/.staging/m-1-"));
                                         std::ofstream(d + "/weights.pt") << "half written";
                                         return absl::FailedPreconditionError("disk on fire");
                                       });
  EXPECT_THAT(failed, StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("disk on fire")));
  EXPECT_FALSE(fs::exists(staged));
  EXPECT_EQ(StagingEntries(root), 0u);
  EXPECT_FALSE(fs::exists(root + "/m"));
  EXPECT_TRUE(repository->ModelNames().empty());

  // The number was not used up.
  auto config = repository->AddVersion("m", v1::ModelConfig(), WriteWeights);
  ASSERT_OK(config);
  EXPECT_EQ(config->version(), 1);
}

TEST(ModelRepositoryTest, ValidatesNames) {
  for (const std::string name : std::vector<std::string>{"m", "M0", "fashion-mnist.cnn_v2",
                                                         "9lives", std::string(64, 'a')}) {
    EXPECT_OK(ModelRepository::ValidateName(name)) << name;
  }
  for (const std::string name : std::vector<std::string>{"", "-m", ".staging", "_m", "..", "a/b",
                                                         "a b", "ü", std::string(65, 'a')}) {
    EXPECT_THAT(
        ModelRepository::ValidateName(name, "request.name"),
        StatusIs(absl::StatusCode::kInvalidArgument,
                 HasSubstr("request.name: '" + name +
                           "' is not a valid model name ([A-Za-z0-9][A-Za-z0-9_.-]{0,63})")))
        << name;
  }
  testing::TempDir dir;
  auto repository = MakeRepository(dir.File("models"));
  ASSERT_NE(repository, nullptr);
  bool called = false;
  EXPECT_THAT(repository->AddVersion("../evil", v1::ModelConfig(),
                                     [&](const std::string&, v1::ModelConfig&) {
                                       called = true;
                                       return absl::OkStatus();
                                     }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("name: '../evil'")));
  EXPECT_FALSE(called);
  EXPECT_TRUE(repository->ModelNames().empty());
}

TEST(ModelRepositoryTest, ConcurrentAddsGetDistinctVersions) {
  testing::TempDir dir;
  auto repository = MakeRepository(dir.File("models"));
  ASSERT_NE(repository, nullptr);
  constexpr int kThreads = 4, kEach = 3;
  std::vector<std::vector<int64_t>> got(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        auto config = repository->AddVersion("m", v1::ModelConfig(), WriteWeights);
        if (config.ok()) got[t].push_back(config->version());
      }
    });
  }
  for (auto& thread : threads) thread.join();
  std::set<int64_t> versions;
  for (const auto& g : got) versions.insert(g.begin(), g.end());
  EXPECT_EQ(versions.size(), static_cast<size_t>(kThreads * kEach));
  EXPECT_EQ(repository->Versions("m").size(), static_cast<size_t>(kThreads * kEach));
  EXPECT_EQ(repository->Versions("m").back(), kThreads * kEach);
}

TEST(ModelRepositoryTest, DaemonsSharingTheRootGetDistinctVersions) {
  testing::TempDir dir;
  // One instance per daemon: only the lock file orders them.
  constexpr int kDaemons = 4, kEach = 3;
  std::vector<std::unique_ptr<ModelRepository>> daemons;
  for (int d = 0; d < kDaemons; ++d) {
    auto repository = ModelRepository::Create({.root = dir.File("models"), .shared = true});
    ASSERT_OK(repository);
    daemons.push_back(*std::move(repository));
  }
  std::vector<std::vector<int64_t>> got(kDaemons);
  std::vector<std::thread> threads;
  for (int d = 0; d < kDaemons; ++d) {
    threads.emplace_back([&, d] {
      for (int i = 0; i < kEach; ++i) {
        auto config = daemons[d]->AddVersion("m", v1::ModelConfig(), WriteWeights);
        EXPECT_OK(config);
        if (config.ok()) got[d].push_back(config->version());
      }
    });
  }
  for (auto& thread : threads) thread.join();
  std::set<int64_t> versions;
  for (const auto& g : got) versions.insert(g.begin(), g.end());
  EXPECT_EQ(versions.size(), static_cast<size_t>(kDaemons * kEach));
  EXPECT_EQ(daemons[0]->Versions("m").size(), static_cast<size_t>(kDaemons * kEach));
  EXPECT_THAT(daemons[1]->ModelNames(), ElementsAre("m"));  // .lock is no model
}

TEST(ModelRepositoryTest, ASharedRootKeepsStagingEntriesBeingWritten) {
  testing::TempDir dir;
  const std::string root = dir.File("models");
  fs::create_directories(root + "/.staging/m-1-fresh");
  std::ofstream(root + "/.staging/m-1-fresh/weights.pt") << "being written";
  fs::create_directories(root + "/.staging/m-2-stale");
  std::ofstream(root + "/.staging/m-2-stale/weights.pt") << "left by a dead daemon";
  const auto long_ago = fs::file_time_type::clock::now() - std::chrono::hours(2);
  fs::last_write_time(root + "/.staging/m-2-stale/weights.pt", long_ago);
  fs::last_write_time(root + "/.staging/m-2-stale", long_ago);

  ASSERT_OK(ModelRepository::Create({.root = root, .shared = true}));
  EXPECT_TRUE(fs::exists(root + "/.staging/m-1-fresh/weights.pt"));
  EXPECT_FALSE(fs::exists(root + "/.staging/m-2-stale"));
  // A daemon alone with its repository removes every leftover.
  ASSERT_OK(ModelRepository::Create({.root = root}));
  EXPECT_FALSE(fs::exists(root + "/.staging"));
}

TEST(ModelRepositoryTest, DeleteVersionRemovesOneOrEveryVersion) {
  testing::TempDir dir;
  const std::string root = dir.File("models");
  auto repository = MakeRepository(root);
  ASSERT_NE(repository, nullptr);
  for (int i = 0; i < 3; ++i)
    ASSERT_OK(repository->AddVersion("m", v1::ModelConfig(), WriteWeights));
  ASSERT_OK(repository->AddVersion("other", v1::ModelConfig(), WriteWeights));

  ASSERT_OK(repository->DeleteVersion("m", 2));
  EXPECT_THAT(repository->Versions("m"), ElementsAre(1, 3));
  EXPECT_FALSE(fs::exists(repository->VersionDir("m", 2)));
  EXPECT_EQ(StagingEntries(root), 0u);
  EXPECT_THAT(repository->DeleteVersion("m", 2),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no version 2")));

  ASSERT_OK(repository->DeleteVersion("m", 0));
  EXPECT_TRUE(repository->Versions("m").empty());
  EXPECT_FALSE(fs::exists(root + "/m"));
  EXPECT_THAT(repository->ModelNames(), ElementsAre("other"));
  EXPECT_THAT(repository->DeleteVersion("m", 0),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no model 'm'")));
  EXPECT_THAT(repository->DeleteVersion("../x", 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a valid model name")));
}

TEST(ModelRepositoryTest, SettingsDefaultRoundTripAndGoWithTheModel) {
  testing::TempDir dir;
  const std::string root = dir.File("models");
  auto repository = MakeRepository(root);
  ASSERT_NE(repository, nullptr);
  EXPECT_THAT(repository->WriteSettings("m", v1::ModelSettings()),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no model 'm'")));
  ASSERT_OK(repository->AddVersion("m", v1::ModelConfig(), WriteWeights));
  ASSERT_OK(repository->AddVersion("m", v1::ModelConfig(), WriteWeights));

  // No model.json: the defaults (an unset policy reads as latest 1).
  absl::StatusOr<v1::ModelSettings> settings = repository->ReadSettings("m");
  ASSERT_OK(settings);
  EXPECT_FALSE(settings->has_version_policy());

  v1::ModelSettings written;
  written.mutable_version_policy()->mutable_specific()->add_versions(1);
  ASSERT_OK(repository->WriteSettings("m", written));
  settings = repository->ReadSettings("m");
  ASSERT_OK(settings);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*settings, written));
  EXPECT_THAT(ReadFile(root + "/m/model.json"), HasSubstr("\"specific\""));
  // Replaced whole: the staged file was renamed over it, none is left.
  written.mutable_version_policy()->mutable_latest()->set_num_versions(2);
  ASSERT_OK(repository->WriteSettings("m", written));
  settings = repository->ReadSettings("m");
  ASSERT_OK(settings);
  EXPECT_EQ(settings->version_policy().latest().num_versions(), 2u);
  size_t entries = 0;
  for (const auto& entry : fs::directory_iterator(root + "/m")) {
    ++entries;
    EXPECT_THAT(entry.path().filename().string(), Not(HasSubstr(".model.json-")));
  }
  EXPECT_EQ(entries, 3u);  // 1, 2, model.json
  // Not a version: the model's versions and names are unchanged.
  EXPECT_THAT(repository->Versions("m"), ElementsAre(1, 2));

  std::ofstream(root + "/m/model.json", std::ios::trunc) << "{not json";
  EXPECT_THAT(repository->ReadSettings("m"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("m/model.json"), HasSubstr("not model settings"))));

  // Deleting the model removes its settings: a new model of that name
  // starts from the defaults.
  ASSERT_OK(repository->DeleteVersion("m", 0));
  EXPECT_FALSE(fs::exists(root + "/m"));
  ASSERT_OK(repository->AddVersion("m", v1::ModelConfig(), WriteWeights));
  settings = repository->ReadSettings("m");
  ASSERT_OK(settings);
  EXPECT_FALSE(settings->has_version_policy());
}

}  // namespace
}  // namespace mantissa
