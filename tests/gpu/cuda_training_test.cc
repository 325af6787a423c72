// The CUDA training hot path: fused Adam/AdamW, the grad scaler's skip on
// the device, CUDA graph capture. Every test skips without a CUDA device.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "server/common/status_macros.h"
#include "server/precision/grad_scaler.h"
#include "server/training/fused_adam.h"
#include "server/training/gradient_monitor.h"
#include "server/training/job_spec_resolver.h"
#include "server/training/trainer.h"
#include "tests/testing/fake_job_context.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

#ifdef MANTISSA_WITH_CUDA
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace mantissa {
namespace {

using testing::FakeJobContext;
using ::testing::HasSubstr;

#define SKIP_WITHOUT_CUDA() \
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device"

// While alive, an op that makes the host wait for the device throws, as
// torch.cuda.set_sync_debug_mode("error").
class NoHostSync {
 public:
#ifdef MANTISSA_WITH_CUDA
  NoHostSync() {
    c10::cuda::warning_state().set_sync_debug_mode(c10::cuda::SyncDebugMode::L_ERROR);
  }
  ~NoHostSync() {
    c10::cuda::warning_state().set_sync_debug_mode(c10::cuda::SyncDebugMode::L_DISABLED);
  }
#endif
};

torch::TensorOptions Cuda() { return torch::TensorOptions().device(torch::kCUDA); }

// Five steps of the same gradients, with an lr change half-way (the fused
// kernel reads it from the device): the fused optimizer lands where the
// portable one does, and its checkpoint holds the same state and step.
template <typename Fused, typename Portable, typename Options, typename State>
void ExpectFusedMatchesPortable(const Options& options) {
  torch::manual_seed(5);
  const std::vector<torch::Tensor> init = {torch::randn({64, 32}, Cuda()),
                                           torch::randn({32}, Cuda()), torch::randn({}, Cuda())};
  std::vector<torch::Tensor> a, b;
  for (const torch::Tensor& t : init) {
    a.push_back(t.clone().set_requires_grad(true));
    b.push_back(t.clone().set_requires_grad(true));
  }
  Fused fused(a, options);
  Portable portable(b, options);
  for (int step = 0; step < 5; ++step) {
    if (step == 3) {
      for (auto* opt : {static_cast<torch::optim::Optimizer*>(&fused),
                        static_cast<torch::optim::Optimizer*>(&portable)}) {
        opt->param_groups()[0].options().set_lr(options.lr() * 0.5);
      }
    }
    for (size_t i = 0; i < init.size(); ++i) {
      const torch::Tensor grad = torch::randn_like(init[i]);
      a[i].mutable_grad() = grad.clone();
      b[i].mutable_grad() = grad.clone();
    }
    fused.step();
    portable.step();
  }
  for (size_t i = 0; i < init.size(); ++i) {
    EXPECT_FALSE(torch::equal(a[i], init[i]));
    EXPECT_TRUE(torch::allclose(a[i], b[i], 1e-5, 1e-6)) << "parameter " << i;
  }

  std::stringstream stream;
  {
    torch::serialize::OutputArchive archive;
    fused.save(archive);
    archive.save_to(stream);
  }
  std::vector<torch::Tensor> c;
  for (const torch::Tensor& t : a) c.push_back(t.detach().clone().set_requires_grad(true));
  Portable restored(c, options);
  {
    torch::serialize::InputArchive archive;
    archive.load_from(stream);
    restored.load(archive);
  }
  ASSERT_EQ(restored.state().size(), init.size());
  for (const auto& entry : restored.state()) {
    EXPECT_EQ(static_cast<const State&>(*entry.second).step(), 5);
  }
}

TEST(FusedAdamCudaTest, FusedAdamWMatchesPortableAdamW) {
  SKIP_WITHOUT_CUDA();
  ExpectFusedMatchesPortable<FusedAdamW, torch::optim::AdamW, torch::optim::AdamWOptions,
                             torch::optim::AdamWParamState>(
      torch::optim::AdamWOptions(1e-2).weight_decay(0.1));
}

TEST(FusedAdamCudaTest, FusedAdamMatchesPortableAdam) {
  SKIP_WITHOUT_CUDA();
  ExpectFusedMatchesPortable<FusedAdam, torch::optim::Adam, torch::optim::AdamOptions,
                             torch::optim::AdamParamState>(
      torch::optim::AdamOptions(1e-2).weight_decay(0.1));
}

TEST(FusedAdamCudaTest, InfGradientsAreSkippedOnTheDeviceWithoutAHostRead) {
  SKIP_WITHOUT_CUDA();
  auto scaler_or = GradScaler::Create({.init_scale = 1024.0});
  ASSERT_OK(scaler_or);
  GradScaler& scaler = **scaler_or;
  torch::Tensor w = torch::ones({8}, Cuda()).set_requires_grad(true);
  FusedAdamW optimizer({w}, torch::optim::AdamWOptions(0.1).weight_decay(0.01));
  ASSERT_NE(dynamic_cast<DeviceScaledOptimizer*>(&optimizer), nullptr);

  scaler.Scale(torch::ones({}, Cuda()));  // the scaler's tensors go to the device
  w.mutable_grad() = torch::full({8}, 1024.0f, Cuda());
  w.mutable_grad()[3] = std::numeric_limits<float>::infinity();
  const torch::Tensor before = w.detach().clone();
  OptimizerStepResult result;
  {
    [[maybe_unused]] NoHostSync no_sync;
    result = scaler.Step(optimizer);
    scaler.Update();
  }
  EXPECT_FALSE(result.skip_known);
  EXPECT_TRUE(torch::equal(w, before));
  EXPECT_EQ(scaler.skipped_steps(), 1);
  EXPECT_EQ(scaler.scale(), 512.0);

  // A clean step: the kernel unscales (gradient 1) and the weights move.
  scaler.Scale(torch::ones({}, Cuda()));
  w.mutable_grad() = torch::full({8}, 512.0f, Cuda());
  {
    [[maybe_unused]] NoHostSync no_sync;
    scaler.Step(optimizer);
    scaler.Update();
  }
  EXPECT_EQ(scaler.skipped_steps(), 1);
  EXPECT_EQ(scaler.scale(), 512.0);
  // AdamW's first step with gradient 1: w * (1 - lr * wd) - lr.
  EXPECT_NEAR(w[0].item<float>(), 1.0 * (1 - 0.1 * 0.01) - 0.1, 1e-5);

  // The skipped step did not count: the checkpoint holds step 1.
  torch::serialize::OutputArchive archive;
  optimizer.save(archive);
  ASSERT_EQ(optimizer.state().size(), 1u);
  EXPECT_EQ(
      static_cast<const torch::optim::AdamWParamState&>(*optimizer.state().begin()->second).step(),
      1);
}

v1::JobSpec CudaSpec(int64_t steps, const std::string& precision) {
  v1::JobSpec spec;
  spec.set_model("mlp");
  (*spec.mutable_model_options())["hidden"] = "64";
  spec.set_dataset("synthetic");
  // 1000 items in batches of 32: every epoch ends with a batch of 8.
  (*spec.mutable_dataset_options())["train_size"] = "1000";
  (*spec.mutable_dataset_options())["test_size"] = "256";
  spec.set_steps(steps);
  spec.set_batch_size(32);
  spec.set_seed(11);
  spec.set_precision(precision);
  return spec;
}

// The trainer's options for `spec` on CUDA, resolved as the daemon does.
Trainer::Options CudaOptionsFor(const v1::JobSpec& spec) {
  const ResolveContext context{DeviceCapabilities::Probe(torch::kCUDA), 1};
  auto resolved = ResolveJobSpec(spec, context);
  EXPECT_OK(resolved);
  Trainer::Options options;
  if (!resolved.ok()) return options;
  options.job = *std::move(resolved);
  options.device = torch::kCUDA;
  return options;
}

absl::StatusOr<v1::JobResult> RunTrainer(Trainer::Options options, FakeJobContext& context) {
  ASSIGN_OR_RETURN(std::unique_ptr<Trainer> trainer, Trainer::Create(std::move(options)));
  return trainer->Run(context);
}

std::vector<double> ProgressLosses(FakeJobContext& context) {
  std::vector<double> losses;
  for (const v1::JobEvent& e : context.events()) {
    if (e.type() == v1::JobEvent::PROGRESS) losses.push_back(e.job().progress().loss());
  }
  return losses;
}

std::vector<double> ProgressGradNorms(FakeJobContext& context) {
  std::vector<double> norms;
  for (const v1::JobEvent& e : context.events()) {
    if (e.type() == v1::JobEvent::PROGRESS) norms.push_back(e.job().progress().max_grad_norm());
  }
  return norms;
}

TEST(GradientMonitorCudaTest, ObservingAStepNeverWaitsForTheDevice) {
  SKIP_WITHOUT_CUDA();
  std::vector<torch::Tensor> parameters;
  for (int64_t n : {64, 32, 1}) {
    torch::Tensor p = torch::zeros({n}, Cuda()).set_requires_grad(true);
    p.mutable_grad() = torch::randn({n}, Cuda());
    parameters.push_back(p);
  }
  parameters[1].mutable_grad()[0] = std::numeric_limits<float>::infinity();
  GradientMonitor monitor({.parameter_names = {"a", "b", "c"}, .device = torch::kCUDA});
  const torch::Tensor unscale = torch::full({1}, 0.5f, Cuda());
  const torch::Tensor loss = torch::ones({}, Cuda());
  {
    [[maybe_unused]] NoHostSync no_sync;
    for (int i = 0; i < 3; ++i) monitor.Observe(parameters, unscale, loss);
  }
  const GradientMonitor::Interval interval = monitor.Read();
  EXPECT_EQ(interval.steps, 3);
  EXPECT_EQ(interval.non_finite_steps, 3);
  EXPECT_EQ(interval.non_finite_parameters, std::vector<int>{1});
}

TEST(TrainerCudaTest, SkipsDecidedOnTheDeviceStillHoldTheLrSchedule) {
  SKIP_WITHOUT_CUDA();
  // 2^24 overflows float16 gradients for the first few steps only.
  v1::JobSpec spec = CudaSpec(100, "16-mixed");
  spec.mutable_grad_scaler()->set_enabled(true);
  spec.mutable_grad_scaler()->set_init_scale(16777216.0);
  spec.set_lr_schedule("cosine");
  spec.set_warmup_steps(5);
  const Trainer::Options options = CudaOptionsFor(spec);
  FakeJobContext context;
  ASSERT_OK(RunTrainer(options, context));
  const v1::Job job = context.job();
  const int64_t skipped = job.precision_stats().skipped_steps();
  ASSERT_GT(skipped, 0);
  ASSERT_LT(skipped, 80);
  EXPECT_EQ(job.precision_stats().scale(), std::ldexp(1.0, 24 - static_cast<int>(skipped)));
  LrSchedule::Options schedule_options = options.job.lr_schedule;
  schedule_options.total_steps = 100;
  auto schedule = LrSchedule::Create(schedule_options);
  ASSERT_OK(schedule);
  // Step 100's lr: 99 steps, `skipped` of them skipped (all before the last
  // progress read at step 90, which corrected the count).
  EXPECT_DOUBLE_EQ(job.progress().lr(), schedule->LrAt(99 - skipped));
}

struct GraphCase {
  std::string precision;
  bool clip;
};

class CudaGraphTest : public ::testing::TestWithParam<GraphCase> {};

// 40 steps cross an epoch's partial last batch (step 32), which runs eagerly
// between replays.
TEST_P(CudaGraphTest, GraphRunsMatchEagerRuns) {
  SKIP_WITHOUT_CUDA();
  v1::JobSpec spec = CudaSpec(40, GetParam().precision);
  spec.set_progress_every_n_steps(5);
  // The lr changes every step: the graph must read the current one.
  spec.set_lr_schedule("cosine");
  spec.set_warmup_steps(5);
  if (GetParam().clip) spec.set_gradient_clip_norm(0.5);
  Trainer::Options eager = CudaOptionsFor(spec);
  spec.set_cuda_graph(true);
  Trainer::Options graph = CudaOptionsFor(spec);
  FakeJobContext eager_context, graph_context;
  auto eager_result = RunTrainer(eager, eager_context);
  auto graph_result = RunTrainer(graph, graph_context);
  ASSERT_OK(eager_result);
  ASSERT_OK(graph_result);
  // No fallback warning: the step was captured.
  EXPECT_EQ(graph_context.job().warnings_size(), 0) << graph_context.job().warnings(0);
  const std::vector<double> eager_losses = ProgressLosses(eager_context);
  const std::vector<double> graph_losses = ProgressLosses(graph_context);
  ASSERT_EQ(graph_losses.size(), eager_losses.size());
  for (size_t i = 0; i < eager_losses.size(); ++i) {
    EXPECT_NEAR(graph_losses[i], eager_losses[i], 1e-3 * std::abs(eager_losses[i]))
        << "progress " << i;
  }
  EXPECT_LT(graph_losses.back(), graph_losses.front());
  EXPECT_NEAR(graph_result->eval_accuracy(), eager_result->eval_accuracy(), 0.01);
  // The gradient norm, observed inside the captured step, as eagerly.
  const std::vector<double> eager_norms = ProgressGradNorms(eager_context);
  const std::vector<double> graph_norms = ProgressGradNorms(graph_context);
  ASSERT_EQ(graph_norms.size(), eager_norms.size());
  for (size_t i = 0; i < eager_norms.size(); ++i) {
    EXPECT_GT(eager_norms[i], 0) << "progress " << i;
    EXPECT_NEAR(graph_norms[i], eager_norms[i], 1e-2 * eager_norms[i]) << "progress " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, CudaGraphTest,
                         ::testing::Values(GraphCase{"32-true", false},
                                           GraphCase{"16-mixed", false},
                                           GraphCase{"16-mixed", true},
                                           GraphCase{"bf16-mixed", true}),
                         [](const ::testing::TestParamInfo<GraphCase>& info) {
                           std::string name = info.param.precision;
                           for (char& c : name) c = c == '-' ? '_' : c;
                           return name + (info.param.clip ? "_clipped" : "");
                         });

TEST(CudaGraphFallbackTest, JobsThatCannotBeCapturedWarnAndTrainEagerly) {
  SKIP_WITHOUT_CUDA();
  v1::JobSpec sgd = CudaSpec(10, "32-true");
  sgd.set_optimizer("sgd");
  v1::JobSpec accumulating = CudaSpec(10, "32-true");
  accumulating.set_accumulate_grad_batches(2);
  for (v1::JobSpec* spec : {&sgd, &accumulating}) {
    spec->set_cuda_graph(true);
    FakeJobContext context;
    ASSERT_OK(RunTrainer(CudaOptionsFor(*spec), context));
    ASSERT_EQ(context.job().warnings_size(), 1);
    EXPECT_THAT(context.job().warnings(0), HasSubstr("; training eagerly"));
  }
}

TEST(TrainerCudaTest, AFusedRunResumesExactlyWhereItStopped) {
  SKIP_WITHOUT_CUDA();
  testing::TempDir dir;
  v1::JobSpec spec = CudaSpec(40, "16-mixed");
  spec.set_checkpoint_every_n_steps(10);
  spec.set_progress_every_n_steps(5);
  spec.set_cuda_graph(true);
  const Trainer::Options options = CudaOptionsFor(spec);

  Trainer::Options whole = options;
  whole.checkpoint_path = dir.File("whole.pt");
  FakeJobContext whole_context;
  auto whole_result = RunTrainer(whole, whole_context);
  ASSERT_OK(whole_result);

  Trainer::Options first = options;
  first.checkpoint_path = dir.File("first.pt");
  FakeJobContext first_context;
  first_context.set_on_update([](const v1::JobEvent& e, FakeJobContext& ctx) {
    if (e.type() == v1::JobEvent::PROGRESS && e.job().progress().step() == 20) ctx.Cancel();
  });
  EXPECT_FALSE(RunTrainer(first, first_context).ok());
  ASSERT_EQ(first_context.job().checkpoint().step(), 20);

  Trainer::Options second = options;
  second.checkpoint_path = dir.File("second.pt");
  second.resume_path = first.checkpoint_path;
  FakeJobContext second_context;
  auto resumed = RunTrainer(second, second_context);
  ASSERT_OK(resumed);
  EXPECT_NEAR(resumed->final_loss(), whole_result->final_loss(),
              1e-3 * std::abs(whole_result->final_loss()));
}

// bf16_update through the fused AdamW with the grad scaler on: the skip is
// decided on the device, and stochastic rounding draws from a CUDA
// generator. Two runs of a seed are identical; kahan's buffers are counted.
TEST(TrainerCudaTest, CompensatedBf16UpdatesRunFusedAndReproducibly) {
  SKIP_WITHOUT_CUDA();
  for (const std::string rounding : {"kahan", "stochastic"}) {
    SCOPED_TRACE(rounding);
    v1::JobSpec spec = CudaSpec(20, "bf16-true");
    spec.set_bf16_update(rounding);
    spec.mutable_grad_scaler()->set_enabled(true);
    spec.set_progress_every_n_steps(5);
    FakeJobContext first, second;
    auto a = RunTrainer(CudaOptionsFor(spec), first);
    auto b = RunTrainer(CudaOptionsFor(spec), second);
    ASSERT_OK(a);
    ASSERT_OK(b);
    EXPECT_TRUE(std::isfinite(a->final_loss()));
    EXPECT_EQ(a->final_loss(), b->final_loss());
    EXPECT_EQ(first.job().precision_stats().bf16_update(), rounding);
    const v1::MemoryStats& memory = first.job().memory();
    EXPECT_EQ(memory.compensation_bytes(), rounding == "kahan" ? memory.parameter_bytes() : 0);
  }
}

}  // namespace
}  // namespace mantissa
