// Version policies through the real daemon and CLI: a version refused by its
// promotion policy leaves the serving one in place, rollback pins an older
// version (and survives a restart), `all` serves every version by number,
// and bad input changes nothing.

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/testing/serving_daemon_test.h"

namespace mantissa {
namespace {

using ::testing::AllOf;
using testing::CommandResult;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

class ModelVersionsTest : public testing::ServingDaemonTest {
 protected:
  // The version that answers a request for `model` (version "" = the
  // default), or the gRPC error as "CODE: message".
  std::string Answering(const std::string& model, const std::string& version = "") {
    inference::ModelInferRequest request =
        testing::FloatRequest(model, "input", {1, 32}, testing::PseudoRandomFloats(32, 3));
    request.set_model_version(version);
    inference::ModelInferResponse response;
    const grpc::Status s = client_->Infer(request, &response);
    if (!s.ok()) return absl::StrCat(s.error_code(), ": ", s.error_message());
    return response.model_version();
  }

  std::vector<int64_t> Served(const std::string& model) {
    const v1::ModelStatus status = FindModel(model);
    return {status.served_versions().begin(), status.served_versions().end()};
  }
};

TEST_F(ModelVersionsTest, RefusalRollbackRestartAndPolicies) {
  const std::string job = Train(testing::SyntheticMlpSpec(30));
  ASSERT_FALSE(job.empty());
  CommandResult v1 = Cli({"export", job, "--name", "m", "--precision", "bf16-true"});
  ASSERT_EQ(v1.exit_code, 0) << v1.out << v1.err;

  // Any bf16 rounding misses a bound of 1e-9: version 2 is refused with
  // its figure and the threshold, and version 1 keeps answering.
  CommandResult refused = Cli(
      {"export", job, "--name", "m", "--precision", "bf16-true", "--max-mean-rel-diff", "1e-9"});
  EXPECT_NE(refused.exit_code, 0) << refused.out;
  EXPECT_THAT(refused.err,
              AllOf(HasSubstr("UNAVAILABLE"), HasSubstr("version 2"), HasSubstr("mean_rel_diff"),
                    HasSubstr("> max_mean_rel_diff 1e-09"), HasSubstr("version 1 keeps serving")));
  EXPECT_EQ(Answering("m"), "1");
  CommandResult models = Cli({"models"});
  ASSERT_EQ(models.exit_code, 0) << models.err;
  EXPECT_THAT(models.out, HasSubstr("m version 2: UNAVAILABLE"));
  EXPECT_THAT(models.out, HasSubstr("latest 1"));

  CommandResult v3 = Cli({"export", job, "--name", "m", "--precision", "32-true"});
  ASSERT_EQ(v3.exit_code, 0) << v3.out << v3.err;
  EXPECT_EQ(Answering("m"), "3");

  CommandResult rollback = Cli({"rollback", "m", "1"});
  ASSERT_EQ(rollback.exit_code, 0) << rollback.out << rollback.err;
  // The refused version stays listed with its reason.
  EXPECT_THAT(rollback.out, StartsWith("model m: policy specific 1; serving version 1\n"
                                       "version 2: UNAVAILABLE: "));
  EXPECT_EQ(Answering("m"), "1");
  EXPECT_THAT(Answering("m", "3"), HasSubstr("model m version 3 is not served (served: 1)"));

  // Bad input is refused and changes nothing.
  CommandResult missing = Cli({"rollback", "m", "99"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.err, AllOf(HasSubstr("NOT_FOUND"), HasSubstr("has no version 99")));
  v1::SetVersionPolicyRequest zero;
  zero.set_name("m");
  zero.mutable_version_policy()->mutable_latest()->set_num_versions(0);
  {
    auto stub = v1::ModelService::NewStub(
        grpc::CreateChannel(daemon_->grpc_address(), grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    v1::SetVersionPolicyResponse response;
    const grpc::Status s = stub->SetVersionPolicy(&context, zero, &response);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("version_policy.latest.num_versions"));
  }
  EXPECT_THAT(Served("m"), ElementsAre(1));

  // The rollback is the repository's: a restart on the same state still
  // serves version 1.
  StartServing({});
  ASSERT_FALSE(HasFatalFailure());
  EXPECT_THAT(Served("m"), ElementsAre(1));
  EXPECT_EQ(Answering("m"), "1");

  // `all` serves every version that passes: 1 and 3 by number, 3 by default.
  CommandResult all = Cli({"version-policy", "m", "all"});
  ASSERT_EQ(all.exit_code, 0) << all.out << all.err;
  EXPECT_THAT(all.out, HasSubstr("model m: policy all; serving versions 1, 3\n"));
  EXPECT_THAT(all.out, HasSubstr("version 2: UNAVAILABLE"));
  EXPECT_EQ(Answering("m", "1"), "1");
  EXPECT_EQ(Answering("m", "3"), "3");
  EXPECT_EQ(Answering("m"), "3");
  EXPECT_THAT(Answering("m", "2"), HasSubstr("is not served (served: 1, 3)"));

  // Statistics per version.
  CommandResult stats = Cli({"stats", "m", "--version", "1"});
  EXPECT_EQ(stats.exit_code, 0) << stats.err;
  EXPECT_THAT(stats.out, HasSubstr("MODEL  VERSION  OK  FAILED"));
  EXPECT_THAT(stats.out, HasSubstr("\nm            1   2"));  // after the restart: 2 answered

  // A policy that selects only the refused version changes nothing.
  CommandResult only_refused = Cli({"version-policy", "m", "specific", "2"});
  EXPECT_EQ(only_refused.exit_code, 1);
  EXPECT_THAT(only_refused.err, HasSubstr("promotion policy"));
  EXPECT_THAT(Served("m"), ElementsAre(1, 3));
  EXPECT_TRUE(FindModel("m").version_policy().has_all());
}

}  // namespace
}  // namespace mantissa
