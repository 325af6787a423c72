#include "server/common/host_port.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "tests/testing/status_matchers.h"

namespace mantissa {
namespace {

using ::mantissa::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

TEST(HostPortTest, ParsesIpv4WithPortZero) {
  absl::StatusOr<HostPort> hp = ParseHostPort("--listen", "127.0.0.1:0");
  ASSERT_OK(hp);
  EXPECT_EQ(hp->host, "127.0.0.1");
  EXPECT_EQ(hp->port, 0);
}

TEST(HostPortTest, ParsesHostName) {
  absl::StatusOr<HostPort> hp = ParseHostPort("--listen", "localhost:9464");
  ASSERT_OK(hp);
  EXPECT_EQ(hp->host, "localhost");
  EXPECT_EQ(hp->port, 9464);
}

TEST(HostPortTest, ParsesBracketedIpv6AndStripsBrackets) {
  absl::StatusOr<HostPort> hp = ParseHostPort("--listen", "[::1]:50051");
  ASSERT_OK(hp);
  EXPECT_EQ(hp->host, "::1");
  EXPECT_EQ(hp->port, 50051);
}

TEST(HostPortTest, ParsesWildcardIpv6) {
  absl::StatusOr<HostPort> hp = ParseHostPort("--listen", "[::]:65535");
  ASSERT_OK(hp);
  EXPECT_EQ(hp->host, "::");
  EXPECT_EQ(hp->port, 65535);
}

TEST(HostPortTest, MissingPortIsInvalid) {
  EXPECT_THAT(ParseHostPort("--metrics_address", "localhost"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("--metrics_address"), HasSubstr("'localhost'"),
                             HasSubstr("no port"))));
}

TEST(HostPortTest, EmptyPortIsBad) {
  EXPECT_THAT(ParseHostPort("--listen", "127.0.0.1:"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bad port")));
}

TEST(HostPortTest, NonNumericPortIsBad) {
  EXPECT_THAT(
      ParseHostPort("--listen", "127.0.0.1:http"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr("--listen"), HasSubstr("'127.0.0.1:http'"), HasSubstr("bad port"))));
}

TEST(HostPortTest, OutOfRangePortsAreBad) {
  for (const std::string address : {"127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:99999999999"}) {
    EXPECT_THAT(ParseHostPort("--listen", address),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bad port")))
        << address;
  }
}

TEST(HostPortTest, EmptyHostIsInvalid) {
  EXPECT_THAT(ParseHostPort("--listen", ":50051"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("--listen"), HasSubstr("no host"))));
}

TEST(HostPortTest, EmptyBracketsAreAnEmptyHost) {
  EXPECT_THAT(ParseHostPort("--listen", "[]:50051"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no host")));
}

TEST(HostPortTest, ErrorShowsExpectedFormat) {
  EXPECT_THAT(ParseHostPort("--listen", ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("HOST:PORT")));
}

}  // namespace
}  // namespace mantissa

namespace mantissa {
namespace {

TEST(HostPortTest, UnbalancedBracketsAreInvalid) {
  EXPECT_THAT(ParseHostPort("--grpc_address", "[::1:50051"),
              testing::StatusIs(absl::StatusCode::kInvalidArgument,
                                ::testing::HasSubstr("unbalanced brackets")));
  EXPECT_THAT(ParseHostPort("--grpc_address", "::1]:50051"),
              testing::StatusIs(absl::StatusCode::kInvalidArgument,
                                ::testing::HasSubstr("unbalanced brackets")));
}

}  // namespace
}  // namespace mantissa
