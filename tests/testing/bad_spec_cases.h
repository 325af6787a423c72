#ifndef MANTISSA_TESTS_TESTING_BAD_SPEC_CASES_H_
#define MANTISSA_TESTS_TESTING_BAD_SPEC_CASES_H_

#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "mantissa/v1/training.pb.h"

namespace mantissa::testing {

// A way to spoil SyntheticMlpSpec(10), the status code that refuses it (the
// gRPC code SubmitJob answers is the same number) and the words the message
// must name.
struct BadSpecCase {
  std::string name;
  std::function<void(v1::JobSpec&)> mutate;
  absl::StatusCode code;
  std::vector<std::string> message_parts;
};

// GoogleTest names a failing case by this.
inline void PrintTo(const BadSpecCase& c, std::ostream* os) { *os << c.name; }

// Every refusal the suite checks: in-process through ResolveJobSpec
// (tests/training/spec_validation_test.cc), a few through the real daemon
// (tests/integration/training_service_test.cc).
inline std::vector<BadSpecCase> BadSpecCases() {
  return {BadSpecCase{"ZeroMaxAttempts",
                      [](v1::JobSpec& s) { s.set_max_attempts(0); },
                      absl::StatusCode::kInvalidArgument,
                      {"max_attempts", "[1, 100]", "0"}},
          BadSpecCase{"UnknownModel",
                      [](v1::JobSpec& s) { s.set_model("resnet9000"); },
                      absl::StatusCode::kNotFound,
                      {"model", "resnet9000", "mlp"}},
          BadSpecCase{"MissingModel",
                      [](v1::JobSpec& s) { s.clear_model(); },
                      absl::StatusCode::kInvalidArgument,
                      {"model", "mlp"}},
          BadSpecCase{"UnknownDataset",
                      [](v1::JobSpec& s) { s.set_dataset("imagenet"); },
                      absl::StatusCode::kNotFound,
                      {"dataset", "synthetic", "fashion-mnist"}},
          BadSpecCase{"ZeroSteps",
                      [](v1::JobSpec& s) { s.set_steps(0); },
                      absl::StatusCode::kInvalidArgument,
                      {"steps"}},
          BadSpecCase{"NegativeEpochs",
                      [](v1::JobSpec& s) {
                        s.clear_steps();
                        s.set_epochs(-1);
                      },
                      absl::StatusCode::kInvalidArgument,
                      {"epochs"}},
          BadSpecCase{"StepsAndEpochs",
                      [](v1::JobSpec& s) { s.set_epochs(2); },
                      absl::StatusCode::kInvalidArgument,
                      {"steps", "epochs"}},
          BadSpecCase{"NegativeBatchSize",
                      [](v1::JobSpec& s) { s.set_batch_size(-4); },
                      absl::StatusCode::kInvalidArgument,
                      {"batch_size"}},
          BadSpecCase{"ZeroLr",
                      [](v1::JobSpec& s) { s.set_lr(0); },
                      absl::StatusCode::kInvalidArgument,
                      {"lr"}},
          BadSpecCase{"UnknownOptimizer",
                      [](v1::JobSpec& s) { s.set_optimizer("lion"); },
                      absl::StatusCode::kInvalidArgument,
                      {"optimizer", "sgd, adam, adamw"}},
          BadSpecCase{"MomentumWithAdam",
                      [](v1::JobSpec& s) {
                        s.set_optimizer("adam");
                        s.set_momentum(0.9);
                      },
                      absl::StatusCode::kInvalidArgument,
                      {"momentum", "sgd"}},
          BadSpecCase{"UnknownPrecision",
                      [](v1::JobSpec& s) { s.set_precision("fp17"); },
                      absl::StatusCode::kInvalidArgument,
                      {"precision", "32-true", "bf16-mixed"}},
          BadSpecCase{"FP8OnCpu",
                      [](v1::JobSpec& s) { s.set_precision("transformer-engine"); },
                      absl::StatusCode::kFailedPrecondition,
                      {"precision", "transformer-engine"}},
          BadSpecCase{"UnknownModelOption",
                      [](v1::JobSpec& s) { (*s.mutable_model_options())["hiden"] = "12"; },
                      absl::StatusCode::kInvalidArgument,
                      {"model_options", "hiden", "hidden"}},
          BadSpecCase{"BadModelOptionValue",
                      [](v1::JobSpec& s) { (*s.mutable_model_options())["hidden"] = "12,-3"; },
                      absl::StatusCode::kInvalidArgument,
                      {"model_options[hidden]"}},
          BadSpecCase{"MissingDatasetDir",
                      [](v1::JobSpec& s) {
                        s.set_dataset("fashion-mnist");
                        (*s.mutable_dataset_options())["dir"] = "/nonexistent/fmnist";
                      },
                      // Outside --data_root, and missing: refused alike.
                      absl::StatusCode::kPermissionDenied,
                      {"/nonexistent/fmnist", "--data_root"}},
          BadSpecCase{"ZeroProgressInterval",
                      [](v1::JobSpec& s) { s.set_progress_every_n_steps(0); },
                      absl::StatusCode::kInvalidArgument,
                      {"progress_every_n_steps"}}};
}

// The cases called `names`, in that order.
inline std::vector<BadSpecCase> BadSpecCases(const std::vector<std::string>& names) {
  std::vector<BadSpecCase> picked;
  for (const std::string& name : names) {
    for (BadSpecCase& c : BadSpecCases()) {
      if (c.name == name) picked.push_back(std::move(c));
    }
  }
  return picked;
}

}  // namespace mantissa::testing

#endif  // MANTISSA_TESTS_TESTING_BAD_SPEC_CASES_H_
