#include "server/service/authorizer.h"

#include <grpcpp/security/auth_context.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace mantissa {
namespace {

constexpr char kCertPrefix[] = "cert:";
constexpr Role kAllRoles[] = {Role::kAdmin, Role::kTrain, Role::kServe, Role::kRead,
                              Role::kMetrics};

std::optional<Role> ParseRole(absl::string_view name) {
  for (Role role : kAllRoles) {
    if (RoleName(role) == name) return role;
  }
  return std::nullopt;
}

bool ParseDigest(absl::string_view hex, std::array<unsigned char, 32>* digest) {
  if (hex.size() != 64) return false;
  for (size_t i = 0; i < 32; ++i) {
    int byte = 0;
    for (char c : hex.substr(2 * i, 2)) {
      byte <<= 4;
      if (c >= '0' && c <= '9') {
        byte |= c - '0';
      } else if (c >= 'a' && c <= 'f') {
        byte |= c - 'a' + 10;
      } else if (c >= 'A' && c <= 'F') {
        byte |= c - 'A' + 10;
      } else {
        return false;
      }
    }
    (*digest)[i] = static_cast<unsigned char>(byte);
  }
  return true;
}

// The roles that grant `permission`, for PERMISSION_DENIED messages.
std::string RolesAllowing(Permission permission) {
  std::vector<std::string> names;
  for (Role role : kAllRoles) {
    if (RoleAllows(role, permission)) names.emplace_back(RoleName(role));
  }
  return absl::StrJoin(names, " or ");
}

}  // namespace

absl::string_view RoleName(Role role) {
  switch (role) {
    case Role::kAdmin:
      return "admin";
    case Role::kTrain:
      return "train";
    case Role::kServe:
      return "serve";
    case Role::kRead:
      return "read";
    case Role::kMetrics:
      return "metrics";
  }
  return "unknown";
}

bool RoleAllows(Role role, Permission permission) {
  if (permission == Permission::kProbe || role == Role::kAdmin) return true;
  switch (role) {
    case Role::kTrain:
      return permission == Permission::kSubmitJobs || permission == Permission::kReadJobs ||
             permission == Permission::kCapabilities || permission == Permission::kExportJobs;
    case Role::kServe:
      return permission == Permission::kInfer || permission == Permission::kReadModels;
    case Role::kRead:
      return permission == Permission::kReadJobs || permission == Permission::kReadModels ||
             permission == Permission::kCapabilities;
    case Role::kMetrics:
      return permission == Permission::kMetrics;
    case Role::kAdmin:
      return true;
  }
  return false;
}

absl::StatusOr<std::unique_ptr<Authorizer>> Authorizer::Create(Options options) {
  if (options.tokens_file.empty()) return std::unique_ptr<Authorizer>(new Authorizer(false));
  std::ifstream in(options.tokens_file);
  if (!in) {
    return absl::FailedPreconditionError(
        absl::StrCat("--auth_tokens_file: cannot read ", options.tokens_file));
  }
  std::stringstream text;
  text << in.rdbuf();
  return FromText(text.str(), absl::StrCat("--auth_tokens_file ", options.tokens_file));
}

absl::StatusOr<std::unique_ptr<Authorizer>> Authorizer::FromText(absl::string_view text,
                                                                 absl::string_view source) {
  std::unique_ptr<Authorizer> authorizer(new Authorizer(true));
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    if (size_t hash = line.find('#'); hash != absl::string_view::npos) line = line.substr(0, hash);
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t\r"), absl::SkipEmpty());
    if (fields.empty()) continue;
    auto error = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, " line ", line_number, ": ", why,
          "; expected '<sha256 hex of token> <principal> <role>' or 'cert:<subject CN> "
          "<principal> <role>' with role admin, train, serve, read or metrics"));
    };
    if (fields.size() != 3) return error(absl::StrCat(fields.size(), " fields instead of 3"));
    Entry entry;
    entry.principal = std::string(fields[1]);
    std::optional<Role> role = ParseRole(fields[2]);
    if (!role.has_value()) return error(absl::StrCat("unknown role '", fields[2], "'"));
    entry.role = *role;
    if (absl::StartsWith(fields[0], kCertPrefix)) {
      entry.cert_common_name = std::string(fields[0].substr(sizeof(kCertPrefix) - 1));
      if (entry.cert_common_name.empty()) return error("empty certificate CN after 'cert:'");
      authorizer->certificates_.push_back(std::move(entry));
    } else {
      if (!ParseDigest(fields[0], &entry.digest)) {
        return error("the first field is not 64 hex digits (a SHA-256 digest)");
      }
      authorizer->tokens_.push_back(std::move(entry));
    }
  }
  if (authorizer->tokens_.empty() && authorizer->certificates_.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": no entries; an empty file would lock everyone out"));
  }
  return authorizer;
}

