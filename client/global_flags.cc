#include "client/global_flags.h"

#include <cstdlib>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace mantissa::cli {
namespace {

constexpr char kDefaultServer[] = "127.0.0.1:50051";
constexpr char kServerEnv[] = "MANTISSA_SERVER";

constexpr char kTokenEnv[] = "MANTISSA_TOKEN";
constexpr char kTlsCaEnv[] = "MANTISSA_TLS_CA_FILE";
constexpr char kTlsCertEnv[] = "MANTISSA_TLS_CERT_FILE";
constexpr char kTlsKeyEnv[] = "MANTISSA_TLS_KEY_FILE";

// A flag's value, else the environment variable's, else "".
std::string FlagOrEnv(const std::optional<std::string>& flag, const char* env) {
  if (flag.has_value()) return *flag;
  const char* value = std::getenv(env);
  return value != nullptr ? value : "";
}

}  // namespace

void AddGlobalFlags(ArgParser& parser, GlobalOptions* global) {
  parser.AddString(
      "server", &global->server,
      absl::StrCat("daemon address (default ", kDefaultServer, ", or $", kServerEnv, ")"),
      "HOST:PORT");
  parser.AddString("token-file", &global->token_file,
                   absl::StrCat("send the bearer token in FILE (or the token in $", kTokenEnv, ")"),
                   "FILE");
  parser.AddString(
      "tls-ca-file", &global->tls_ca_file,
      absl::StrCat("connect over TLS, trusting these CA certificates (or $", kTlsCaEnv, ")"),
      "PEM");
  parser.AddString("tls-cert-file", &global->tls_cert_file,
                   absl::StrCat("client certificate for mTLS (or $", kTlsCertEnv, ")"), "PEM");
  parser.AddString("tls-key-file", &global->tls_key_file,
                   absl::StrCat("key of --tls-cert-file (or $", kTlsKeyEnv, ")"), "PEM");
  parser.AddBool("json", &global->json,
                 "print JSON: protobuf's mapping (watch: one event per line; infer: the "
                 "v2 REST response)");
  parser.AddBool("help", &global->help, "show help");
  parser.AddShortName('h', "help");
}

std::string ServerAddress(const GlobalOptions& global) {
  if (global.server.has_value()) return *global.server;
  const char* env = std::getenv(kServerEnv);
  if (env != nullptr && *env != '\0') return env;
  return kDefaultServer;
}

absl::StatusOr<ChannelOptions> BuildChannelOptions(const GlobalOptions& global,
                                                   const std::string& server) {
  ChannelOptions options;
  options.target = server;
  options.tls_ca_file = FlagOrEnv(global.tls_ca_file, kTlsCaEnv);
  options.tls_cert_file = FlagOrEnv(global.tls_cert_file, kTlsCertEnv);
  options.tls_key_file = FlagOrEnv(global.tls_key_file, kTlsKeyEnv);
  if (global.token_file.has_value()) {
    absl::StatusOr<std::string> token = ReadTokenFile(*global.token_file);
    if (!token.ok()) return token.status();
    options.token = *std::move(token);
  } else if (const char* token = std::getenv(kTokenEnv); token != nullptr) {
    options.token = std::string(absl::StripAsciiWhitespace(token));
  }
  return options;
}

}  // namespace mantissa::cli
