// Fabric's precision values through the real daemon on CPU: what runs, what
// is refused and why, the grad scaler really skipping, and memory measured
// against the 32-true baseline.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>

#include "tests/testing/daemon_test.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"

namespace mantissa {
namespace {

using testing::FindSample;
using ::testing::HasSubstr;
using testing::Submit;
using testing::SyntheticMlpSpec;
using testing::WaitForJob;

using PrecisionTest = testing::DaemonTest;

TEST_F(PrecisionTest, EveryValueTheCpuRunsSucceedsWithItsDtypes) {
  struct Case {
    std::string value, effective, parameter_dtype, compute_dtype, warning;
  };
  const std::vector<Case> cases = {
      {"32-true", "32-true", "float32", "float32", ""},
      {"32", "32-true", "float32", "float32", ""},
      {"64-true", "64-true", "float64", "float64", ""},
      {"64", "64-true", "float64", "float64", ""},
      {"bf16-mixed", "bf16-mixed", "float32", "bfloat16", ""},
      {"bf16", "bf16-mixed", "float32", "bfloat16", "historical reasons"},
      {"16-mixed", "bf16-mixed", "float32", "bfloat16", "not supported on CPU"},
      {"16", "bf16-mixed", "float32", "bfloat16", "historical reasons"},
      {"bf16-true", "bf16-true", "bfloat16", "bfloat16", ""},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.value);
    v1::JobSpec spec = SyntheticMlpSpec(40);
    spec.set_precision(c.value);
    const v1::Job job = SubmitAndWait(spec);
    EXPECT_EQ(job.state(), v1::SUCCEEDED) << job.error();
    EXPECT_EQ(job.spec().precision(), c.value);
    EXPECT_EQ(job.effective_precision(), c.effective);
    EXPECT_EQ(job.precision_stats().parameter_dtype(), c.parameter_dtype);
    EXPECT_EQ(job.precision_stats().compute_dtype(), c.compute_dtype);
    EXPECT_EQ(job.precision_stats().optimizer_steps(), 40);
    EXPECT_FALSE(job.precision_stats().grad_scaler_enabled());  // no fp16 on CPU
    if (!c.warning.empty()) {
      ASSERT_FALSE(job.warnings().empty());
      EXPECT_THAT(job.warnings(0), HasSubstr(c.warning));
    }
    EXPECT_GT(job.result().eval_accuracy(), 0.9);
  }
}

TEST_F(PrecisionTest, WhatTheCpuCannotRunIsRefusedWithTheReason) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"16-true", "float16 compute is not available on cpu"},
      {"transformer-engine", "compute capability >= 8.9"},
      {"transformer-engine-float16", "compute capability >= 8.9"},
  };
  for (const auto& [value, reason] : cases) {
    SCOPED_TRACE(value);
    v1::JobSpec spec = SyntheticMlpSpec(5);
    spec.set_precision(value);
    auto outcome = Submit(*stub_, spec);
    EXPECT_EQ(outcome.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_THAT(outcome.status.error_message(), HasSubstr(reason));
  }
  grpc::ClientContext context;
  v1::ListJobsResponse response;
  ASSERT_TRUE(stub_->ListJobs(&context, v1::ListJobsRequest(), &response).ok());
  EXPECT_EQ(response.jobs_size(), 0);
}

