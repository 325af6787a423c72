#include "tests/testing/postgres_server.h"

#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "tests/testing/subprocess.h"

namespace mantissa::testing {
namespace {

constexpr char kBinDir[] = "/usr/lib/postgresql/15/bin";
constexpr char kRunuser[] = "/usr/sbin/runuser";
constexpr char kPsql[] = "/usr/bin/psql";

std::string Bin(const std::string& name) { return absl::StrCat(kBinDir, "/", name); }

std::string Tail(const std::string& path, size_t max_chars = 2000) {
  std::ifstream in(path);
  std::stringstream content;
  content << in.rdbuf();
  const std::string text = content.str();
  return text.size() > max_chars ? text.substr(text.size() - max_chars) : text;
}

absl::Status CommandStatus(const std::string& what, const CommandResult& result) {
  if (result.exit_code == 0) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat(what, " exited ", result.exit_code, ": ", result.err, result.out));
}

}  // namespace

absl::StatusOr<std::unique_ptr<PostgresServer>> PostgresServer::Start(Options options) {
  if (access(Bin("initdb").c_str(), X_OK) != 0 || access(Bin("pg_ctl").c_str(), X_OK) != 0 ||
      access(kPsql, X_OK) != 0) {
    return absl::NotFoundError(absl::StrCat("PostgreSQL 15 server binaries not found in ", kBinDir,
                                            " (Debian package postgresql-15)"));
  }
  std::unique_ptr<PostgresServer> server(new PostgresServer());
  if (absl::Status status = server->Init(options); !status.ok()) return status;
  return server;
}

absl::Status PostgresServer::Init(const Options& options) {
  data_dir_ = dir_.File("data");
  log_path_ = dir_.File("server.log");
  // The server refuses to run as root: hand the dir to `postgres`.
  if (geteuid() == 0) {
    const passwd* pw = getpwnam("postgres");
    if (pw == nullptr || access(kRunuser, X_OK) != 0) {
      return absl::NotFoundError("running as root needs the `postgres` user and runuser");
    }
    if (chown(dir_.path().c_str(), pw->pw_uid, pw->pw_gid) != 0) {
      return absl::InternalError(absl::StrCat("chown ", dir_.path(), " failed"));
    }
    as_postgres_user_ = true;
  }
  CommandResult init =
      RunCommand(AsServerUser({Bin("initdb"), "-D", data_dir_, "-U", "postgres", "-A", "trust",
                               "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"}));
  if (absl::Status status = CommandStatus("initdb", init); !status.ok()) return status;
  {
    std::ofstream conf(data_dir_ + "/postgresql.conf", std::ios::app);
    conf << "listen_addresses = ''\n"
         << "unix_socket_directories = '" << dir_.path() << "'\n"
         << "port = " << port_ << "\n"
         << "fsync = " << (options.fsync ? "on" : "off") << "\n"
         << "synchronous_commit = " << (options.fsync ? "on" : "off") << "\n"
         << "full_page_writes = " << (options.fsync ? "on" : "off") << "\n";
    if (!conf) return absl::InternalError("cannot append to postgresql.conf");
  }
  if (absl::Status status = PgCtl({"-l", log_path_, "start"}); !status.ok()) return status;
  running_ = true;
  return absl::OkStatus();
}

PostgresServer::~PostgresServer() {
  if (running_) PgCtl({"-m", "immediate", "stop"}).IgnoreError();
}

std::vector<std::string> PostgresServer::AsServerUser(std::vector<std::string> argv) const {
  if (!as_postgres_user_) return argv;
  std::vector<std::string> wrapped = {kRunuser, "-u", "postgres", "--"};
  wrapped.insert(wrapped.end(), std::make_move_iterator(argv.begin()),
                 std::make_move_iterator(argv.end()));
  return wrapped;
}

absl::Status PostgresServer::PgCtl(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {Bin("pg_ctl"), "-D", data_dir_, "-w", "-t", "60"};
  argv.insert(argv.end(), args.begin(), args.end());
  // Not RunCommand: the server pg_ctl starts would inherit its output pipes
  // and keep them open, so reading them would never end.
  const std::string pg_ctl_log = dir_.File("pg_ctl.log");
  const int exit_code = WaitForExit(Spawn(AsServerUser(argv), pg_ctl_log));
  if (exit_code == 0) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("pg_ctl ", args.back(), " exited ", exit_code, ": ",
                                          Tail(pg_ctl_log), "\nserver log:\n", Tail(log_path_)));
}

std::string PostgresServer::uri(const std::string& db) const {
  return absl::StrCat("postgresql://postgres@/", db, "?host=", dir_.path(), "&port=", port_);
}

absl::Status PostgresServer::Execute(const std::string& db, const std::string& sql) {
  return CommandStatus(
      absl::StrCat("psql -c ", sql),
      RunCommand({kPsql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", dir_.path(), "-p",
                  std::to_string(port_), "-U", "postgres", "-d", db, "-c", sql}));
}

absl::Status PostgresServer::CreateDatabase(const std::string& name) {
  return Execute("postgres", absl::StrCat("CREATE DATABASE \"", name, "\""));
}

absl::Status PostgresServer::Restart() {
  // Also starts a stopped server.
  absl::Status status = PgCtl({"-m", "fast", "-l", log_path_, "restart"});
  if (status.ok()) running_ = true;
  return status;
}

absl::Status PostgresServer::Stop() {
  if (!running_) return absl::OkStatus();
  absl::Status status = PgCtl({"-m", "fast", "stop"});
  if (status.ok()) running_ = false;
  return status;
}

}  // namespace mantissa::testing
