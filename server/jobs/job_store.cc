#include "server/jobs/job_store.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "server/common/status_macros.h"
#include "server/jobs/postgres_job_store.h"
#include "server/jobs/sqlite_job_store.h"

namespace mantissa {
namespace {

constexpr absl::string_view kSqlitePrefix = "sqlite:";

bool IsPostgresUri(absl::string_view database) {
  return absl::StartsWith(database, "postgresql://") || absl::StartsWith(database, "postgres://");
}

// Replaces the value of every "password=" parameter (URI query or
// keyword/value form) by "***".
std::string RedactPasswordParameters(std::string s) {
  const std::string kKey = "password=";
  size_t from = 0;
  while (true) {
    const size_t key = s.find(kKey, from);
    if (key == std::string::npos) return s;
    const size_t value = key + kKey.size();
    const bool starts_parameter =
        key == 0 || s[key - 1] == '?' || s[key - 1] == '&' || s[key - 1] == ' ';
    if (!starts_parameter) {
      from = value;
      continue;
    }
    size_t end = s.find_first_of("& ", value);
    if (end == std::string::npos) end = s.size();
    s.replace(value, end - value, "***");
    from = value + 3;
  }
}

// The '@' that ends the user info of a URI whose authority begins at
// `start`, or npos: the last one before the query, so that a password with
// an unescaped '@' or '/' is hidden whole; else, for a password with an
// unescaped '?', the last one before the path.
size_t EndOfUserInfo(const std::string& uri, size_t start) {
  for (const char end : {'?', '/'}) {
    const size_t at = uri.rfind('@', uri.find(end, start));
    if (at != std::string::npos && at >= start) return at;
  }
  return std::string::npos;
}

}  // namespace

absl::StatusOr<std::unique_ptr<JobStore>> OpenJobStore(const JobStoreOptions& options) {
  std::string database = options.database;
  if (database.empty()) {
    database = absl::StrCat(kSqlitePrefix, options.state_dir.empty() ? "" : options.state_dir + "/",
                            "jobs.db");
  }
  absl::string_view path = database;
  if (absl::ConsumePrefix(&path, kSqlitePrefix)) {
    if (path.empty()) {
      return absl::InvalidArgumentError(
          "--database: sqlite: needs a file path, e.g. sqlite:/var/lib/mantissa/jobs.db");
    }
    SqliteJobStore::Options sqlite;
    sqlite.path = std::string(path);
    ASSIGN_OR_RETURN(std::unique_ptr<SqliteJobStore> store, SqliteJobStore::Create(sqlite));
    return std::unique_ptr<JobStore>(std::move(store));
  }
  if (IsPostgresUri(database)) {
    PostgresJobStore::Options postgres;
    postgres.uri = database;
    ASSIGN_OR_RETURN(std::unique_ptr<PostgresJobStore> store, PostgresJobStore::Create(postgres));
    return std::unique_ptr<JobStore>(std::move(store));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--database: expected sqlite:PATH or postgresql://..., got '",
                   RedactDatabase(database), "'"));
}

std::string RedactDatabase(const std::string& database) {
  std::string redacted = database;
  const size_t scheme_end = redacted.find("://");
  if (scheme_end != std::string::npos) {
    const size_t start = scheme_end + 3;
    const size_t at = EndOfUserInfo(redacted, start);
    const size_t colon = redacted.find(':', start);
    if (at != std::string::npos && colon < at) redacted.replace(colon + 1, at - colon - 1, "***");
  }
  return RedactPasswordParameters(std::move(redacted));
}

}  // namespace mantissa
