#include "client/training_client.h"

#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

namespace mantissa::cli {
namespace {

// Marks statuses whose message is already a full sentence about the
// connection, so DescribeError does not prefix a code the user did not get
// from the daemon.
constexpr char kConnectionPayload[] = "mantissa.cli/connection";

}  // namespace

TrainingClient::TrainingClient(std::shared_ptr<grpc::ChannelInterface> channel, std::string target)
    : channel_(std::move(channel)),
      stub_(v1::TrainingService::NewStub(channel_)),
      target_(std::move(target)) {}

std::unique_ptr<TrainingClient> TrainingClient::Connect(const std::string& target) {
  return std::make_unique<TrainingClient>(
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials()), target);
}

template <typename Request, typename Response, typename Method>
absl::StatusOr<Response> TrainingClient::Unary(Method method, const Request& request) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(deadline_));
  Response response;
  const grpc::Status status = (stub_.get()->*method)(&context, request, &response);
  if (!status.ok()) return ToStatus(status, /*had_events=*/false);
  return response;
}

absl::StatusOr<v1::SubmitJobResponse> TrainingClient::SubmitJob(
    const v1::SubmitJobRequest& request) {
  return Unary<v1::SubmitJobRequest, v1::SubmitJobResponse>(&v1::TrainingService::Stub::SubmitJob,
                                                            request);
}

absl::StatusOr<v1::GetJobResponse> TrainingClient::GetJob(const v1::GetJobRequest& request) {
  return Unary<v1::GetJobRequest, v1::GetJobResponse>(&v1::TrainingService::Stub::GetJob, request);
}

absl::StatusOr<v1::ListJobsResponse> TrainingClient::ListJobs(const v1::ListJobsRequest& request) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(deadline_));
  v1::ListJobsResponse response;
  const grpc::Status status = stub_->ListJobs(&context, request, &response);
  if (!status.ok()) return ToStatus(status, /*had_events=*/false);
  // The daemon's "mantissa-jobs-left-out" and "mantissa-jobs-skipped"
  // trailers (see training_service.h).
  const auto& trailers = context.GetServerTrailingMetadata();
  const auto count = [&trailers](const char* key) {
    int64_t value = 0;
    if (auto it = trailers.find(key); it != trailers.end()) {
      (void)absl::SimpleAtoi(absl::string_view(it->second.data(), it->second.size()), &value);
    }
    return value;
  };
  list_jobs_left_out_ = count("mantissa-jobs-left-out");
  list_jobs_skipped_ = count("mantissa-jobs-skipped");
  return response;
}

absl::StatusOr<v1::CancelJobResponse> TrainingClient::CancelJob(
    const v1::CancelJobRequest& request) {
  return Unary<v1::CancelJobRequest, v1::CancelJobResponse>(&v1::TrainingService::Stub::CancelJob,
                                                            request);
}

absl::StatusOr<v1::DeleteJobResponse> TrainingClient::DeleteJob(
    const v1::DeleteJobRequest& request) {
  return Unary<v1::DeleteJobRequest, v1::DeleteJobResponse>(&v1::TrainingService::Stub::DeleteJob,
                                                            request);
}

absl::StatusOr<v1::GetCapabilitiesResponse> TrainingClient::GetCapabilities(
    const v1::GetCapabilitiesRequest& request) {
  return Unary<v1::GetCapabilitiesRequest, v1::GetCapabilitiesResponse>(
      &v1::TrainingService::Stub::GetCapabilities, request);
}

absl::Status TrainingClient::WatchJob(const v1::WatchJobRequest& request,
                                      const std::function<void(const v1::JobEvent&)>& on_event) {
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReader<v1::JobEvent>> reader = stub_->WatchJob(&context, request);
  v1::JobEvent event;
  bool had_events = false;
  while (reader->Read(&event)) {
    had_events = true;
    on_event(event);
  }
  return ToStatus(reader->Finish(), had_events);
}

absl::Status TrainingClient::ToStatus(const grpc::Status& status, bool had_events) const {
  return CallStatus(status, *channel_, target_, had_events);
}

absl::Status CallStatus(const grpc::Status& status, grpc::ChannelInterface& channel,
                        const std::string& target, bool had_events) {
  if (status.ok()) return absl::OkStatus();
  const auto code = static_cast<absl::StatusCode>(status.error_code());
  // The daemon may itself answer UNAVAILABLE (say, while shutting down) over
  // a healthy connection; only a channel that is not connected means that the
  // daemon could not be reached.
  const bool connection_problem =
      (code == absl::StatusCode::kUnavailable || code == absl::StatusCode::kDeadlineExceeded) &&
      channel.GetState(/*try_to_connect=*/false) != GRPC_CHANNEL_READY;
  if (!connection_problem) return absl::Status(code, status.error_message());
  absl::Status result(code, had_events ? absl::StrCat("lost connection to mantissad at ", target,
                                                      ": ", status.error_message())
                                       : absl::StrCat("cannot reach mantissad at ", target, ": ",
                                                      status.error_message()));
  result.SetPayload(kConnectionPayload, absl::Cord());
  return result;
}

bool IsConnectionError(const absl::Status& status) {
  return status.GetPayload(kConnectionPayload).has_value();
}

std::string DescribeError(const absl::Status& status) {
  if (status.GetPayload(kConnectionPayload).has_value()) return std::string(status.message());
  if (status.message().empty()) return absl::StatusCodeToString(status.code());
  return absl::StrCat(absl::StatusCodeToString(status.code()), ": ", status.message());
}

}  // namespace mantissa::cli
