#ifndef MANTISSA_TESTS_CLIENT_CLI_BINARY_H_
#define MANTISSA_TESTS_CLIENT_CLI_BINARY_H_

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"

extern char** environ;

namespace mantissa::cli {

// What a run of the `mantissa` binary printed and returned.
struct CliResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

namespace internal {

inline int TempFile() {
  char path[] = "/tmp/mantissa_cli_test_XXXXXX";
  const int fd = mkstemp(path);
  if (fd >= 0) unlink(path);
  return fd;
}

inline std::string ReadAll(int fd) {
  std::string text;
  char buffer[4096];
  lseek(fd, 0, SEEK_SET);
  for (ssize_t n; (n = read(fd, buffer, sizeof(buffer))) > 0;) text.append(buffer, n);
  close(fd);
  return text;
}

}  // namespace internal

// Runs the `mantissa` binary (MANTISSA_CLI_BIN) with `args` and this
// process's environment.
inline CliResult RunCliBinary(std::vector<std::string> args) {
  args.insert(args.begin(), MANTISSA_CLI_BIN);
  CliResult result;
  const int out_fd = internal::TempFile();
  const int err_fd = internal::TempFile();
  if (out_fd < 0 || err_fd < 0) {
    ADD_FAILURE() << "cannot create temporary files";
    return result;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out_fd, STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err_fd, STDERR_FILENO);
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int spawned = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  int status = 0;
  if (spawned != 0) {
    ADD_FAILURE() << "cannot run " << argv[0] << ": " << strerror(spawned);
  } else if (waitpid(pid, &status, 0) == pid && WIFEXITED(status)) {
    result.exit_code = WEXITSTATUS(status);
  }
  result.out = internal::ReadAll(out_fd);
  result.err = internal::ReadAll(err_fd);
  return result;
}

}  // namespace mantissa::cli

#endif  // MANTISSA_TESTS_CLIENT_CLI_BINARY_H_
