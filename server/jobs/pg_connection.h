#ifndef MANTISSA_SERVER_JOBS_PG_CONNECTION_H_
#define MANTISSA_SERVER_JOBS_PG_CONNECTION_H_

#include <libpq-fe.h>

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace mantissa {

struct PgResultDeleter {
  void operator()(PGresult* result) const { PQclear(result); }
};
using PgResult = std::unique_ptr<PGresult, PgResultDeleter>;

struct PgConnDeleter {
  void operator()(PGconn* conn) const { PQfinish(conn); }
};
using PgConn = std::unique_ptr<PGconn, PgConnDeleter>;

// The parameters of one statement: text, except blobs, which travel binary
// so that a serialized message needs no escaping.
class PgParams {
 public:
  PgParams& Text(std::string value);
  PgParams& Int(int64_t value);
  PgParams& Bool(bool value);
  PgParams& Bytes(std::string value);
  PgParams& Null();

  int size() const { return static_cast<int>(values_.size()); }

 private:
  friend class PgConnection;
  std::vector<std::string> values_;
  std::vector<int> formats_;
  std::vector<bool> nulls_;
};

// Readers of a binary-format result (every result here is binary).
bool PgIsNull(const PGresult* result, int row, int col);
int64_t PgInt(const PGresult* result, int row, int col);  // int2, int4 or int8
bool PgBool(const PGresult* result, int row, int col);
std::string PgBytes(const PGresult* result, int row, int col);  // text or bytea

// The connection settings and the means to open one: `uri` goes to libpq as
// is (it reads PGPASSWORD and PGPASSFILE itself); TCP keepalives and a
// connect timeout are added unless the URI sets them, so a vanished server
// surfaces as an error instead of a hung call.
class PgConnector {
 public:
  explicit PgConnector(std::string uri);

  // UNAVAILABLE when the server cannot be reached or is starting or stopping;
  // FAILED_PRECONDITION when it refused us (authentication, no such
  // database); INVALID_ARGUMENT for a malformed URI. Messages name
  // --database with the URI redacted.
  absl::StatusOr<PgConn> Connect() const;

  // A libpq message fit for a status or a log line: on one line, with every
  // form of the URI's password replaced by "***".
  std::string Clean(const char* libpq_message) const;
  const std::string& redacted_uri() const { return redacted_uri_; }

 private:
  std::string uri_;
  std::string redacted_uri_;
  std::vector<std::string> secrets_;
};

// One connection borrowed from a PgConnectionPool: statements run on it,
// and a connection error marks it broken so that the pool drops it.
class PgConnection {
 public:
  // Runs `sql` (one statement, $1.. placeholders) with results in binary.
  // UNAVAILABLE "job store: PostgreSQL unreachable: ..." on a connection
  // error or a transient conflict (callers retry); INTERNAL otherwise.
  absl::StatusOr<PgResult> Exec(const std::string& sql, const PgParams& params = PgParams());
  // For statements whose result is not read.
  absl::Status Run(const std::string& sql, const PgParams& params = PgParams());

  bool broken() const { return broken_; }

 private:
  friend class PgConnectionPool;
  PgConnection(PgConn conn, const PgConnector* connector)
      : conn_(std::move(conn)), connector_(connector) {}

  PgConn conn_;
  const PgConnector* connector_;
  bool broken_ = false;
};

// BEGIN on construction; ROLLBACK on destruction unless committed.
class PgTransaction {
 public:
  static absl::StatusOr<std::unique_ptr<PgTransaction>> Begin(PgConnection& conn);
  ~PgTransaction();
  absl::Status Commit();

 private:
  explicit PgTransaction(PgConnection& conn) : conn_(conn) {}
  PgConnection& conn_;
  bool done_ = false;
};

// At most `size` connections, opened on demand and shared by every thread
// of the store. A broken connection is closed and replaced by a new one on a
// later borrow; while the server stays unreachable, connection attempts are
// spaced by a backoff that the whole pool shares (100 ms doubling to 5 s),
// and borrows in between fail at once with UNAVAILABLE.
class PgConnectionPool {
 public:
  class Borrowed {
   public:
    Borrowed(Borrowed&& other) noexcept : pool_(other.pool_), conn_(std::move(other.conn_)) {
      other.pool_ = nullptr;
    }
    Borrowed& operator=(Borrowed&&) = delete;
    ~Borrowed();
    PgConnection* operator->() { return conn_.get(); }
    PgConnection& operator*() { return *conn_; }

   private:
    friend class PgConnectionPool;
    Borrowed(PgConnectionPool* pool, std::unique_ptr<PgConnection> conn)
        : pool_(pool), conn_(std::move(conn)) {}
    PgConnectionPool* pool_;
    std::unique_ptr<PgConnection> conn_;
  };

  // Opens the first connection, so that a bad URI or an unreachable server
  // fails here.
  static absl::StatusOr<std::unique_ptr<PgConnectionPool>> Create(std::string uri, int size);
  ~PgConnectionPool();

  // Waits while all `size` connections are borrowed.
  absl::StatusOr<Borrowed> Borrow();

  const PgConnector& connector() const { return connector_; }

 private:
  PgConnectionPool(std::string uri, int size) : connector_(std::move(uri)), size_(size) {}
  absl::StatusOr<std::unique_ptr<PgConnection>> Open();
  void Return(std::unique_ptr<PgConnection> conn);

  const PgConnector connector_;
  const int size_;
  std::mutex mu_;
  std::condition_variable available_;
  std::vector<std::unique_ptr<PgConnection>> idle_;
  int open_ = 0;  // idle + borrowed + being opened
  absl::Duration backoff_ = absl::ZeroDuration();
  absl::Time next_attempt_ = absl::InfinitePast();
  std::string last_error_;
};

// Spaces reconnection attempts: 100 ms doubling to 5 s, reset on success.
absl::Duration NextBackoff(absl::Duration current);

}  // namespace mantissa

#endif  // MANTISSA_SERVER_JOBS_PG_CONNECTION_H_
