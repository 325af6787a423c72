#ifndef MANTISSA_TESTS_TESTING_SUBPROCESS_H_
#define MANTISSA_TESTS_TESTING_SUBPROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

namespace mantissa::testing {

struct CommandResult {
  int exit_code = -1;  // -1 if it did not exit normally
  std::string out;
  std::string err;
};

// Runs `argv` to completion (stdin from /dev/null) and captures its output.
CommandResult RunCommand(const std::vector<std::string>& argv);

// Runs the real `mantissa` CLI with `args`.
CommandResult RunCli(const std::vector<std::string>& args);

// Starts `argv` in the background with stdout+stderr appended to `log_path`.
pid_t Spawn(const std::vector<std::string>& argv, const std::string& log_path);

// Waits for a spawned process; its exit code, or -1 if a signal ended it.
int WaitForExit(pid_t pid);

}  // namespace mantissa::testing

#endif  // MANTISSA_TESTS_TESTING_SUBPROCESS_H_
