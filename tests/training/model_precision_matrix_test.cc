// Every model trains in each precision the CPU runs (32-true, 64-true,
// bf16-mixed, bf16-true; 16-mixed runs as bf16-mixed here and 16-true needs
// fp16 kernels), in-process as the daemon runs a job: ResolveJobSpec with the
// test daemon's context, then the Trainer. One pair also runs through the
// real daemon (tests/integration/models_test.cc).

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <tuple>

#include "server/training/job_spec_resolver.h"
#include "server/training/trainer.h"
#include "tests/testing/daemon_resolve_context.h"
#include "tests/testing/fake_job_context.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/torchscript_writer.h"

namespace mantissa {
namespace {

using testing::FakeJobContext;

v1::JobSpec SpecFor(const std::string& model, const std::string& torchscript_path) {
  v1::JobSpec spec;
  spec.set_model(model);
  spec.set_seed(3);
  spec.set_progress_every_n_steps(5);
  spec.set_lr(3e-3);
  spec.mutable_eval()->set_max_batches(4);
  if (model == "mlp" || model == "torchscript") {
    spec.set_dataset("synthetic");
    (*spec.mutable_dataset_options())["train_size"] = "2048";
    spec.set_steps(40);
    spec.set_batch_size(32);
    if (model == "torchscript") (*spec.mutable_model_options())["path"] = torchscript_path;
  } else if (model == "cnn") {
    spec.set_dataset("fashion-mnist");
    (*spec.mutable_dataset_options())["train_limit"] = "1280";
    (*spec.mutable_dataset_options())["test_limit"] = "256";
    (*spec.mutable_model_options())["channels"] = "8,16";
    spec.set_steps(40);
    spec.set_batch_size(32);
  } else if (model == "gpt") {
    spec.set_dataset("synthetic-tokens");
    (*spec.mutable_dataset_options())["vocab"] = "64";
    (*spec.mutable_dataset_options())["seq_len"] = "32";
    (*spec.mutable_model_options())["d_model"] = "64";
    (*spec.mutable_model_options())["layers"] = "2";
    (*spec.mutable_model_options())["heads"] = "4";
    spec.set_steps(40);
    spec.set_batch_size(16);
  }
  return spec;
}

class ModelPrecisionTest : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {
 protected:
  // One TorchScript file for the suite: 32 synthetic features, 4 classes.
  static void SetUpTestSuite() {
    dir_ = std::make_unique<testing::TempDir>();
    ASSERT_OK(testing::WriteTorchScriptMlp(dir_->File("model.pt"), 32, 64, 4, 1));
  }
  static void TearDownTestSuite() { dir_.reset(); }

  static inline std::unique_ptr<testing::TempDir> dir_;
};

TEST_P(ModelPrecisionTest, TrainsAndTheLossGoesDown) {
  const auto& [model, precision] = GetParam();
  v1::JobSpec spec = SpecFor(model, dir_->File("model.pt"));
  spec.set_precision(precision);
  auto prepared = ResolveJobSpec(spec, testing::DaemonResolveContext());
  ASSERT_OK(prepared);
  EXPECT_EQ(prepared->effective_precision, precision);

  testing::TempDir job_dir;
  Trainer::Options options;
  options.job = *std::move(prepared);
  options.checkpoint_path = job_dir.File("checkpoint.pt");
  auto trainer = Trainer::Create(options);
  ASSERT_OK(trainer);
  FakeJobContext context;
  auto result = (*trainer)->Run(context);
  ASSERT_OK(result);
  const v1::Job job = context.job();
  EXPECT_EQ(result->steps_completed(), 40);
  EXPECT_GT(job.parameter_count(), 0);
  EXPECT_EQ(job.precision_stats().parameter_dtype(), precision == "bf16-true" ? "bfloat16"
                                                     : precision == "64-true" ? "float64"
                                                                              : "float32");

  // The final weights are kept for export.
  ASSERT_TRUE(job.has_checkpoint());
  EXPECT_EQ(job.checkpoint().step(), 40);
  // A freshly initialised classifier or LM starts near the loss of a uniform
  // guess, ln(classes) or ln(vocab): the final loss must be well below it.
  const double initial = model == "gpt" ? std::log(64.0) : std::log(model == "cnn" ? 10.0 : 4.0);
  std::printf("%s %s: loss %.4f (chance %.4f), %.0f items/s, %lld parameters\n", model.c_str(),
              precision.c_str(), result->final_loss(), initial, job.progress().items_per_second(),
              static_cast<long long>(job.parameter_count()));
  EXPECT_LT(result->final_loss(), 0.8 * initial);
  if (model == "gpt") {
    EXPECT_TRUE(result->has_eval_perplexity());
    EXPECT_FALSE(result->has_eval_accuracy());
  } else {
    EXPECT_TRUE(result->has_eval_accuracy());
  }
}

INSTANTIATE_TEST_SUITE_P(AllModels, ModelPrecisionTest,
                         ::testing::Combine(::testing::Values("mlp", "cnn", "gpt", "torchscript"),
                                            ::testing::Values("32-true", "64-true", "bf16-mixed",
                                                              "bf16-true")),
                         [](const ::testing::TestParamInfo<ModelPrecisionTest::ParamType>& info) {
                           std::string name =
                               std::get<0>(info.param) + "_" + std::get<1>(info.param);
                           for (char& c : name) {
                             if (c == '-') c = '_';
                           }
                           return name;
                         });

}  // namespace
}  // namespace mantissa
