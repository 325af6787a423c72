#ifndef MANTISSA_SERVER_SERVICE_AUTHORIZER_H_
#define MANTISSA_SERVER_SERVICE_AUTHORIZER_H_

#include <grpcpp/server_context.h>

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mantissa {

// What a principal may do; a token's or certificate's line grants one.
enum class Role { kAdmin, kTrain, kServe, kRead, kMetrics };

// What a call needs. Each handler asks for exactly one.
enum class Permission {
  kProbe,         // ServerLive, ServerReady: open, like grpc.health.v1
  kSubmitJobs,    // SubmitJob, CancelJob, DeleteJob (train: its own jobs)
  kReadJobs,      // GetJob, ListJobs, WatchJob (train: its own jobs)
  kCapabilities,  // GetCapabilities
  kExportJobs,    // ExportModel (train: its own jobs)
  kInfer,         // ModelInfer
  kReadModels,    // ListModels, ServerMetadata, ModelReady, ModelMetadata, RepositoryIndex,
                  // ModelStatistics (and their REST routes)
  kAdminister,    // RegisterModel, DeleteModelVersion, RepositoryModelLoad/Unload,
                  // SetVersionPolicy, RollbackModel
  kMetrics,       // GET /metrics
};

absl::string_view RoleName(Role role);

// Who made a call. Without a tokens file every caller is an anonymous admin.
struct Caller {
  std::string principal;  // "" when authentication is off
  Role role = Role::kAdmin;

  // train principals see only the jobs they submitted; everyone else sees all.
  bool SeesAllJobs() const { return role != Role::kTrain; }
  bool MaySeeJob(absl::string_view job_principal) const {
    return SeesAllJobs() || job_principal == principal;
  }
};

// Authenticates callers against --auth_tokens_file and checks their role.
// Each line: `<sha256 hex of token> <principal> <role>` or
// `cert:<client certificate subject CN> <principal> <role>`; `#` starts a
// comment. Tokens are compared by digest, in constant time, against every
// entry. Immutable after Create, so thread-safe.
class Authorizer {
 public:
  struct Options {
    std::string tokens_file;  // "" = authentication off (every call allowed)
  };

  static absl::StatusOr<std::unique_ptr<Authorizer>> Create(Options options);
  // Parses the text of a tokens file; `source` names it in errors.
  static absl::StatusOr<std::unique_ptr<Authorizer>> FromText(absl::string_view text,
                                                              absl::string_view source);
  // An authorizer that allows everything: the daemon without a tokens file.
  static const Authorizer* AllowAll();

  bool enabled() const { return enabled_; }

  // The caller of a gRPC call: the bearer token in `authorization` metadata,
  // else a verified client certificate's CN. UNAUTHENTICATED without valid
  // credentials; PERMISSION_DENIED naming the role and `call` when the role
  // lacks `permission`.
  absl::StatusOr<Caller> Authorize(const grpc::ServerContextBase& context, Permission permission,
                                   absl::string_view call) const;

  // The same check for any transport: `authorization` is the header's value
  // (nullopt when absent), `cert_common_names` the verified peer's CNs.
  absl::StatusOr<Caller> Check(std::optional<absl::string_view> authorization,
                               const std::vector<std::string>& cert_common_names,
                               Permission permission, absl::string_view call) const;

 private:
  struct Entry {
    std::array<unsigned char, 32> digest{};  // token entries
    std::string cert_common_name;            // certificate entries
    std::string principal;
    Role role = Role::kRead;
  };

  explicit Authorizer(bool enabled) : enabled_(enabled) {}
  absl::StatusOr<Caller> Identify(std::optional<absl::string_view> authorization,
                                  const std::vector<std::string>& cert_common_names) const;

  const bool enabled_;
  std::vector<Entry> tokens_;
  std::vector<Entry> certificates_;
};

// Whether `role` grants `permission` (train's limit to its own jobs aside).
bool RoleAllows(Role role, Permission permission);

}  // namespace mantissa

#endif  // MANTISSA_SERVER_SERVICE_AUTHORIZER_H_
