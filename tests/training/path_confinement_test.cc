// Dataset and TorchScript paths in job specs: only under the configured
// roots, with a missing file and a forbidden one refused alike.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_replace.h"
#include "server/training/job_spec_resolver.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace mantissa {
namespace {

using ::testing::_;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::StatusIs;

class PathConfinementTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = std::filesystem::canonical(allowed_.path()).string();
    context_.caps = DeviceCapabilities::Probe(torch::kCPU);
    context_.data_roots = FileRoots({allowed_.path()}, "mantissad --data_root");
    context_.torchscript_roots = FileRoots({allowed_.path()}, "mantissad --torchscript_root");
    Write(allowed_.File("iris.csv"), "a,b,label\n1,2,0\n3,4,1\n");
    Write(outside_.File("secret.csv"), "password,hunter2,label\n1,2,0\n");
  }

  static void Write(const std::string& path, const std::string& text) {
    std::ofstream(path, std::ios::binary) << text;
  }

  static v1::JobSpec Csv(const std::string& path) {
    v1::JobSpec spec;
    spec.set_model("mlp");
    spec.set_dataset("csv");
    (*spec.mutable_dataset_options())["path"] = path;
    spec.set_steps(1);
    return spec;
  }

  absl::StatusOr<ResolvedJob> Resolve(const v1::JobSpec& spec) const {
    return ResolveJobSpec(spec, context_);
  }

  testing::TempDir allowed_;
  testing::TempDir outside_;
  std::string root_;  // allowed_, canonical
  ResolveContext context_;
};

TEST_F(PathConfinementTest, AFileUnderARootIsAllowedAndMadeCanonical) {
  auto prepared = Resolve(Csv(allowed_.path() + "/./iris.csv"));
  ASSERT_OK(prepared);
  EXPECT_EQ(prepared->spec.dataset_options().at("path"), root_ + "/iris.csv");
  // Resolving the resolved spec changes nothing.
  auto again = Resolve(prepared->spec);
  ASSERT_OK(again);
  EXPECT_EQ(again->spec.dataset_options().at("path"), root_ + "/iris.csv");
}

TEST_F(PathConfinementTest, EtcPasswdIsRefusedWithoutItsContent) {
  auto refused = Resolve(Csv("/etc/passwd"));
  EXPECT_THAT(refused, StatusIs(absl::StatusCode::kPermissionDenied,
                                AllOf(HasSubstr("dataset_options[path]"), HasSubstr("--data_root"),
                                      Not(HasSubstr("root:x:")))));
}

TEST_F(PathConfinementTest, DotDotOutOfTheRootIsRefused) {
  const std::string outside_name = outside_.path().substr(outside_.path().rfind('/') + 1);
  const std::string escape = allowed_.path() + "/../" + outside_name + "/secret.csv";
  ASSERT_TRUE(std::filesystem::exists(escape));
  EXPECT_THAT(Resolve(Csv(escape)), StatusIs(absl::StatusCode::kPermissionDenied, _));
}

TEST_F(PathConfinementTest, SymlinksAreFollowedBeforeTheCheck) {
  ASSERT_EQ(::symlink(outside_.File("secret.csv").c_str(), allowed_.File("out.csv").c_str()), 0);
  auto out = Resolve(Csv(allowed_.File("out.csv")));
  EXPECT_THAT(out, StatusIs(absl::StatusCode::kPermissionDenied, Not(HasSubstr("hunter2"))));
  // A link that stays inside is fine, and the job reads its target.
  ASSERT_EQ(::symlink(allowed_.File("iris.csv").c_str(), allowed_.File("in.csv").c_str()), 0);
  auto in = Resolve(Csv(allowed_.File("in.csv")));
  ASSERT_OK(in);
  EXPECT_EQ(in->spec.dataset_options().at("path"), root_ + "/iris.csv");
  // A folder inside whose file links out.
  std::filesystem::create_directory(allowed_.File("corpus"));
  ASSERT_EQ(
      ::symlink(outside_.File("secret.csv").c_str(), allowed_.File("corpus/train.bin").c_str()), 0);
  v1::JobSpec tokens;
  tokens.set_model("gpt");
  tokens.set_dataset("tokens");
  (*tokens.mutable_dataset_options())["dir"] = allowed_.File("corpus");
  EXPECT_THAT(Resolve(tokens), StatusIs(absl::StatusCode::kPermissionDenied, _));
}

