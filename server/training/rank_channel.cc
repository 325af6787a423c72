#include "server/training/rank_channel.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"

namespace mantissa {
namespace {

constexpr uint32_t kMaxFrameBytes = uint32_t{64} << 20;

// Writes all of `size` bytes, through partial writes and EINTR. A closed
// read end must not kill the process with SIGPIPE, whatever the process's
// disposition: SIGPIPE is blocked on this thread for the write, and one it
// raised is consumed before the mask is restored.
absl::Status WriteAll(int fd, const char* data, size_t size) {
  sigset_t pipe_signal, old_mask;
  sigemptyset(&pipe_signal);
  sigaddset(&pipe_signal, SIGPIPE);
  sigset_t pending;
  sigpending(&pending);
  const bool already_pending = sigismember(&pending, SIGPIPE) == 1;
  pthread_sigmask(SIG_BLOCK, &pipe_signal, &old_mask);
  int error = 0;
  while (size > 0) {
    const ssize_t n = write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      error = errno;
      break;
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  if (error == EPIPE && !already_pending) {
    const timespec zero{0, 0};
    while (sigtimedwait(&pipe_signal, nullptr, &zero) < 0 && errno == EINTR) {
    }
  }
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  if (error == EPIPE) return absl::UnavailableError("the other end of the rank channel closed");
  if (error != 0) {
    return absl::InternalError(absl::StrCat("writing to the rank channel: ", strerror(error)));
  }
  return absl::OkStatus();
}

// Reads exactly `size` bytes: the count read, short only at the end of stream.
absl::StatusOr<size_t> ReadFull(int fd, char* data, size_t size) {
  size_t done = 0;
  while (done < size) {
    const ssize_t n = read(fd, data + done, size - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(absl::StrCat("reading the rank channel: ", strerror(errno)));
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return done;
}

}  // namespace

RankChannel::~RankChannel() { Close(); }

void RankChannel::Close() {
  std::lock_guard<std::mutex> lock(write_mu_);
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

absl::Status RankChannel::Write(const google::protobuf::MessageLite& message) {
  const size_t size = message.ByteSizeLong();
  if (size > kMaxFrameBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rank message of ", size, " bytes exceeds the frame limit of ", kMaxFrameBytes));
  }
  std::string frame(4 + size, '\0');
  for (int i = 0; i < 4; ++i) frame[i] = static_cast<char>((size >> (8 * i)) & 0xff);
  if (!message.SerializeToArray(frame.data() + 4, static_cast<int>(size))) {
    return absl::InternalError("cannot serialise a rank message");
  }
  std::lock_guard<std::mutex> lock(write_mu_);
  if (fd_ < 0) return absl::UnavailableError("the rank channel is closed");
  return WriteAll(fd_, frame.data(), frame.size());
}

absl::StatusOr<bool> RankChannel::Read(google::protobuf::MessageLite& message) {
  char header[4];
  absl::StatusOr<size_t> got = ReadFull(fd_, header, sizeof(header));
  if (!got.ok()) return got.status();
  if (*got == 0) return false;
  if (*got < sizeof(header)) {
    return absl::DataLossError(
        absl::StrCat("rank channel: torn frame header (", *got, " of 4 bytes)"));
  }
  uint32_t size = 0;
  for (int i = 0; i < 4; ++i) size |= uint32_t{static_cast<unsigned char>(header[i])} << (8 * i);
  if (size > kMaxFrameBytes) {
    return absl::DataLossError(
        absl::StrCat("rank channel: frame of ", size, " bytes exceeds ", kMaxFrameBytes));
  }
  std::string body(size, '\0');
  got = ReadFull(fd_, body.data(), size);
  if (!got.ok()) return got.status();
  if (*got < size) {
    return absl::DataLossError(
        absl::StrCat("rank channel: torn frame (", *got, " of ", size, " bytes)"));
  }
  if (!message.ParseFromString(body)) {
    return absl::DataLossError(absl::StrCat("rank channel: a frame of ", size,
                                            " bytes does not parse as ", message.GetTypeName()));
  }
  return true;
}

}  // namespace mantissa
