#include "server/jobs/job_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "mantissa/v1/training.pb.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace mantissa {
namespace {

using ::mantissa::testing::StatusIs;
using ::mantissa::testing::TempDir;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

v1::Job MakeJob(const std::string& id, v1::JobState state) {
  v1::Job job;
  job.set_id(id);
  job.set_state(state);
  job.mutable_spec()->set_model("mlp");
  job.mutable_spec()->set_dataset("synthetic");
  job.mutable_spec()->set_steps(10);
  job.set_effective_precision("32-true");
  return job;
}

std::vector<std::string> Ids(const std::vector<v1::Job>& jobs) {
  std::vector<std::string> ids;
  for (const v1::Job& job : jobs) ids.push_back(job.id());
  return ids;
}

class JobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<JobStore>> store = JobStore::Create({dir_.File("jobs.db")});
    ASSERT_OK(store);
    store_ = std::move(*store);
  }

  TempDir dir_;
  std::unique_ptr<JobStore> store_;
};

TEST_F(JobStoreTest, PutGetRoundTrip) {
  v1::Job job = MakeJob("a1", v1::SUCCEEDED);
  (*job.mutable_spec()->mutable_model_options())["hidden"] = "128,64";
  job.mutable_spec()->set_lr(0.01);
  job.mutable_progress()->set_step(10);
  job.mutable_progress()->set_loss(0.25);
  job.mutable_result()->set_final_loss(0.125);
  job.mutable_result()->set_eval_accuracy(0.9);
  job.add_warnings("precision alias");
  job.mutable_create_time()->set_seconds(1700000000);
  job.set_error("");
  ASSERT_OK(store_->Put(job));

  absl::StatusOr<v1::Job> got = store_->Get("a1");
  ASSERT_OK(got);
  EXPECT_EQ(got->SerializeAsString(), job.SerializeAsString());
  EXPECT_EQ(got->spec().model_options().at("hidden"), "128,64");
  EXPECT_TRUE(got->result().has_eval_accuracy());
  EXPECT_DOUBLE_EQ(got->result().eval_accuracy(), 0.9);
}

TEST_F(JobStoreTest, PutReplacesExistingJob) {
  ASSERT_OK(store_->Put(MakeJob("a1", v1::QUEUED)));
  v1::Job updated = MakeJob("a1", v1::FAILED);
  updated.set_error("boom");
  ASSERT_OK(store_->Put(updated));

  absl::StatusOr<v1::Job> got = store_->Get("a1");
  ASSERT_OK(got);
  EXPECT_EQ(got->state(), v1::FAILED);
  EXPECT_EQ(got->error(), "boom");
  absl::StatusOr<std::vector<v1::Job>> all = store_->List();
  ASSERT_OK(all);
  EXPECT_EQ(all->size(), 1u);
}

