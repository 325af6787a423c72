// Models through the real daemon: a TorchScript model in bf16-true, and the
// two reference tasks reach their targets: the cnn above 85% on
// Fashion-MNIST, the gpt learning a repeating token pattern. Test daemons run
// one intra-op thread, so ctest -j2 does not oversubscribe.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>

#include "tests/testing/daemon_test.h"
#include "tests/testing/subprocess.h"

namespace mantissa {
namespace {

using testing::DaemonTest;

// Through the real daemon: a TorchScript file made by the CLI's helper under
// --torchscript_root, trained in bf16-true and kept for export. Every model in
// every CPU precision trains in-process in
// tests/training/model_precision_matrix_test.cc.
using ModelPrecisionTest = DaemonTest;

TEST_F(ModelPrecisionTest, TorchScriptTrainsInBf16TrueAndTheLossGoesDown) {
  // A TorchScript file made from C++ alone: 32 synthetic features, 4 classes.
  const std::string ts_path = dir_.File("model.pt");
  auto made = testing::RunCommand({MANTISSA_WRITE_TORCHSCRIPT_BIN, ts_path, "32", "64", "4", "1"});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  v1::JobSpec spec;
  spec.set_model("torchscript");
  (*spec.mutable_model_options())["path"] = ts_path;
  spec.set_dataset("synthetic");
  (*spec.mutable_dataset_options())["train_size"] = "2048";
  spec.set_steps(40);
  spec.set_batch_size(32);
  spec.set_seed(3);
  spec.set_progress_every_n_steps(5);
  spec.set_lr(3e-3);
  spec.mutable_eval()->set_max_batches(4);
  spec.set_precision("bf16-true");
  const v1::Job job = SubmitAndWait(spec);
  ASSERT_EQ(job.state(), v1::SUCCEEDED) << job.error();
  EXPECT_EQ(job.result().steps_completed(), 40);
  EXPECT_GT(job.parameter_count(), 0);
  EXPECT_EQ(job.effective_precision(), "bf16-true");
  EXPECT_EQ(job.precision_stats().parameter_dtype(), "bfloat16");
  // The final weights are kept for export.
  ASSERT_TRUE(job.has_checkpoint());
  EXPECT_EQ(job.checkpoint().step(), 40);
  // Well below the loss of a uniform guess over 4 classes.
  EXPECT_LT(job.result().final_loss(), 0.8 * std::log(4.0));
  EXPECT_TRUE(job.result().has_eval_accuracy());
}

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