TEST_F(PrecisionTest, GradScalerSkipsLeadingStepsUntilGradientsAreFinite) {
  // bf16-mixed with the scaler on and the scale at float32's maximum: every
  // gradient above 1 overflows. Inputs with stddev 50 give gradients of ~10,
  // so the scale must halve until scale * |grad| < FLT_MAX; with growth only
  // after 2000 clean steps it then stays put. For this seed the early
  // gradients lie between 8 and 16: exactly 4 skips, all in the first steps.
  v1::JobSpec spec = SyntheticMlpSpec(100);
  (*spec.mutable_model_options())["hidden"] = "32";
  (*spec.mutable_dataset_options())["noise"] = "50";
  spec.set_precision("bf16-mixed");
  spec.set_optimizer("sgd");
  spec.set_lr(0.01);
  spec.set_progress_every_n_steps(1);
  spec.mutable_grad_scaler()->set_enabled(true);
  spec.mutable_grad_scaler()->set_init_scale(FLT_MAX);

  auto submitted = Submit(*stub_, spec);
  ASSERT_TRUE(submitted.status.ok()) << submitted.status.error_message();
  grpc::ClientContext context;
  v1::WatchJobRequest request;
  request.set_job_id(submitted.job.id());
  auto reader = stub_->WatchJob(&context, request);
  std::vector<v1::Job> progress;
  v1::JobEvent event;
  while (reader->Read(&event)) {
    if (event.type() == v1::JobEvent::PROGRESS) progress.push_back(event.job());
  }
  ASSERT_TRUE(reader->Finish().ok());
  auto job = WaitForJob(*stub_, submitted.job.id(), testing::IsTerminal);
  ASSERT_OK(job);
  ASSERT_EQ(job->state(), v1::SUCCEEDED) << job->error();

  const v1::PrecisionStats& stats = job->precision_stats();
  EXPECT_TRUE(stats.grad_scaler_enabled());
  EXPECT_EQ(stats.skipped_steps(), 4);
  EXPECT_EQ(stats.optimizer_steps(), 100);
  // The scale the algorithm settles at: init * backoff^skips, in float32.
  EXPECT_EQ(stats.scale(), static_cast<double>(FLT_MAX / 16.0f));
  // The algorithm's invariant at every reported step: without growth, the
  // scale is init * 0.5^skipped exactly; skips only accumulate, and they all
  // happen while the model is still near its (large-gradient) start.
  ASSERT_FALSE(progress.empty());
  int64_t previous = 0;
  for (const v1::Job& p : progress) {
    const v1::PrecisionStats& s = p.precision_stats();
    SCOPED_TRACE("step " + std::to_string(p.progress().step()));
    EXPECT_EQ(s.scale(),
              static_cast<double>(std::ldexp(FLT_MAX, -static_cast<int>(s.skipped_steps()))));
    EXPECT_GE(s.skipped_steps(), previous);
    EXPECT_LE(s.skipped_steps(), p.progress().step());
    if (p.progress().step() >= 10) EXPECT_EQ(s.skipped_steps(), 4);
    previous = s.skipped_steps();
  }
  // Training went on: the loss fell after the skips.
  EXPECT_LT(job->result().final_loss(), progress.front().progress().loss());

  auto text = daemon_->ScrapeMetrics();
  ASSERT_OK(text);
  const std::string job_label = "job=\"" + job->id() + "\"";
  EXPECT_EQ(FindSample(*text, "mantissa_grad_scaler_skipped_steps_total",
                       {job_label, "precision=\"bf16-mixed\""}),
            4.0);
  // The text format prints 6 significant digits.
  EXPECT_NEAR(FindSample(*text, "mantissa_grad_scaler_scale", {job_label}).value_or(0),
              static_cast<double>(FLT_MAX / 16.0f), 1e-5 * static_cast<double>(FLT_MAX / 16.0f));
}

