#include "server/metrics/device_memory.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/testing/status_matchers.h"

namespace mantissa {
namespace {

using ::mantissa::testing::StatusIs;
using ::testing::HasSubstr;

TEST(DeviceMemoryTest, StatmResidentIsTheSecondFieldInPages) {
  absl::StatusOr<int64_t> bytes = ParseStatmResidentBytes("61440 2048 512 100 0 9000 0\n", 4096);
  ASSERT_OK(bytes);
  EXPECT_EQ(*bytes, 2048 * 4096);
}

TEST(DeviceMemoryTest, MalformedStatmIsInvalid) {
  EXPECT_THAT(ParseStatmResidentBytes("61440\n", 4096),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("/proc/self/statm")));
  EXPECT_THAT(ParseStatmResidentBytes("1 x 3", 4096),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("/proc/self/statm")));
}

TEST(DeviceMemoryTest, MeminfoTotalIsInKibibytes) {
  absl::StatusOr<int64_t> bytes = ParseMeminfoTotalBytes(
      "MemFree:         1000 kB\n"
      "MemTotal:       16384 kB\n"
      "MemAvailable:    2000 kB\n");
  ASSERT_OK(bytes);
  EXPECT_EQ(*bytes, int64_t{16384} * 1024);
}

TEST(DeviceMemoryTest, MeminfoWithoutTotalIsInvalid) {
  EXPECT_THAT(ParseMeminfoTotalBytes("MemFree: 1000 kB\n"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no MemTotal")));
  EXPECT_THAT(ParseMeminfoTotalBytes("MemTotal: lots\n"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("MemTotal")));
}

TEST(DeviceMemoryTest, ThisProcessUsesSomeOfTheMachine) {
  absl::StatusOr<DeviceMemory> memory = ReadProcessMemory();
  ASSERT_OK(memory);
  // A running test binary holds at least a megabyte, and less than the machine.
  EXPECT_GT(memory->used_bytes, 1 << 20);
  EXPECT_LT(memory->used_bytes, memory->total_bytes);
}

}  // namespace
}  // namespace mantissa
