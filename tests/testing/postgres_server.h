#ifndef MANTISSA_TESTS_TESTING_POSTGRES_SERVER_H_
#define MANTISSA_TESTS_TESTING_POSTGRES_SERVER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tests/testing/temp_dir.h"

namespace mantissa::testing {

// A throwaway PostgreSQL 15 server (Debian's binaries) in a fresh temp dir,
// reachable only through a unix socket in that dir, trust authentication for
// the role `postgres`. As root it runs as the `postgres` user (the server
// refuses root). Stopped and removed on destruction.
class PostgresServer {
 public:
  struct Options {
    // Off by default: tests need no durability and run faster without it.
    bool fsync = false;
  };

  // NOT_FOUND when the server binaries are not installed (callers skip).
  static absl::StatusOr<std::unique_ptr<PostgresServer>> Start(Options options);
  static absl::StatusOr<std::unique_ptr<PostgresServer>> Start() { return Start(Options{}); }

  ~PostgresServer();
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  // A libpq URI for database `db` over the socket.
  std::string uri(const std::string& db = "postgres") const;
  const std::string& socket_dir() const { return dir_.path(); }
  int port() const { return port_; }

  // Creates an empty database `name` (a fresh one per test keeps tests
  // independent of each other).
  absl::Status CreateDatabase(const std::string& name);
  // Runs `sql` in database `db` through psql.
  absl::Status Execute(const std::string& db, const std::string& sql);

  // pg_ctl restart -m fast: drops every client connection.
  absl::Status Restart();
  // pg_ctl stop -m fast.
  absl::Status Stop();

 private:
  PostgresServer() = default;
  absl::Status Init(const Options& options);
  absl::Status PgCtl(const std::vector<std::string>& args);
  // `argv` run as the server's user.
  std::vector<std::string> AsServerUser(std::vector<std::string> argv) const;

  TempDir dir_;
  std::string data_dir_;
  std::string log_path_;
  int port_ = 5432;
  bool as_postgres_user_ = false;
  bool running_ = false;
};

}  // namespace mantissa::testing

#endif  // MANTISSA_TESTS_TESTING_POSTGRES_SERVER_H_
