#include "server/training/job_spec_resolver.h"

#include "server/common/status_macros.h"
#include "server/training/job_spec_sections.h"

namespace mantissa {

std::optional<int64_t> CheckedMul(int64_t a, int64_t b) {
  int64_t product;
  if (__builtin_mul_overflow(a, b, &product)) return std::nullopt;
  return product;
}

absl::StatusOr<ResolvedJob> ResolveJobSpec(const v1::JobSpec& submitted,
                                           const ResolveContext& context) {
  ResolvedJob job;
  job.spec = submitted;
  RETURN_IF_ERROR(ResolveWork(context, job));
  RETURN_IF_ERROR(ResolveOptimization(context, job));
  RETURN_IF_ERROR(ResolveRunSettings(context, job));
  RETURN_IF_ERROR(ResolveModelAndData(context, job));
  RETURN_IF_ERROR(ResolvePrecision(context, job));
  WarnOfSharedDevice(context, job);
  return job;
}

}  // namespace mantissa