const Authorizer* Authorizer::AllowAll() {
  static const Authorizer* const allow_all = new Authorizer(false);
  return allow_all;
}

absl::StatusOr<Caller> Authorizer::Authorize(const grpc::ServerContextBase& context,
                                             Permission permission, absl::string_view call) const {
  if (!enabled_ || permission == Permission::kProbe) return Caller();
  std::optional<absl::string_view> authorization;
  const auto& metadata = context.client_metadata();
  if (auto it = metadata.find("authorization"); it != metadata.end()) {
    authorization = absl::string_view(it->second.data(), it->second.size());
  }
  std::vector<std::string> common_names;
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  // Only a certificate the TLS handshake verified names a principal.
  if (auth != nullptr && auth->IsPeerAuthenticated()) {
    for (const grpc::string_ref& cn : auth->FindPropertyValues("x509_common_name")) {
      common_names.emplace_back(cn.data(), cn.size());
    }
  }
  return Check(authorization, common_names, permission, call);
}

absl::StatusOr<Caller> Authorizer::Check(std::optional<absl::string_view> authorization,
                                         const std::vector<std::string>& cert_common_names,
                                         Permission permission, absl::string_view call) const {
  if (!enabled_ || permission == Permission::kProbe) return Caller();
  absl::StatusOr<Caller> caller = Identify(authorization, cert_common_names);
  if (!caller.ok()) return caller.status();
  if (!RoleAllows(caller->role, permission)) {
    return absl::PermissionDeniedError(absl::StrCat(
        "principal '", caller->principal, "' has role ", RoleName(caller->role),
        ", which may not call ", call, "; that needs role ", RolesAllowing(permission)));
  }
  return caller;
}

absl::StatusOr<Caller> Authorizer::Identify(
    std::optional<absl::string_view> authorization,
    const std::vector<std::string>& cert_common_names) const {
  if (authorization.has_value()) {
    absl::string_view value = absl::StripAsciiWhitespace(*authorization);
    constexpr absl::string_view kScheme = "bearer ";
    if (value.size() <= kScheme.size() ||
        !absl::EqualsIgnoreCase(value.substr(0, kScheme.size()), kScheme)) {
      return absl::UnauthenticatedError(
          "authorization: expected 'Bearer <token>'; the daemon accepts bearer tokens only");
    }
    const absl::string_view token = absl::StripAsciiWhitespace(value.substr(kScheme.size()));
    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256(reinterpret_cast<const unsigned char*>(token.data()), token.size(), digest);
    // Every entry is compared, matching or not, so timing tells nothing.
    const Entry* match = nullptr;
    for (const Entry& entry : tokens_) {
      if (CRYPTO_memcmp(entry.digest.data(), digest, sizeof(digest)) == 0) match = &entry;
    }
    if (match == nullptr) {
      return absl::UnauthenticatedError("authorization: the bearer token is not valid");
    }
    return Caller{.principal = match->principal, .role = match->role};
  }
  for (const std::string& cn : cert_common_names) {
    for (const Entry& entry : certificates_) {
      if (entry.cert_common_name == cn)
        return Caller{.principal = entry.principal, .role = entry.role};
    }
  }
  if (!cert_common_names.empty()) {
    return absl::UnauthenticatedError(
        absl::StrCat("authorization: the client certificate (CN ", cert_common_names.front(),
                     ") maps to no principal, and no bearer token was sent"));
  }
  return absl::UnauthenticatedError(
      "authorization: a bearer token is required (metadata 'authorization: Bearer <token>')");
}

}  // namespace mantissa
