#ifndef MANTISSA_SERVER_SERVICE_GRPC_STATUS_H_
#define MANTISSA_SERVER_SERVICE_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace mantissa {

// The one conversion from absl::Status to the wire. The canonical codes are
// numerically identical in both libraries.
inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

}  // namespace mantissa

#endif  // MANTISSA_SERVER_SERVICE_GRPC_STATUS_H_