TEST_F(PathConfinementTest, AMissingFileReadsLikeAForbiddenOne) {
  auto missing = Resolve(Csv(allowed_.File("nope.csv")));
  auto forbidden = Resolve(Csv(outside_.File("secret.csv")));
  ASSERT_THAT(missing, StatusIs(absl::StatusCode::kPermissionDenied, _));
  ASSERT_THAT(forbidden, StatusIs(absl::StatusCode::kPermissionDenied, _));
  EXPECT_EQ(
      absl::StrReplaceAll(missing.status().message(), {{allowed_.File("nope.csv"), "P"}}),
      absl::StrReplaceAll(forbidden.status().message(), {{outside_.File("secret.csv"), "P"}}));
  // Also a missing folder outside every root.
  EXPECT_THAT(Resolve(Csv("/nonexistent/x.csv")), StatusIs(absl::StatusCode::kPermissionDenied, _));
}

TEST_F(PathConfinementTest, IdxFoldersAreConfined) {
  v1::JobSpec spec;
  spec.set_model("mlp");
  spec.set_dataset("mnist");
  (*spec.mutable_dataset_options())["dir"] = outside_.path();
  EXPECT_THAT(Resolve(spec), StatusIs(absl::StatusCode::kPermissionDenied, _));
}

// dir= would have the dataset open "/train-images-idx3-ubyte" and so on.
TEST_F(PathConfinementTest, AnEmptyIdxFolderIsRefused) {
  v1::JobSpec spec;
  spec.set_model("mlp");
  spec.set_dataset("fashion-mnist");
  (*spec.mutable_dataset_options())["dir"] = "";
  EXPECT_THAT(Resolve(spec), StatusIs(absl::StatusCode::kPermissionDenied, _));
}

TEST_F(PathConfinementTest, NoRootsRefuseEveryFile) {
  context_.data_roots = FileRoots({}, "mantissad --data_root");
  EXPECT_THAT(Resolve(Csv(allowed_.File("iris.csv"))),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("none is configured")));
}

v1::JobSpec TorchScript(const std::string& path) {
  v1::JobSpec spec;
  spec.set_model("torchscript");
  (*spec.mutable_model_options())["path"] = path;
  spec.set_dataset("synthetic");
  spec.set_steps(1);
  return spec;
}

TEST_F(PathConfinementTest, TorchScriptIsOffWithoutARoot) {
  Write(allowed_.File("m.pt"), "not really a module");
  context_.torchscript_roots = FileRoots();
  EXPECT_THAT(Resolve(TorchScript(allowed_.File("m.pt"))),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("--torchscript_root"), HasSubstr("arbitrary code"))));
}

TEST_F(PathConfinementTest, TorchScriptOnlyFromUnderItsRoot) {
  Write(allowed_.File("m.pt"), "not really a module");
  Write(outside_.File("m.pt"), "not really a module");
  EXPECT_THAT(Resolve(TorchScript(outside_.File("m.pt"))),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       AllOf(HasSubstr("model_options[path]"), HasSubstr("--torchscript_root"))));
  EXPECT_THAT(Resolve(TorchScript(allowed_.File("missing.pt"))),
              StatusIs(absl::StatusCode::kPermissionDenied, _));
  auto inside = Resolve(TorchScript(allowed_.File("m.pt")));  // Validate does not load it
  ASSERT_OK(inside);
  EXPECT_EQ(inside->spec.model_options().at("path"), root_ + "/m.pt");
}

}  // namespace
}  // namespace mantissa
