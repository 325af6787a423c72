#ifndef MANTISSA_TESTS_TESTING_TRAINER_OPTIONS_H_
#define MANTISSA_TESTS_TESTING_TRAINER_OPTIONS_H_

#include <gtest/gtest.h>

#include <utility>

#include "mantissa/v1/training.pb.h"
#include "server/runtime/device_capabilities.h"
#include "server/training/job_spec_resolver.h"
#include "server/training/trainer.h"

namespace mantissa::testing {

// The trainer's options for `spec` on the CPU, resolved as the daemon does
// (a failed resolution fails the test and leaves the job empty).
inline Trainer::Options CpuTrainerOptions(const v1::JobSpec& spec) {
  static const ResolveContext* const cpu =
      new ResolveContext{DeviceCapabilities::Probe(torch::kCPU), 1};
  auto resolved = ResolveJobSpec(spec, *cpu);
  EXPECT_TRUE(resolved.ok()) << resolved.status();
  Trainer::Options options;
  if (resolved.ok()) options.job = *std::move(resolved);
  return options;
}

}  // namespace mantissa::testing

#endif  // MANTISSA_TESTS_TESTING_TRAINER_OPTIONS_H_