TEST_F(PrecisionTest, MemorySavingsAreMeasuredAgainstTheFp32Baseline) {
  // DESIGN.md's reference: MLP 784-1024-1024-10, AdamW, batch 64.
  const auto spec_for = [](const std::string& precision) {
    v1::JobSpec spec;
    spec.set_model("mlp");
    (*spec.mutable_model_options())["hidden"] = "1024,1024";
    spec.set_dataset("fashion-mnist");
    (*spec.mutable_dataset_options())["train_limit"] = "1024";
    (*spec.mutable_dataset_options())["test_limit"] = "256";
    spec.set_steps(8);
    spec.set_batch_size(64);
    spec.set_precision(precision);
    return spec;
  };
  const v1::Job bf16 = SubmitAndWait(spec_for("bf16-true"));
  const v1::Job fp64 = SubmitAndWait(spec_for("64-true"));
  const v1::Job fp32 = SubmitAndWait(spec_for("32-true"));
  for (const v1::Job* job : {&bf16, &fp64, &fp32}) {
    ASSERT_EQ(job->state(), v1::SUCCEEDED) << job->error();
    EXPECT_TRUE(job->memory().exact());
    EXPECT_EQ(job->memory().source(), "cpu counting allocator");
    EXPECT_GT(job->memory().baseline_fp32_peak_bytes(), 0);
  }
  const int64_t params = bf16.parameter_count();
  EXPECT_EQ(params, 784 * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 * 10 + 10);

  // Parameters, gradients and AdamW's two moments: count x bytes per element.
  EXPECT_EQ(bf16.memory().parameter_bytes(), params * 2);
  EXPECT_EQ(bf16.memory().gradient_bytes(), params * 2);
  EXPECT_EQ(bf16.memory().optimizer_state_bytes(), params * 2 * 2);
  EXPECT_EQ(fp64.memory().parameter_bytes(), params * 8);
  EXPECT_EQ(fp64.memory().optimizer_state_bytes(), params * 8 * 2);
  EXPECT_EQ(fp32.memory().parameter_bytes(), params * 4);
  // The peak holds at least all of them.
  for (const v1::Job* job : {&bf16, &fp64, &fp32}) {
    const v1::MemoryStats& m = job->memory();
    EXPECT_GE(m.peak_bytes(), m.parameter_bytes() + m.gradient_bytes() + m.optimizer_state_bytes());
  }

  EXPECT_GT(bf16.memory().savings_ratio(), 0.40);
  EXPECT_LT(fp64.memory().savings_ratio(), -0.80);  // about twice the baseline
  EXPECT_NEAR(fp32.memory().savings_ratio(), 0.0, 0.02);
  // Every job measured the same baseline.
  EXPECT_EQ(bf16.memory().baseline_fp32_peak_bytes(), fp32.memory().baseline_fp32_peak_bytes());
  EXPECT_NEAR(static_cast<double>(fp32.memory().peak_bytes()),
              static_cast<double>(fp32.memory().baseline_fp32_peak_bytes()),
              0.02 * static_cast<double>(fp32.memory().baseline_fp32_peak_bytes()));

  auto text = daemon_->ScrapeMetrics();
  ASSERT_OK(text);
  const std::string bf16_job = "job=\"" + bf16.id() + "\"";
  EXPECT_EQ(FindSample(*text, "mantissa_memory_peak_bytes", {bf16_job}),
            static_cast<double>(bf16.memory().peak_bytes()));
  EXPECT_EQ(FindSample(*text, "mantissa_memory_fp32_baseline_peak_bytes", {bf16_job}),
            static_cast<double>(bf16.memory().baseline_fp32_peak_bytes()));
  EXPECT_NEAR(
      FindSample(*text, "mantissa_memory_savings_ratio", {bf16_job, "precision=\"bf16-true\""})
          .value_or(-1),
      bf16.memory().savings_ratio(), 1e-6);
}

TEST_F(PrecisionTest, NonFiniteLossFailsTheJobAtThatStep) {
  v1::JobSpec spec = SyntheticMlpSpec(50);
  spec.set_optimizer("sgd");
  spec.set_lr(1e30);  // the first update blows the weights up
  const v1::Job job = SubmitAndWait(spec);
  EXPECT_EQ(job.state(), v1::FAILED);
  EXPECT_THAT(job.error(), HasSubstr("step 2: the loss is"));
  EXPECT_THAT(job.error(), HasSubstr("without a grad scaler"));
  EXPECT_THAT(job.error(), HasSubstr("lower the learning rate"));
  EXPECT_LT(job.progress().step(), 50);
}

TEST_F(PrecisionTest, CliCompareShowsPrecisionsSideBySide) {
  auto r = testing::RunCli({daemon_->server_flag(), "compare", "--model", "mlp", "--model-option",
                            "hidden=256", "--dataset", "synthetic", "--steps", "30", "--precisions",
                            "32-true,bf16-mixed,bf16-true,16-true"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  for (const char* text : {"PRECISION", "SAVINGS", "32-true", "bf16-mixed", "bf16-true", "refused",
                           "float16 compute is not available"}) {
    EXPECT_THAT(r.out, HasSubstr(text));
  }
  auto get = testing::RunCli({daemon_->server_flag(), "--json", "list"});
  EXPECT_EQ(get.exit_code, 0);
  EXPECT_THAT(get.out, HasSubstr("\"savingsRatio\""));
}

}  // namespace
}  // namespace mantissa
