#include "client/interrupt_notice.h"

#include <signal.h>
#include <unistd.h>

namespace mantissa::cli {
namespace {

volatile sig_atomic_t g_clear_line_on_interrupt = 0;
volatile sig_atomic_t g_waiting_for_many_jobs = 0;

void OnInterrupt(int) {
  // The terminal has echoed "^C" after the output; either wipe it together
  // with the progress line or move past it.
  static constexpr char kClear[] = "\r\x1b[K";
  static constexpr char kNewline[] = "\n";
  static constexpr char kMessage[] = "mantissa: stopped watching; the job keeps running\n";
  static constexpr char kManyMessage[] = "mantissa: stopped waiting; the jobs keep running\n";
  if (g_clear_line_on_interrupt) {
    (void)!write(STDOUT_FILENO, kClear, sizeof(kClear) - 1);
  } else {
    (void)!write(STDERR_FILENO, kNewline, sizeof(kNewline) - 1);
  }
  if (g_waiting_for_many_jobs) {
    (void)!write(STDERR_FILENO, kManyMessage, sizeof(kManyMessage) - 1);
  } else {
    (void)!write(STDERR_FILENO, kMessage, sizeof(kMessage) - 1);
  }
  _exit(130);
}

}  // namespace

void NoticeInterrupts(Waiting waiting, bool clear_line) {
  if (waiting == Waiting::kNothing) return;
  g_clear_line_on_interrupt = waiting == Waiting::kOneJob && clear_line;
  g_waiting_for_many_jobs = waiting == Waiting::kManyJobs;
  signal(SIGINT, OnInterrupt);
}

}  // namespace mantissa::cli
