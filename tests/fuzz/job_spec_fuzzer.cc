// Fuzzes the job spec resolver: the input is a serialized mantissa.v1.JobSpec
// as SubmitJob receives it, resolved for a CPU device. A refused spec gets
// one of the documented codes; an accepted one resolves again to itself, as
// resume_from relies on.

#include <torch/torch.h>

#include <cstddef>
#include <cstdint>

#include "google/protobuf/stubs/logging.h"
#include "google/protobuf/util/message_differencer.h"
#include "server/training/job_spec_resolver.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

mantissa::ResolveContext CpuContext() {
  mantissa::ResolveContext context;
  context.caps.device = torch::kCPU;
  context.caps.device_name = "cpu";
  context.caps.float64 = true;
  context.caps.bfloat16 = true;
  context.caps.autocast_bfloat16 = true;
  context.max_concurrent_jobs = 2;
  return context;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  torch::set_num_threads(1);
  // Invalid UTF-8 in string fields is logged on every such input.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const mantissa::ResolveContext* context = new mantissa::ResolveContext(CpuContext());
  mantissa::v1::JobSpec spec;
  if (!spec.ParseFromArray(data, static_cast<int>(size))) return 0;
  absl::StatusOr<mantissa::ResolvedJob> prepared = mantissa::ResolveJobSpec(spec, *context);
  if (!prepared.ok()) {
    const absl::StatusCode code = prepared.status().code();
    FUZZ_CHECK(code == absl::StatusCode::kInvalidArgument || code == absl::StatusCode::kNotFound ||
               code == absl::StatusCode::kFailedPrecondition ||
               code == absl::StatusCode::kResourceExhausted ||
               code == absl::StatusCode::kPermissionDenied);
    return 0;
  }
  absl::StatusOr<mantissa::ResolvedJob> again = mantissa::ResolveJobSpec(prepared->spec, *context);
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(google::protobuf::util::MessageDifferencer::Equals(again->spec, prepared->spec));
  return 0;
}
