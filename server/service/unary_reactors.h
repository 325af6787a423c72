#ifndef MANTISSA_SERVER_SERVICE_UNARY_REACTORS_H_
#define MANTISSA_SERVER_SERVICE_UNARY_REACTORS_H_

#include <grpcpp/server_context.h>
#include <grpcpp/support/server_callback.h>

#include <exception>
#include <functional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/service/blocking_executor.h"
#include "server/service/grpc_status.h"

// How the serving services answer unary calls: at once on the reactor, or
// from the BlockingExecutor when the work blocks.
namespace mantissa {

inline grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* context,
                                           const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

// `work`'s status; INTERNAL naming `what` when it throws, so that every
// call gets an answer and no exception reaches a worker thread.
inline absl::Status RunCatching(absl::string_view what, const std::function<absl::Status()>& work) {
  try {
    return work();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": unexpected error: ", e.what()));
  } catch (...) {
    return absl::InternalError(absl::StrCat(what, ": unexpected error"));
  }
}

// Runs `work` on `executor` and finishes the call with its status. The
// request and response stay valid until Finish, so `work` may use them.
inline grpc::ServerUnaryReactor* FinishOnExecutor(grpc::CallbackServerContext* context,
                                                  BlockingExecutor* executor,
                                                  std::function<absl::Status()> work) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const bool scheduled = executor->Schedule([reactor, work = std::move(work)] {
    reactor->Finish(ToGrpcStatus(RunCatching("handling the request", work)));
  });
  if (!scheduled) {
    reactor->Finish(ToGrpcStatus(absl::UnavailableError("mantissad is shutting down")));
  }
  return reactor;
}

// INVALID_ARGUMENT "<field>: is required" for an empty string field.
inline absl::Status RequireField(const char* field, const std::string& value) {
  if (!value.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(field, ": is required"));
}

}  // namespace mantissa

#endif  // MANTISSA_SERVER_SERVICE_UNARY_REACTORS_H_
