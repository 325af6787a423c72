// Every way a submitted spec can be refused, in-process through
// ResolveJobSpec with the test daemon's context: the status code SubmitJob
// answers with and the words its message must name. A few of these also go
// through the real daemon (tests/integration/training_service_test.cc), which
// checks that a refusal stores nothing and the daemon keeps serving.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "server/training/job_spec_resolver.h"
#include "tests/testing/bad_spec_cases.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/daemon_resolve_context.h"

namespace mantissa {
namespace {

using ::testing::HasSubstr;
using testing::SyntheticMlpSpec;

class SpecValidationTest : public ::testing::TestWithParam<testing::BadSpecCase> {};

TEST_P(SpecValidationTest, IsRejectedWithCodeAndMessage) {
  v1::JobSpec spec = SyntheticMlpSpec(10);
  ASSERT_TRUE(ResolveJobSpec(spec, testing::DaemonResolveContext()).ok());
  GetParam().mutate(spec);
  const auto resolved = ResolveJobSpec(spec, testing::DaemonResolveContext());
  ASSERT_FALSE(resolved.ok());
  EXPECT_EQ(resolved.status().code(), GetParam().code) << resolved.status();
  for (const std::string& part : GetParam().message_parts) {
    EXPECT_THAT(std::string(resolved.status().message()), HasSubstr(part));
  }
}

INSTANTIATE_TEST_SUITE_P(AllBadInputs, SpecValidationTest,
                         ::testing::ValuesIn(testing::BadSpecCases()),
                         [](const ::testing::TestParamInfo<testing::BadSpecCase>& info) {
                           return info.param.name;
                         });

}  // namespace
}  // namespace mantissa
