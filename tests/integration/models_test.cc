// Every model the daemon knows trains through the real daemon in each
// precision the CPU runs (32-true, 64-true, bf16-mixed, bf16-true; 16-mixed
// runs as bf16-mixed here and 16-true needs fp16 kernels), and the two
// reference tasks reach their targets: the cnn above 85% on Fashion-MNIST,
// the gpt learning a repeating token pattern.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <tuple>

#include "tests/testing/daemon_test.h"
#include "tests/testing/subprocess.h"

namespace mantissa {
namespace {

using testing::DaemonTest;

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

class ModelPrecisionTest
    : public DaemonTest,
      public ::testing::WithParamInterface<std::tuple<std::string, std::string>> {};

TEST_P(ModelPrecisionTest, TrainsAndTheLossGoesDown) {
  const auto& [model, precision] = GetParam();
  const std::string ts_path = dir_.File("model.pt");
  if (model == "torchscript") {
    // A TorchScript file made from C++ alone: 32 synthetic features, 4 classes.
    auto made =
        testing::RunCommand({MANTISSA_WRITE_TORCHSCRIPT_BIN, ts_path, "32", "64", "4", "1"});
    ASSERT_EQ(made.exit_code, 0) << made.err;
  }
  v1::JobSpec spec = SpecFor(model, ts_path);
  spec.set_precision(precision);
  const v1::Job job = SubmitAndWait(spec);
  ASSERT_EQ(job.state(), v1::SUCCEEDED) << job.error();
  EXPECT_EQ(job.result().steps_completed(), 40);
  EXPECT_GT(job.parameter_count(), 0);
  EXPECT_EQ(job.effective_precision(), precision);
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
              precision.c_str(), job.result().final_loss(), initial,
              job.progress().items_per_second(), static_cast<long long>(job.parameter_count()));
  EXPECT_LT(job.result().final_loss(), 0.8 * initial);
  if (model == "gpt") {
    EXPECT_TRUE(job.result().has_eval_perplexity());
    EXPECT_FALSE(job.result().has_eval_accuracy());
  } else {
    EXPECT_TRUE(job.result().has_eval_accuracy());
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

using ReferenceTaskTest = DaemonTest;

TEST_F(ReferenceTaskTest, CnnAbove85PercentOnFashionMnist) {
  v1::JobSpec spec;
  spec.set_model("cnn");
  spec.set_dataset("fashion-mnist");
  spec.set_epochs(1);
  spec.set_batch_size(64);
  spec.set_lr(2e-3);
  spec.set_seed(1);
  spec.set_progress_every_n_steps(100);
  spec.set_memory_baseline_steps(0);
  StartDaemon({"--intra_op_threads=0"});
  const v1::Job job = SubmitAndWait(spec);
  ASSERT_EQ(job.state(), v1::SUCCEEDED) << job.error();
  std::printf("fashion-mnist cnn 1 epoch: test accuracy %.4f in %.1f s (%.0f items/s)\n",
              job.result().eval_accuracy(), job.result().train_seconds(),
              job.progress().items_per_second());
  EXPECT_GT(job.result().eval_accuracy(), 0.85);
}

TEST_F(ReferenceTaskTest, GptLearnsARepeatingTokenPattern) {
  v1::JobSpec spec;
  spec.set_model("gpt");
  spec.set_dataset("synthetic-tokens");
  (*spec.mutable_dataset_options())["vocab"] = "256";
  (*spec.mutable_dataset_options())["period"] = "16";
  (*spec.mutable_dataset_options())["seq_len"] = "64";
  (*spec.mutable_model_options())["d_model"] = "64";
  (*spec.mutable_model_options())["layers"] = "2";
  (*spec.mutable_model_options())["heads"] = "4";
  spec.set_steps(150);
  spec.set_batch_size(16);
  spec.set_lr(3e-3);
  spec.set_lr_schedule("cosine");
  spec.set_warmup_steps(10);
  spec.set_precision("bf16-mixed");
  spec.set_seed(2);
  spec.set_progress_every_n_steps(25);
  const v1::Job job = SubmitAndWait(spec);
  ASSERT_EQ(job.state(), v1::SUCCEEDED) << job.error();
  const double chance = std::log(256.0);
  std::printf(
      "gpt synthetic tokens: train loss %.4f, eval loss %.4f, perplexity %.3f "
      "(chance loss %.3f)\n",
      job.result().final_loss(), job.result().eval_loss(), job.result().eval_perplexity(), chance);
  // Only the first period of each window is unpredictable; the rest is copying.
  EXPECT_LT(job.result().eval_loss(), 0.25 * chance);
  EXPECT_LT(job.result().eval_perplexity(), 4.0);
}

}  // namespace
}  // namespace mantissa