TEST_F(JobStoreTest, GetUnknownIdIsNotFoundNamingTheId) {
  ASSERT_OK(store_->Put(MakeJob("a1", v1::QUEUED)));
  EXPECT_THAT(store_->Get("nope42"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope42")));
}

TEST_F(JobStoreTest, ListOfEmptyStoreIsEmpty) {
  absl::StatusOr<std::vector<v1::Job>> jobs = store_->List();
  ASSERT_OK(jobs);
  EXPECT_THAT(*jobs, IsEmpty());
}

TEST_F(JobStoreTest, ListIsNewestFirstByInsertionOrder) {
  // Ids deliberately not in lexical order.
  ASSERT_OK(store_->Put(MakeJob("c", v1::QUEUED)));
  ASSERT_OK(store_->Put(MakeJob("a", v1::QUEUED)));
  ASSERT_OK(store_->Put(MakeJob("b", v1::QUEUED)));
  absl::StatusOr<std::vector<v1::Job>> jobs = store_->List();
  ASSERT_OK(jobs);
  EXPECT_THAT(Ids(*jobs), ElementsAre("b", "a", "c"));
}

TEST_F(JobStoreTest, UpsertKeepsInsertionOrder) {
  ASSERT_OK(store_->Put(MakeJob("first", v1::QUEUED)));
  ASSERT_OK(store_->Put(MakeJob("second", v1::QUEUED)));
  ASSERT_OK(store_->Put(MakeJob("third", v1::QUEUED)));
  // Updating the oldest job must not move it to the front.
  ASSERT_OK(store_->Put(MakeJob("first", v1::RUNNING)));
  ASSERT_OK(store_->Put(MakeJob("first", v1::SUCCEEDED)));
  absl::StatusOr<std::vector<v1::Job>> jobs = store_->List();
  ASSERT_OK(jobs);
  EXPECT_THAT(Ids(*jobs), ElementsAre("third", "second", "first"));
  EXPECT_EQ(jobs->back().state(), v1::SUCCEEDED);
}

TEST_F(JobStoreTest, ListFiltersByState) {
  ASSERT_OK(store_->Put(MakeJob("q1", v1::QUEUED)));
  ASSERT_OK(store_->Put(MakeJob("r1", v1::RUNNING)));
  ASSERT_OK(store_->Put(MakeJob("s1", v1::SUCCEEDED)));
  ASSERT_OK(store_->Put(MakeJob("q2", v1::QUEUED)));
  ASSERT_OK(store_->Put(MakeJob("f1", v1::FAILED)));

  absl::StatusOr<std::vector<v1::Job>> queued = store_->List({v1::QUEUED});
  ASSERT_OK(queued);
  EXPECT_THAT(Ids(*queued), ElementsAre("q2", "q1"));

  absl::StatusOr<std::vector<v1::Job>> live = store_->List({v1::QUEUED, v1::RUNNING});
  ASSERT_OK(live);
  EXPECT_THAT(Ids(*live), ElementsAre("q2", "r1", "q1"));

  absl::StatusOr<std::vector<v1::Job>> cancelled = store_->List({v1::CANCELLED});
  ASSERT_OK(cancelled);
  EXPECT_THAT(*cancelled, IsEmpty());
}

TEST_F(JobStoreTest, StateFilterFollowsUpdates) {
  ASSERT_OK(store_->Put(MakeJob("j", v1::QUEUED)));
  ASSERT_OK(store_->Put(MakeJob("j", v1::RUNNING)));
  absl::StatusOr<std::vector<v1::Job>> queued = store_->List({v1::QUEUED});
  ASSERT_OK(queued);
  EXPECT_THAT(*queued, IsEmpty());
  absl::StatusOr<std::vector<v1::Job>> running = store_->List({v1::RUNNING});
  ASSERT_OK(running);
  EXPECT_THAT(Ids(*running), ElementsAre("j"));
}

TEST_F(JobStoreTest, ListHonoursLimit) {
  for (const char* id : {"j1", "j2", "j3", "j4"}) ASSERT_OK(store_->Put(MakeJob(id, v1::QUEUED)));
  absl::StatusOr<std::vector<v1::Job>> two = store_->List({}, 2);
  ASSERT_OK(two);
  EXPECT_THAT(Ids(*two), ElementsAre("j4", "j3"));

  absl::StatusOr<std::vector<v1::Job>> all = store_->List({}, 0);
  ASSERT_OK(all);
  EXPECT_EQ(all->size(), 4u);

  absl::StatusOr<std::vector<v1::Job>> more = store_->List({}, 10);
  ASSERT_OK(more);
  EXPECT_EQ(more->size(), 4u);
}

TEST_F(JobStoreTest, LimitAppliesAfterStateFilter) {
  ASSERT_OK(store_->Put(MakeJob("q1", v1::QUEUED)));
  ASSERT_OK(store_->Put(MakeJob("s1", v1::SUCCEEDED)));
  ASSERT_OK(store_->Put(MakeJob("q2", v1::QUEUED)));
  ASSERT_OK(store_->Put(MakeJob("s2", v1::SUCCEEDED)));
  absl::StatusOr<std::vector<v1::Job>> jobs = store_->List({v1::QUEUED}, 1);
  ASSERT_OK(jobs);
  EXPECT_THAT(Ids(*jobs), ElementsAre("q2"));
}

TEST(JobStoreReopenTest, DataSurvivesReopening) {
  TempDir dir;
  const std::string path = dir.File("jobs.db");
  {
    absl::StatusOr<std::unique_ptr<JobStore>> store = JobStore::Create({path});
    ASSERT_OK(store);
    ASSERT_OK((*store)->Put(MakeJob("old", v1::SUCCEEDED)));
    v1::Job running = MakeJob("new", v1::RUNNING);
    running.mutable_progress()->set_step(3);
    ASSERT_OK((*store)->Put(running));
  }
  absl::StatusOr<std::unique_ptr<JobStore>> reopened = JobStore::Create({path});
  ASSERT_OK(reopened);
  absl::StatusOr<v1::Job> job = (*reopened)->Get("new");
  ASSERT_OK(job);
  EXPECT_EQ(job->state(), v1::RUNNING);
  EXPECT_EQ(job->progress().step(), 3);

  absl::StatusOr<std::vector<v1::Job>> jobs = (*reopened)->List();
  ASSERT_OK(jobs);
  EXPECT_THAT(Ids(*jobs), ElementsAre("new", "old"));

  // New records still go after the ones from before the reopen.
  ASSERT_OK((*reopened)->Put(MakeJob("newest", v1::QUEUED)));
  ASSERT_OK((*reopened)->Put(MakeJob("old", v1::FAILED)));
  jobs = (*reopened)->List();
  ASSERT_OK(jobs);
  EXPECT_THAT(Ids(*jobs), ElementsAre("newest", "new", "old"));
}

TEST(JobStoreCreateTest, MissingDirectoryFails) {
  TempDir dir;
  EXPECT_THAT(JobStore::Create({dir.File("no/such/dir/jobs.db")}),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("cannot open"), HasSubstr("no/such/dir/jobs.db"))));
}

}  // namespace
}  // namespace mantissa
