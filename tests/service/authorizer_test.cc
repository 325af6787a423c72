#include "server/service/authorizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "server/service/transport_security.h"
#include "tests/testing/status_matchers.h"

namespace mantissa {
namespace {

using ::mantissa::testing::StatusIs;
using ::testing::HasSubstr;

TEST(AuthorizerTest, WithoutATokensFileEverythingIsAllowed) {
  auto authorizer = Authorizer::Create({});
  ASSERT_OK(authorizer);
  EXPECT_FALSE((*authorizer)->enabled());
  auto caller = (*authorizer)->Check(std::nullopt, {}, Permission::kAdminister, "X");
  ASSERT_OK(caller);
  EXPECT_TRUE(caller->SeesAllJobs());
}

TEST(AuthorizerTest, MalformedLinesNameTheirLineNumber) {
  EXPECT_THAT(Authorizer::FromText("# c\n\nabc alice train\n", "tokens"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("tokens line 3")));
  EXPECT_THAT(Authorizer::FromText(std::string(64, 'a') + " alice wizard\n", "tokens"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown role 'wizard'")));
  EXPECT_THAT(Authorizer::FromText(std::string(64, 'a') + " alice\n", "tokens"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("line 1")));
  EXPECT_THAT(Authorizer::FromText("# only comments\n", "tokens"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no entries")));
}

class AuthorizerRolesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // A token line nobody presents, and a certificate line.
    auto authorizer = Authorizer::FromText(
        "3c9ea4b2fa4ef3b6a0b0e2f6fcb1f6b9b8bd5a5e7f5b5f1c4b8c2d7b1e0c5a11 unused read\n"
        "cert:client-one ops admin  # a client certificate\n",
        "tokens");
    ASSERT_OK(authorizer);
    authorizer_ = *std::move(authorizer);
  }
  std::unique_ptr<Authorizer> authorizer_;
};

TEST_F(AuthorizerRolesTest, MissingOrWrongTokensAreUnauthenticated) {
  EXPECT_THAT(authorizer_->Check(std::nullopt, {}, Permission::kReadJobs, "GetJob"),
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("bearer token")));
  EXPECT_THAT(authorizer_->Check("Bearer nope", {}, Permission::kReadJobs, "GetJob"),
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("not valid")));
  EXPECT_THAT(authorizer_->Check("Basic abc", {}, Permission::kReadJobs, "GetJob"),
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("Bearer")));
  EXPECT_THAT(authorizer_->Check(std::nullopt, {"stranger"}, Permission::kReadJobs, "GetJob"),
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("stranger")));
}

TEST_F(AuthorizerRolesTest, ACertificateCommonNameMapsToItsPrincipal) {
  auto caller = authorizer_->Check(std::nullopt, {"client-one"}, Permission::kAdminister, "X");
  ASSERT_OK(caller);
  EXPECT_EQ(caller->principal, "ops");
  EXPECT_EQ(caller->role, Role::kAdmin);
}

TEST_F(AuthorizerRolesTest, ProbesNeedNoCredentials) {
  EXPECT_OK(authorizer_->Check(std::nullopt, {}, Permission::kProbe, "ServerLive"));
}

TEST(AuthorizerTest, ATokenIsMatchedByItsDigest) {
  // printf %s hello | sha256sum
  auto authorizer = Authorizer::FromText(
      "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824 alice train\n", "tokens");
  ASSERT_OK(authorizer);
  auto caller = (*authorizer)->Check("Bearer hello", {}, Permission::kSubmitJobs, "SubmitJob");
  ASSERT_OK(caller);
  EXPECT_EQ(caller->principal, "alice");
  EXPECT_FALSE(caller->SeesAllJobs());
  EXPECT_TRUE(caller->MaySeeJob("alice"));
  EXPECT_FALSE(caller->MaySeeJob("bob"));
  EXPECT_THAT((*authorizer)->Check("bearer hello", {}, Permission::kInfer, "ModelInfer"),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("'alice' has role train, which may not call ModelInfer")));
}

TEST(AuthorizerTest, RolesGrantWhatTheTableSays) {
  EXPECT_TRUE(RoleAllows(Role::kAdmin, Permission::kAdminister));
  EXPECT_TRUE(RoleAllows(Role::kTrain, Permission::kSubmitJobs));
  EXPECT_TRUE(RoleAllows(Role::kTrain, Permission::kExportJobs));
  EXPECT_FALSE(RoleAllows(Role::kTrain, Permission::kInfer));
  EXPECT_FALSE(RoleAllows(Role::kTrain, Permission::kAdminister));
  EXPECT_TRUE(RoleAllows(Role::kServe, Permission::kInfer));
  EXPECT_TRUE(RoleAllows(Role::kServe, Permission::kReadModels));
  EXPECT_FALSE(RoleAllows(Role::kServe, Permission::kReadJobs));
  EXPECT_TRUE(RoleAllows(Role::kRead, Permission::kReadJobs));
  EXPECT_FALSE(RoleAllows(Role::kRead, Permission::kSubmitJobs));
  EXPECT_FALSE(RoleAllows(Role::kRead, Permission::kInfer));
  EXPECT_TRUE(RoleAllows(Role::kMetrics, Permission::kMetrics));
  EXPECT_FALSE(RoleAllows(Role::kMetrics, Permission::kReadModels));
  EXPECT_FALSE(RoleAllows(Role::kServe, Permission::kMetrics));
}

TEST(TransportSecurityTest, LoopbackHosts) {
  EXPECT_TRUE(IsLoopbackHost("127.0.0.1"));
  EXPECT_TRUE(IsLoopbackHost("127.1.2.3"));
  EXPECT_TRUE(IsLoopbackHost("::1"));
  EXPECT_TRUE(IsLoopbackHost("localhost"));
  EXPECT_FALSE(IsLoopbackHost("0.0.0.0"));
  EXPECT_FALSE(IsLoopbackHost("::"));
  EXPECT_FALSE(IsLoopbackHost("10.0.0.1"));
  EXPECT_FALSE(IsLoopbackHost("example.com"));
}

TEST(TransportSecurityTest, PlaintextOnlyOnLoopbackUnlessAllowed) {
  auto plain = TransportSecurity::Create({});
  ASSERT_OK(plain);
  EXPECT_OK((*plain)->CheckBind("--grpc_address", "127.0.0.1:50051"));
  EXPECT_THAT((*plain)->CheckBind("--grpc_address", "0.0.0.0:50051"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("--allow_insecure")));
  auto insecure = TransportSecurity::Create({.allow_insecure = true});
  ASSERT_OK(insecure);
  EXPECT_OK((*insecure)->CheckBind("--grpc_address", "0.0.0.0:50051"));
}

TEST(TransportSecurityTest, FlagsMustComeInPairs) {
  EXPECT_THAT(TransportSecurity::Create({.cert_file = "/x.pem"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--tls_key_file")));
  EXPECT_THAT(TransportSecurity::Create({.client_ca_file = "/ca.pem"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--tls_client_ca_file")));
  EXPECT_THAT(TransportSecurity::Create({.cert_file = "/nonexistent.pem", .key_file = "/k"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--tls_cert_file")));
}

}  // namespace
}  // namespace mantissa
