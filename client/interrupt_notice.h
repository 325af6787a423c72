#ifndef MANTISSA_CLIENT_INTERRUPT_NOTICE_H_
#define MANTISSA_CLIENT_INTERRUPT_NOTICE_H_

#include "client/cli_command.h"

namespace mantissa::cli {

// Makes Ctrl-C exit 130 saying that only the waiting stopped, since the jobs
// run on in the daemon. `clear_line`: wipe the live progress line rather
// than move past it. Does nothing for Waiting::kNothing.
void NoticeInterrupts(Waiting waiting, bool clear_line);

}  // namespace mantissa::cli

#endif  // MANTISSA_CLIENT_INTERRUPT_NOTICE_H_
