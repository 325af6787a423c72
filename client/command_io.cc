#include "client/command_io.h"

#include "client/json_format.h"
#include "client/training_client.h"

namespace mantissa::cli {

int ReportError(const absl::Status& status, const CommandIo& io) {
  *io.err << "mantissa: " << DescribeError(status) << '\n' << std::flush;
  return kExitFailure;
}

void PrintJson(const google::protobuf::Message& message, bool pretty, const CommandIo& io) {
  *io.out << ToJson(message, pretty) << '\n' << std::flush;
}

}  // namespace mantissa::cli
