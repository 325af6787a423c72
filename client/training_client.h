#ifndef MANTISSA_CLIENT_TRAINING_CLIENT_H_
#define MANTISSA_CLIENT_TRAINING_CLIENT_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "mantissa/v1/training.grpc.pb.h"
#include "mantissa/v1/training.pb.h"

namespace mantissa::cli {

// The TrainingService calls the CLI makes, with gRPC errors turned into
// absl::Status. Unary calls get a deadline; WatchJob has none because a job
// may run for hours. Calls fail fast when the daemon is down rather than wait
// for it to appear.
class TrainingClient {
 public:
  static constexpr absl::Duration kDefaultDeadline = absl::Seconds(30);

  // `target` names the daemon in error messages.
  TrainingClient(std::shared_ptr<grpc::ChannelInterface> channel, std::string target);
  // An insecure channel to `target` ("HOST:PORT" or any gRPC target URI).
  static std::unique_ptr<TrainingClient> Connect(const std::string& target);

  void set_deadline(absl::Duration deadline) { deadline_ = deadline; }

  absl::StatusOr<v1::SubmitJobResponse> SubmitJob(const v1::SubmitJobRequest& request);
  absl::StatusOr<v1::GetJobResponse> GetJob(const v1::GetJobRequest& request);
  absl::StatusOr<v1::ListJobsResponse> ListJobs(const v1::ListJobsRequest& request);
  // Older jobs the last ListJobs answer left out to stay within 4 MiB (its
  // next page starts with them).
  int64_t list_jobs_left_out() const { return list_jobs_left_out_; }
  // Jobs the last ListJobs answer skipped as each alone exceeds 4 MiB.
  int64_t list_jobs_skipped() const { return list_jobs_skipped_; }
  absl::StatusOr<v1::CancelJobResponse> CancelJob(const v1::CancelJobRequest& request);
  absl::StatusOr<v1::DeleteJobResponse> DeleteJob(const v1::DeleteJobRequest& request);
  absl::StatusOr<v1::GetCapabilitiesResponse> GetCapabilities(
      const v1::GetCapabilitiesRequest& request);
  // Calls `on_event` for every event until the stream ends; returns how it
  // ended (OK once the daemon has sent the last event).
  absl::Status WatchJob(const v1::WatchJobRequest& request,
                        const std::function<void(const v1::JobEvent&)>& on_event);

 private:
  template <typename Request, typename Response, typename Method>
  absl::StatusOr<Response> Unary(Method method, const Request& request);
  absl::Status ToStatus(const grpc::Status& status, bool had_events) const;

  std::shared_ptr<grpc::ChannelInterface> channel_;
  std::unique_ptr<v1::TrainingService::Stub> stub_;
  std::string target_;
  absl::Duration deadline_ = kDefaultDeadline;
  int64_t list_jobs_left_out_ = 0;
  int64_t list_jobs_skipped_ = 0;
};

// The text printed after "mantissa: " for a failed call: "NOT_FOUND: no job
// abc" for errors from the daemon, or the whole sentence when it could not be
// reached.
std::string DescribeError(const absl::Status& status);

// Whether `status` says that the daemon could not be reached or the
// connection was lost, rather than carrying the daemon's own answer.
bool IsConnectionError(const absl::Status& status);

// How a failed call on `channel` to the daemon at `target` reads: the
// daemon's own status, or a connection error (see IsConnectionError) when
// the channel is not connected. Shared by every client of the CLI.
absl::Status CallStatus(const grpc::Status& status, grpc::ChannelInterface& channel,
                        const std::string& target, bool had_events);

}  // namespace mantissa::cli

#endif  // MANTISSA_CLIENT_TRAINING_CLIENT_H_
