#include "server/jobs/pg_listener.h"

#include <poll.h>
#include <unistd.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/logging.h"
#include "server/common/status_macros.h"

namespace mantissa {

std::unique_ptr<PgListener> PgListener::Start(Options options) {
  std::unique_ptr<PgListener> listener(new PgListener(std::move(options)));
  if (pipe(listener->wake_) != 0) {
    LogError("job store: cannot create the PostgreSQL listener's wake-up pipe");
    return nullptr;
  }
  absl::StatusOr<PgConn> conn = listener->Open();
  if (!conn.ok()) LogWarning(conn.status().message());
  listener->thread_ =
      std::thread(&PgListener::Loop, listener.get(), conn.ok() ? *std::move(conn) : PgConn());
  return listener;
}

PgListener::~PgListener() {
  stop_ = true;
  const char byte = 0;
  if (wake_[1] >= 0 && write(wake_[1], &byte, 1) < 0) {
    // The poll timeout stops the thread within a second anyway.
  }
  if (thread_.joinable()) thread_.join();
  for (int fd : wake_) {
    if (fd >= 0) close(fd);
  }
}

absl::StatusOr<PgConn> PgListener::Open() {
  ASSIGN_OR_RETURN(PgConn conn, options_.connector->Connect());
  std::vector<std::string> statements;
  for (const std::string& channel : options_.channels) {
    statements.push_back(absl::StrCat("LISTEN ", channel));
  }
  PgResult result(PQexec(conn.get(), absl::StrJoin(statements, "; ").c_str()));
  if (PQresultStatus(result.get()) != PGRES_COMMAND_OK) {
    return absl::UnavailableError(
        absl::StrCat("job store: PostgreSQL LISTEN failed: ",
                     options_.connector->Clean(PQerrorMessage(conn.get()))));
  }
  return conn;
}

void PgListener::Loop(PgConn conn) {
  absl::Duration backoff = absl::ZeroDuration();
  while (!stop_) {
    if (conn == nullptr) {
      backoff = NextBackoff(backoff);
      if (!WaitOrStop(-1, backoff)) return;
      absl::StatusOr<PgConn> reopened = Open();
      if (!reopened.ok()) continue;
      conn = *std::move(reopened);
      backoff = absl::ZeroDuration();
      LogInfo("job store: PostgreSQL notifications resumed");
      options_.on_reconnect();
      continue;
    }
    if (!WaitOrStop(PQsocket(conn.get()), absl::Seconds(1))) return;
    if (!Drain(conn.get())) {
      LogWarning(absl::StrCat("job store: PostgreSQL notification connection lost (",
                              options_.connector->Clean(PQerrorMessage(conn.get())),
                              "); reconnecting"));
      conn.reset();
    }
  }
}

bool PgListener::Drain(PGconn* conn) {
  // libpq's socket is non-blocking: this reads only what has arrived.
  if (PQconsumeInput(conn) == 0) return false;
  while (PGnotify* notify = PQnotifies(conn)) {
    const std::string channel = notify->relname;
    const std::string payload = notify->extra;
    PQfreemem(notify);
    options_.on_notify(channel, payload);
  }
  return PQstatus(conn) == CONNECTION_OK;
}

bool PgListener::WaitOrStop(int fd, absl::Duration timeout) {
  pollfd fds[2] = {{wake_[0], POLLIN, 0}, {fd, POLLIN, 0}};
  poll(fds, fd >= 0 ? 2 : 1, static_cast<int>(absl::ToInt64Milliseconds(timeout)));
  return !stop_;
}

}  // namespace mantissa
