// What a rank process reads at start: RankChannel's length-framed protobuf
// messages over a real pipe, as between the daemon and its rank processes,
// and its place in the job from torchrun's environment (RankEnvironment).

#include "server/training/rank_channel.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <string>
#include <thread>

#include "mantissa/internal/rank.pb.h"
#include "server/training/rank_options.h"
#include "tests/testing/status_matchers.h"

namespace mantissa {
namespace {

using internal::RankReport;
using ::testing::HasSubstr;

// Read's answer as text: "message", "end" or the status.
std::string ReadOne(RankChannel& channel, RankReport& got) {
  absl::StatusOr<bool> read = channel.Read(got);
  if (!read.ok()) return read.status().ToString();
  return *read ? "message" : "end";
}

struct Pipe {
  Pipe() {
    int fds[2];
    EXPECT_EQ(pipe2(fds, O_CLOEXEC), 0);
    read_end = fds[0];
    write_end = fds[1];
  }
  int read_end = -1;
  int write_end = -1;
};

TEST(RankChannelTest, MessagesArriveWholeAndInOrderThenTheEnd) {
  Pipe p;
  RankChannel reader(p.read_end);
  // Bigger than a pipe's buffer (64 KiB): written in parts while read.
  const std::string big(300'000, 'x');
  std::thread writer([&] {
    RankChannel channel(p.write_end);
    RankReport update;
    update.mutable_update()->set_message(big);
    EXPECT_OK(channel.Write(update));
    RankReport steps;
    steps.mutable_steps()->set_step(14);
    steps.mutable_steps()->add_seconds(0.25);
    EXPECT_OK(channel.Write(steps));
    EXPECT_OK(channel.Write(RankReport()));  // an empty message is a frame too
  });
  RankReport got;
  ASSERT_EQ(ReadOne(reader, got), "message");
  EXPECT_EQ(got.update().message(), big);
  ASSERT_EQ(ReadOne(reader, got), "message");
  EXPECT_EQ(got.steps().step(), 14);
  EXPECT_EQ(got.steps().seconds(0), 0.25);
  ASSERT_EQ(ReadOne(reader, got), "message");
  EXPECT_EQ(got.report_case(), RankReport::REPORT_NOT_SET);
  writer.join();
  // The writer's channel closed its end: a clean end of stream.
  ASSERT_EQ(ReadOne(reader, got), "end");
}

TEST(RankChannelTest, ATornFrameIsDataLoss) {
  Pipe p;
  RankChannel reader(p.read_end);
  // A header announcing 100 bytes, then 3 of them and the end.
  const char torn[] = {100, 0, 0, 0, 'a', 'b', 'c'};
  ASSERT_EQ(write(p.write_end, torn, sizeof(torn)), static_cast<ssize_t>(sizeof(torn)));
  close(p.write_end);
  RankReport got;
  absl::StatusOr<bool> read = reader.Read(got);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(read.status().message()), HasSubstr("torn frame (3 of 100 bytes)"));
}

TEST(RankChannelTest, ATornHeaderAnOversizedFrameAndGarbageAreDataLoss) {
  for (const std::string& bytes : {std::string("\x05\x00", 2), std::string("\xff\xff\xff\xff", 4),
                                   std::string("\x02\x00\x00\x00\xff\xff", 6)}) {
    Pipe p;
    RankChannel reader(p.read_end);
    ASSERT_EQ(write(p.write_end, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
    close(p.write_end);
    RankReport got;
    EXPECT_EQ(reader.Read(got).status().code(), absl::StatusCode::kDataLoss) << bytes.size();
  }
}

TEST(RankChannelTest, WritingToAClosedReaderIsUnavailableNotSigpipe) {
  Pipe p;
  close(p.read_end);
  RankChannel channel(p.write_end);
  RankReport report;
  report.set_warning("nobody listens");
  // SIGPIPE's default would end this test process here.
  EXPECT_EQ(channel.Write(report).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(channel.Write(report).code(), absl::StatusCode::kUnavailable);
  channel.Close();
  EXPECT_EQ(channel.Write(report).code(), absl::StatusCode::kUnavailable);
}

// Sets torchrun's variables for one case, and unsets them after it.
class RankEnvironmentTest : public ::testing::Test {
 protected:
  void TearDown() override {
    for (const char* name : {"RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}) {
      unsetenv(name);
    }
  }
  static void Set(const char* rank, const char* local, const char* world, const char* addr,
                  const char* port) {
    setenv("RANK", rank, 1);
    setenv("LOCAL_RANK", local, 1);
    setenv("WORLD_SIZE", world, 1);
    setenv("MASTER_ADDR", addr, 1);
    setenv("MASTER_PORT", port, 1);
  }
};

TEST_F(RankEnvironmentTest, ReadsTorchrunsVariables) {
  Set("3", "1", "4", "10.0.0.7", "29500");
  absl::StatusOr<RankEnvironment> env = RankEnvironment::FromEnvironment();
  ASSERT_OK(env);
  EXPECT_EQ(env->rank, 3);
  EXPECT_EQ(env->local_rank, 1);
  EXPECT_EQ(env->world_size, 4);
  EXPECT_EQ(env->master_addr, "10.0.0.7");
  EXPECT_EQ(env->master_port, 29500);
}

TEST_F(RankEnvironmentTest, RankZeroMayAskForAFreePort) {
  Set("0", "0", "2", "127.0.0.1", "0");
  ASSERT_OK(RankEnvironment::FromEnvironment());
}

TEST_F(RankEnvironmentTest, NamesTheVariableThatIsMissingOrWrong) {
  const struct {
    const char* rank;
    const char* world;
    const char* port;
    const char* names;
  } cases[] = {{"2", "2", "29500", "RANK: must be < WORLD_SIZE (2), got 2"},
               {"x", "2", "29500", "RANK: must be an integer >= 0, got 'x'"},
               {"0", "0", "29500", "WORLD_SIZE: must be an integer >= 1, got '0'"},
               {"1", "2", "0", "MASTER_PORT: rank 1 needs rank 0's store port, got 0"},
               {"0", "2", "70000", "MASTER_PORT: must be <= 65535, got 70000"}};
  for (const auto& c : cases) {
    Set(c.rank, "0", c.world, "127.0.0.1", c.port);
    absl::StatusOr<RankEnvironment> env = RankEnvironment::FromEnvironment();
    EXPECT_EQ(env.status().code(), absl::StatusCode::kInvalidArgument) << c.names;
    EXPECT_THAT(std::string(env.status().message()), HasSubstr(c.names));
  }
  Set("0", "0", "2", "127.0.0.1", "0");
  unsetenv("MASTER_ADDR");
  EXPECT_THAT(std::string(RankEnvironment::FromEnvironment().status().message()),
              HasSubstr("MASTER_ADDR: not set"));
}

}  // namespace
}  // namespace mantissa
