#include "server/jobs/pg_connection.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "server/jobs/job_store.h"

namespace mantissa {
namespace {

// libpq's messages span lines and carry tabs; a status message is one line.
std::string OneLine(const char* message) {
  std::string out;
  bool space = false;
  for (const char* p = message; p != nullptr && *p != '\0'; ++p) {
    if (std::isspace(static_cast<unsigned char>(*p))) {
      space = !out.empty();
      continue;
    }
    if (space) out.push_back(' ');
    space = false;
    out.push_back(*p);
  }
  return out;
}

// The password as it may appear in libpq's messages: parsed, and raw from a
// URI's user info or a password= parameter (a malformed URI's message may
// quote the raw token).
std::vector<std::string> SecretsOf(const std::string& uri) {
  std::vector<std::string> secrets;
  char* error = nullptr;
  if (PQconninfoOption* options = PQconninfoParse(uri.c_str(), &error)) {
    for (PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
      if (std::strcmp(o->keyword, "password") == 0 && o->val != nullptr && *o->val != '\0') {
        secrets.push_back(o->val);
      }
    }
    PQconninfoFree(options);
  }
  PQfreemem(error);
  const size_t scheme = uri.find("://");
  const size_t at = uri.rfind('@');
  if (scheme != std::string::npos && at != std::string::npos && at > scheme) {
    const std::string user_info = uri.substr(scheme + 3, at - scheme - 3);
    const size_t colon = user_info.find(':');
    if (colon != std::string::npos && colon + 1 < user_info.size()) {
      secrets.push_back(user_info.substr(colon + 1));
    }
  }
  for (size_t pos = uri.find("password="); pos != std::string::npos;
       pos = uri.find("password=", pos + 1)) {
    const size_t start = pos + std::strlen("password=");
    const size_t end = uri.find_first_of("& ", start);
    std::string value = uri.substr(start, end == std::string::npos ? end : end - start);
    if (!value.empty()) secrets.push_back(std::move(value));
  }
  // Longest first, so that a secret containing another is replaced whole.
  std::sort(secrets.begin(), secrets.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  return secrets;
}

// The server answered but turned us away for good (authentication, no such
// database or role), unlike a server that is down, starting or full.
bool RefusedForGood(const std::string& message) {
  return absl::StrContains(message, "FATAL:") &&
         !absl::StrContains(message, "the database system is") &&
         !absl::StrContains(message, "connection slots") &&
         !absl::StrContains(message, "too many clients");
}

// SQLSTATEs after which the statement may succeed when retried: connection
// exceptions (08), the server shutting down or starting (57P0x), too many
// connections, serialization failures and deadlocks.
bool Transient(const char* sqlstate) {
  if (sqlstate == nullptr) return true;  // no server answer at all
  const std::string s = sqlstate;
  return absl::StartsWith(s, "08") || absl::StartsWith(s, "57P0") || s == "53300" || s == "40001" ||
         s == "40P01";
}

}  // namespace

PgParams& PgParams::Text(std::string value) {
  values_.push_back(std::move(value));
  formats_.push_back(0);
  nulls_.push_back(false);
  return *this;
}

PgParams& PgParams::Int(int64_t value) { return Text(std::to_string(value)); }

PgParams& PgParams::Bool(bool value) { return Text(value ? "t" : "f"); }

PgParams& PgParams::Bytes(std::string value) {
  Text(std::move(value));
  formats_.back() = 1;
  return *this;
}

PgParams& PgParams::Null() {
  Text("");
  nulls_.back() = true;
  return *this;
}

bool PgIsNull(const PGresult* result, int row, int col) {
  return PQgetisnull(result, row, col) != 0;
}

int64_t PgInt(const PGresult* result, int row, int col) {
  if (PgIsNull(result, row, col)) return 0;
  const auto* bytes = reinterpret_cast<const unsigned char*>(PQgetvalue(result, row, col));
  const int length = PQgetlength(result, row, col);
  uint64_t value = 0;
  for (int i = 0; i < length; ++i) value = (value << 8) | bytes[i];
  // Sign-extend the network-order int2/int4/int8.
  if (length < 8 && length > 0 && (bytes[0] & 0x80) != 0) value |= ~uint64_t{0} << (8 * length);
  return static_cast<int64_t>(value);
}

bool PgBool(const PGresult* result, int row, int col) {
  return !PgIsNull(result, row, col) && PQgetlength(result, row, col) == 1 &&
         PQgetvalue(result, row, col)[0] != 0;
}

std::string PgBytes(const PGresult* result, int row, int col) {
  return std::string(PQgetvalue(result, row, col), PQgetlength(result, row, col));
}

PgConnector::PgConnector(std::string uri)
    : uri_(std::move(uri)), redacted_uri_(RedactDatabase(uri_)), secrets_(SecretsOf(uri_)) {}

std::string PgConnector::Clean(const char* libpq_message) const {
  std::string message = OneLine(libpq_message);
  for (const std::string& secret : secrets_) {
    message = absl::StrReplaceAll(message, {{secret, "***"}});
  }
  return message;
}

absl::StatusOr<PgConn> PgConnector::Connect() const {
  char* parse_error = nullptr;
  PQconninfoOption* parsed = PQconninfoParse(uri_.c_str(), &parse_error);
  if (parsed == nullptr) {
    std::string message = Clean(parse_error ? parse_error : "out of memory");
    PQfreemem(parse_error);
    return absl::InvalidArgumentError(
        absl::StrCat("--database: ", redacted_uri_, " is not a valid PostgreSQL URI: ", message));
  }
  PQconninfoFree(parsed);
  // Defaults first: the URI's own settings, expanded from dbname, win. A
  // worker frozen inside a transaction (SIGSTOP, a stalled VM) would hold
  // its row locks, and the other workers' expiry sweeps skip locked rows:
  // the server ends such a session after 5 s idle in a transaction.
  const char* keywords[] = {"connect_timeout",           "keepalives_idle",  "keepalives_interval",
                            "keepalives_count",          "tcp_user_timeout", "options",
                            "fallback_application_name", "dbname",           nullptr};
  const char* values[] = {"10",        "10",         "5",
                          "3",         "30000",      "-c idle_in_transaction_session_timeout=5000",
                          "mantissad", uri_.c_str(), nullptr};
  PgConn conn(PQconnectdbParams(keywords, values, /*expand_dbname=*/1));
  if (conn != nullptr && PQstatus(conn.get()) == CONNECTION_OK) {
    // The server's notices ("relation ... already exists, skipping") are
    // not errors; libpq would print them to stderr.
    PQsetNoticeProcessor(
        conn.get(), [](void*, const char*) {}, nullptr);
    return conn;
  }
  const std::string message = Clean(conn == nullptr ? "out of memory" : PQerrorMessage(conn.get()));
  const std::string text =
      absl::StrCat("--database: cannot connect to PostgreSQL at ", redacted_uri_, ": ", message);
  if (RefusedForGood(message)) return absl::FailedPreconditionError(text);
  return absl::UnavailableError(text);
}

absl::StatusOr<PgResult> PgConnection::Exec(const std::string& sql, const PgParams& params) {
  const int n = params.size();
  std::vector<const char*> values(n);
  std::vector<int> lengths(n);
  for (int i = 0; i < n; ++i) {
    values[i] = params.nulls_[i] ? nullptr : params.values_[i].data();
    lengths[i] = static_cast<int>(params.values_[i].size());
  }
  PgResult result(PQexecParams(conn_.get(), sql.c_str(), n, nullptr, values.data(), lengths.data(),
                               params.formats_.data(), /*resultFormat=*/1));
  const ExecStatusType status = result ? PQresultStatus(result.get()) : PGRES_FATAL_ERROR;
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return result;

  const char* sqlstate = result ? PQresultErrorField(result.get(), PG_DIAG_SQLSTATE) : nullptr;
  const std::string message =
      connector_->Clean(result ? PQresultErrorMessage(result.get()) : PQerrorMessage(conn_.get()));
  if (PQstatus(conn_.get()) != CONNECTION_OK) broken_ = true;
  if (broken_ || Transient(sqlstate)) {
    return absl::UnavailableError(absl::StrCat("job store: PostgreSQL unreachable: ", message));
  }
  return absl::InternalError(absl::StrCat("job store: PostgreSQL: ", message));
}

absl::Status PgConnection::Run(const std::string& sql, const PgParams& params) {
  return Exec(sql, params).status();
}

absl::StatusOr<std::unique_ptr<PgTransaction>> PgTransaction::Begin(PgConnection& conn) {
  if (absl::Status s = conn.Run("BEGIN"); !s.ok()) return s;
  return std::unique_ptr<PgTransaction>(new PgTransaction(conn));
}

PgTransaction::~PgTransaction() {
  if (!done_ && !conn_.broken()) conn_.Run("ROLLBACK").IgnoreError();
}

absl::Status PgTransaction::Commit() {
  done_ = true;
  return conn_.Run("COMMIT");
}

absl::Duration NextBackoff(absl::Duration current) {
  if (current <= absl::ZeroDuration()) return absl::Milliseconds(100);
  return std::min(current * 2, absl::Seconds(5));
}

absl::StatusOr<std::unique_ptr<PgConnectionPool>> PgConnectionPool::Create(std::string uri,
                                                                           int size) {
  std::unique_ptr<PgConnectionPool> pool(new PgConnectionPool(std::move(uri), std::max(1, size)));
  absl::StatusOr<PgConn> conn = pool->connector_.Connect();
  if (!conn.ok()) return conn.status();
  pool->idle_.push_back(
      std::unique_ptr<PgConnection>(new PgConnection(*std::move(conn), &pool->connector_)));
  pool->open_ = 1;
  return pool;
}

PgConnectionPool::~PgConnectionPool() = default;

absl::StatusOr<PgConnectionPool::Borrowed> PgConnectionPool::Borrow() {
  std::unique_lock<std::mutex> lock(mu_);
  available_.wait(lock, [this] { return !idle_.empty() || open_ < size_; });
  if (!idle_.empty()) {
    std::unique_ptr<PgConnection> conn = std::move(idle_.back());
    idle_.pop_back();
    return Borrowed(this, std::move(conn));
  }
  const absl::Time now = absl::Now();
  if (now < next_attempt_) {
    return absl::UnavailableError(absl::StrCat(
        "job store: PostgreSQL unreachable: ", last_error_, " (next attempt in ",
        absl::FormatDuration(absl::Ceil(next_attempt_ - now, absl::Milliseconds(1))), ")"));
  }
  ++open_;
  lock.unlock();
  absl::StatusOr<std::unique_ptr<PgConnection>> conn = Open();
  lock.lock();
  if (!conn.ok()) {
    --open_;
    available_.notify_one();
    if (absl::Now() >= next_attempt_) {
      backoff_ = NextBackoff(backoff_);
      next_attempt_ = absl::Now() + backoff_;
    }
    last_error_ = std::string(conn.status().message());
    return absl::UnavailableError(absl::StrCat("job store: PostgreSQL unreachable: ", last_error_));
  }
  backoff_ = absl::ZeroDuration();
  next_attempt_ = absl::InfinitePast();
  return Borrowed(this, *std::move(conn));
}

absl::StatusOr<std::unique_ptr<PgConnection>> PgConnectionPool::Open() {
  absl::StatusOr<PgConn> conn = connector_.Connect();
  if (!conn.ok()) return conn.status();
  return std::unique_ptr<PgConnection>(new PgConnection(*std::move(conn), &connector_));
}

void PgConnectionPool::Return(std::unique_ptr<PgConnection> conn) {
  std::vector<std::unique_ptr<PgConnection>> closing;
  {
    std::lock_guard<std::mutex> lock(mu_);
    PGconn* c = conn->conn_.get();
    const bool reusable =
        !conn->broken_ && PQstatus(c) == CONNECTION_OK && PQtransactionStatus(c) == PQTRANS_IDLE;
    if (reusable) {
      idle_.push_back(std::move(conn));
    } else {
      --open_;
      closing.push_back(std::move(conn));
      // The idle ones most likely lost the same server: drop them rather
      // than fail one call for each.
      if (closing.back()->broken_) {
        open_ -= static_cast<int>(idle_.size());
        for (auto& idle : idle_) closing.push_back(std::move(idle));
        idle_.clear();
      }
    }
  }
  available_.notify_all();
}

PgConnectionPool::Borrowed::~Borrowed() {
  if (pool_ != nullptr && conn_ != nullptr) pool_->Return(std::move(conn_));
}

}  // namespace mantissa
