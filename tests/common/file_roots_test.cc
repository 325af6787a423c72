#include "server/common/file_roots.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace mantissa {
namespace {

using ::testing::HasSubstr;
using testing::StatusIs;

TEST(FileRootsTest, APrefixOfANameIsNotAFolder) {
  testing::TempDir dir;
  std::filesystem::create_directories(dir.File("data"));
  std::filesystem::create_directories(dir.File("data-private"));
  std::ofstream(dir.File("data/a.csv")) << "x";
  std::ofstream(dir.File("data-private/b.csv")) << "x";
  const FileRoots roots({dir.File("data")}, "--data_root");
  EXPECT_OK(roots.Resolve("path", dir.File("data/a.csv")));
  EXPECT_OK(roots.Resolve("path", dir.File("data")));  // the root itself
  EXPECT_THAT(roots.Resolve("path", dir.File("data-private/b.csv")),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("--data_root")));
}

TEST(FileRootsTest, ARootReachedThroughASymlinkCounts) {
  testing::TempDir dir;
  std::filesystem::create_directories(dir.File("real"));
  std::ofstream(dir.File("real/a.csv")) << "x";
  ASSERT_EQ(::symlink(dir.File("real").c_str(), dir.File("alias").c_str()), 0);
  const FileRoots roots({dir.File("alias")}, "--data_root");
  auto resolved = roots.Resolve("path", dir.File("alias/a.csv"));
  ASSERT_OK(resolved);
  EXPECT_EQ(*resolved, std::filesystem::canonical(dir.File("real/a.csv")).string());
}

TEST(FileRootsTest, NoRootsOrAnEmptyPathRefuse) {
  EXPECT_THAT(FileRoots().Resolve("path", "/etc/hostname"),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("none is configured")));
  const FileRoots roots({"/"}, "--data_root");
  EXPECT_OK(roots.Resolve("path", "/etc/hostname"));
  EXPECT_THAT(roots.Resolve("path", ""),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("path")));
}

}  // namespace
}  // namespace mantissa
