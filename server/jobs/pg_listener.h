#ifndef MANTISSA_SERVER_JOBS_PG_LISTENER_H_
#define MANTISSA_SERVER_JOBS_PG_LISTENER_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "server/jobs/pg_connection.h"

namespace mantissa {

// Follows PostgreSQL notifications on a connection of its own, on a thread
// of its own. When the connection breaks it reconnects with backoff (100 ms
// doubling to 5 s) and then calls `on_reconnect`, since whatever was
// notified meanwhile is lost. The callbacks run on the listener's thread.
class PgListener {
 public:
  using OnNotify = std::function<void(const std::string& channel, const std::string& payload)>;
  struct Options {
    const PgConnector* connector = nullptr;  // not owned; outlives the listener
    std::vector<std::string> channels;
    OnNotify on_notify;
    std::function<void()> on_reconnect;
  };

  // Connects and LISTENs before it returns, so that no notification sent
  // after it is missed (if the server is unreachable now, the thread keeps
  // trying).
  static std::unique_ptr<PgListener> Start(Options options);
  // Stops and joins the thread promptly (a pipe wakes its poll()).
  ~PgListener();

 private:
  explicit PgListener(Options options) : options_(std::move(options)) {}
  absl::StatusOr<PgConn> Open();
  void Loop(PgConn conn);
  // Hands every pending notification to on_notify; false when the
  // connection broke.
  bool Drain(PGconn* conn);
  // Waits up to `timeout` for `fd` (none when negative) to be readable;
  // false when the listener is stopping.
  bool WaitOrStop(int fd, absl::Duration timeout);

  const Options options_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  int wake_[2] = {-1, -1};
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_JOBS_PG_LISTENER_H_
