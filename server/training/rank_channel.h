#ifndef MANTISSA_SERVER_TRAINING_RANK_CHANNEL_H_
#define MANTISSA_SERVER_TRAINING_RANK_CHANNEL_H_

#include <mutex>

#include "absl/status/statusor.h"
#include "google/protobuf/message_lite.h"

namespace mantissa {

// Protobuf messages over a pipe between the daemon and a rank process, each
// framed by its length (4 bytes, little endian; at most 64 MiB). Writes are
// serialised by a mutex (several threads of a rank may report); Read is
// called from one thread.
class RankChannel {
 public:
  // Takes ownership of `fd`.
  explicit RankChannel(int fd) : fd_(fd) {}
  ~RankChannel();
  RankChannel(const RankChannel&) = delete;
  RankChannel& operator=(const RankChannel&) = delete;

  // UNAVAILABLE when the other end closed (EPIPE).
  absl::Status Write(const google::protobuf::MessageLite& message);
  // The next message: true, or false at a clean end of stream. DATA_LOSS for
  // a torn or oversized frame or one that does not parse.
  absl::StatusOr<bool> Read(google::protobuf::MessageLite& message);
  // Closes the fd (a blocked Read on the other end then sees the end).
  void Close();
  int fd() const { return fd_; }

 private:
  std::mutex write_mu_;
  int fd_;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_TRAINING_RANK_CHANNEL_H_
