#ifndef MANTISSA_SERVER_JOBS_JOB_STORE_H_
#define MANTISSA_SERVER_JOBS_JOB_STORE_H_

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "mantissa/v1/training.pb.h"

struct sqlite3;

namespace mantissa {

// Durable job records in one SQLite database (WAL mode). Each job is stored
// as its serialized v1::Job next to an indexed state column. Thread-safe.
class JobStore {
 public:
  struct Options {
    std::string path;  // database file; its directory must exist
  };

  static absl::StatusOr<std::unique_ptr<JobStore>> Create(Options options);
  ~JobStore();

  // Inserts or replaces the job with this id.
  absl::Status Put(const v1::Job& job);
  // NOT_FOUND if there is no such job.
  absl::StatusOr<v1::Job> Get(const std::string& id);
  // Removes the job's record; NOT_FOUND if there is no such job.
  absl::Status Delete(const std::string& id);
  // Newest first; `states` empty = all; `limit` 0 = no limit.
  absl::StatusOr<std::vector<v1::Job>> List(const std::vector<v1::JobState>& states = {},
                                            int limit = 0);

 private:
  explicit JobStore(sqlite3* db) : db_(db) {}
  absl::Status Exec(const char* sql);

  std::mutex mu_;
  sqlite3* db_;  // guarded by mu_
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_JOBS_JOB_STORE_H_
