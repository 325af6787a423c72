#include "server/training/data_parallel.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <future>
#include <numeric>
#include <thread>

#include "absl/strings/match.h"
#include "server/common/file_roots.h"
#include "server/models/mlp.h"
#include "server/precision/transformer_engine_precision.h"
#include "server/training/batch_loader.h"
#include "server/training/job_spec_resolver.h"
#include "server/training/trainer.h"
#include "tests/testing/fake_job_context.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace mantissa {
namespace {

using testing::FakeJobContext;
using ::testing::HasSubstr;
using testing::StatusIs;

// Runs fn(rank, group) on `world` threads, each rank with its own group over
// 127.0.0.1: rank 0 hosts the store on a free port and hands it to the rest.
void OnRanks(int world, const std::function<void(int, DataParallel&)>& fn,
             absl::Duration timeout = absl::Seconds(30)) {
  std::promise<int> port;
  std::shared_future<int> ready = port.get_future().share();
  std::vector<std::thread> threads;
  for (int rank = 0; rank < world; ++rank) {
    threads.emplace_back([&, rank] {
      at::set_num_threads(1);
      DataParallel::Options options{.rank = rank,
                                    .world_size = world,
                                    .master_port = rank == 0 ? 0 : ready.get(),
                                    .store_prefix = "test/1",
                                    .timeout = timeout};
      if (rank == 0) options.on_store_ready = [&](int p) { port.set_value(p); };
      absl::StatusOr<std::unique_ptr<DataParallel>> group = DataParallel::Create(options);
      ASSERT_OK(group);
      fn(rank, **group);
    });
  }
  for (std::thread& t : threads) t.join();
}

TEST(DataParallelTest, CollectivesSumMaxBroadcastAndAgree) {
  std::vector<int64_t> agreed(2);
  std::vector<torch::Tensor> sums(2), maxes(2), broadcast(2);
  OnRanks(2, [&](int rank, DataParallel& dp) {
    EXPECT_EQ(dp.world_size(), 2);
    EXPECT_EQ(dp.backend(), "gloo");
    agreed[rank] = dp.AgreeMax(rank == 1 ? 3 : 1);
    sums[rank] = torch::tensor({1.0 + rank, 10.0 * rank}, torch::kFloat64);
    dp.AllReduceSum(sums[rank]);
    maxes[rank] = torch::tensor({static_cast<float>(rank), 5.0f - rank});
    dp.AllReduceMax(maxes[rank]);
    // Mixed dtypes, a 0-dim tensor and a bf16 one, as a model's state has.
    broadcast[rank] = torch::full({3}, rank + 1.0, torch::kBFloat16);
    torch::Tensor steps = torch::full({}, int64_t{rank + 7});
    dp.Broadcast({broadcast[rank], steps});
    EXPECT_EQ(steps.item<int64_t>(), 7);
  });
  EXPECT_EQ(agreed, (std::vector<int64_t>{3, 3}));
  for (int r = 0; r < 2; ++r) {
    EXPECT_TRUE(torch::equal(sums[r], torch::tensor({3.0, 10.0}, torch::kFloat64)));
    EXPECT_TRUE(torch::equal(maxes[r], torch::tensor({1.0f, 5.0f})));
    EXPECT_TRUE(torch::equal(broadcast[r], torch::ones({3}, torch::kBFloat16)));
  }
}

TEST(DataParallelTest, GradientsAreSummedInBucketsAndMissingOnesCountAsZeros) {
  std::vector<std::vector<torch::Tensor>> params(2);
  OnRanks(2, [&](int rank, DataParallel& dp) {
    // Four parameters, small buckets: several collectives per dtype.
    std::vector<torch::Tensor>& p = params[rank];
    for (int i = 0; i < 4; ++i) p.push_back(torch::zeros({5}, torch::requires_grad()));
    p[0].mutable_grad() = torch::full({5}, 1.0 + rank);
    if (rank == 0) p[1].mutable_grad() = torch::full({5}, 4.0);  // rank 1 has none
    p[3].mutable_grad() = torch::full({5}, 2.0);                 // p[2]: no rank has one
    dp.AllReduceGradients(p);
  });
  for (int r = 0; r < 2; ++r) {
    EXPECT_TRUE(torch::equal(params[r][0].grad(), torch::full({5}, 3.0)));
    EXPECT_TRUE(torch::equal(params[r][1].grad(), torch::full({5}, 4.0)));
    EXPECT_FALSE(params[r][2].grad().defined());
    EXPECT_TRUE(torch::equal(params[r][3].grad(), torch::full({5}, 4.0)));
  }
}

TEST(DataParallelTest, ARendezvousWithAMissingRankTimesOutNamingTheStore) {
  auto group = DataParallel::Create({.rank = 0,
                                     .world_size = 2,
                                     .store_prefix = "lonely/1",
                                     .timeout = absl::Milliseconds(1500)});
  EXPECT_THAT(group, StatusIs(absl::StatusCode::kDeadlineExceeded,
                              ::testing::AllOf(HasSubstr("127.0.0.1:"), HasSubstr("all 2 ranks"))));
  // A rank whose store is not there.
  auto orphan = DataParallel::Create({.rank = 1,
                                      .world_size = 2,
                                      .master_port = 1,
                                      .store_prefix = "lonely/1",
                                      .timeout = absl::Milliseconds(1000)});
  EXPECT_THAT(orphan, StatusIs(absl::StatusCode::kDeadlineExceeded,
                               ::testing::AllOf(HasSubstr("rank 1 of 2"), HasSubstr("127.0.0.1:1 "),
                                                HasSubstr("all 2 ranks"))));
}

TEST(DataParallelTest, RejectsABadRank) {
  EXPECT_THAT(DataParallel::Create({.rank = 2, .world_size = 2}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rank 2 of world size 2")));
}

TEST(DataParallelTest, Fp8AmaxesAreReducedOverTheRanksOncePerStep) {
  // Rank 0 trains on a batch; rank 1's share is empty and runs no backward.
  // Both take rank 0's amaxes at the optimizer step, so they quantize the
  // next step with the same scales.
  std::vector<float> input_scale(2), grad_scale(2), scale_after_backward(2);
  float rank0_input_amax = 0;
  OnRanks(2, [&](int rank, DataParallel& dp) {
    TransformerEnginePrecision::Options options;
    options.backend = Fp8Backend::kEmulated;
    auto plugin = TransformerEnginePrecision::Create(options);
    ASSERT_OK(plugin);
    std::unique_ptr<Model> model =
        Mlp::Build({.hidden = {64}}, {.input_shape = {32}, .num_classes = 16});
    (*plugin)->ConvertModule(*model);
    ASSERT_EQ((*plugin)->fp8_layers().size(), 2u);
    (*plugin)->SetAmaxReducer([&dp](const torch::Tensor& t) { dp.AllReduceMax(t); });
    torch::optim::SGD sgd(model->Parameters(), torch::optim::SGDOptions(0.1));
    model->SetTraining(true);
    const Fp8LinearState& state = (*plugin)->fp8_layers()[0].second->fp8_state();
    if (rank == 0) {
      const torch::Tensor x = (*plugin)->ConvertInput(torch::randn({4, 32}) * 3);
      rank0_input_amax = x.abs().max().to(torch::kFloat32).item<float>();
      torch::Tensor logits;
      {
        auto guard = (*plugin)->ForwardGuard();
        logits = model->Forward(x);
      }
      (*plugin)->Backward(torch::nn::functional::cross_entropy((*plugin)->ConvertOutput(logits),
                                                               torch::tensor({0, 1, 2, 3})));
    }
    scale_after_backward[rank] = state.input.scale().item<float>();
    (*plugin)->OptimizerStep(sgd);
    input_scale[rank] = state.input.scale().item<float>();
    grad_scale[rank] = state.grad_output.scale().item<float>();
  });
  EXPECT_EQ(scale_after_backward[0], 1.0f);  // not before every rank's amaxes are in
  EXPECT_FLOAT_EQ(input_scale[0], 448.0f / rank0_input_amax);
  EXPECT_EQ(input_scale[1], input_scale[0]);
  EXPECT_NE(grad_scale[0], 1.0f);
  EXPECT_EQ(grad_scale[1], grad_scale[0]);
}

// --- The batch loader's rank split.

TEST(DataParallelBatchLoaderTest, RanksSplitEveryGlobalBatchAndCoverTheEpochOnce) {
  // 23 items, batch 4 per rank, 2 ranks: global batches of 8, 8 and 7; with
  // batch 11 per rank on 2 ranks the last global batch has 1 item and rank
  // 1's share of it is empty.
  for (const int64_t batch_size : {4, 11}) {
    const TensorDataset data(torch::arange(23, torch::kFloat32).unsqueeze(1), torch::arange(23));
    const int64_t per_epoch = BatchLoader::BatchesPerEpoch(23, batch_size, 2);
    auto single = BatchLoader::Create(
        {.dataset = &data, .batch_size = 2 * batch_size, .seed = 5, .end_batch = 2 * per_epoch});
    auto rank0 = BatchLoader::Create({.dataset = &data,
                                      .batch_size = batch_size,
                                      .seed = 5,
                                      .end_batch = 2 * per_epoch,
                                      .rank = 0,
                                      .world_size = 2});
    auto rank1 = BatchLoader::Create({.dataset = &data,
                                      .batch_size = batch_size,
                                      .seed = 5,
                                      .end_batch = 2 * per_epoch,
                                      .rank = 1,
                                      .world_size = 2});
    ASSERT_OK(single);
    ASSERT_OK(rank0);
    ASSERT_OK(rank1);
    EXPECT_EQ((*rank0)->batches_per_epoch(), (*single)->batches_per_epoch());
    std::vector<int64_t> epoch;
    for (int64_t b = 0; b < 2 * per_epoch; ++b) {
      auto whole = (*single)->Next();
      auto a = (*rank0)->Next();
      auto c = (*rank1)->Next();
      ASSERT_OK(whole);
      ASSERT_OK(a);
      ASSERT_OK(c);
      EXPECT_EQ(a->targets.size(0) + c->targets.size(0),
                BatchLoader::GlobalBatchItems(23, batch_size, 2, b));
      std::vector<int64_t> both, expected;
      for (const Batch* batch : {&*a, &*c}) {
        const torch::Tensor t = batch->targets.contiguous();
        both.insert(both.end(), t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
      }
      const torch::Tensor w = whole->targets.contiguous();
      expected.assign(w.data_ptr<int64_t>(), w.data_ptr<int64_t>() + w.numel());
      epoch.insert(epoch.end(), both.begin(), both.end());
      std::sort(both.begin(), both.end());
      std::sort(expected.begin(), expected.end());
      EXPECT_EQ(both, expected) << "batch " << b;
      if (b % per_epoch == per_epoch - 1) {
        std::sort(epoch.begin(), epoch.end());
        std::vector<int64_t> all(23);
        std::iota(all.begin(), all.end(), 0);
        EXPECT_EQ(epoch, all) << "epoch of batch " << b;
        epoch.clear();
      }
    }
    if (batch_size == 11) {
      EXPECT_EQ(BatchLoader::GlobalBatchItems(23, 11, 2, 1), 1);
    }
  }
}

// --- Training on two ranks against one process with the global batch.

v1::JobSpec Spec(int64_t train_size, int64_t batch_size, int64_t steps) {
  v1::JobSpec spec;
  spec.set_model("mlp");
  (*spec.mutable_model_options())["hidden"] = "32";
  spec.set_dataset("synthetic");
  (*spec.mutable_dataset_options())["train_size"] = std::to_string(train_size);
  (*spec.mutable_dataset_options())["test_size"] = "64";
  spec.set_steps(steps);
  spec.set_batch_size(batch_size);
  spec.set_seed(3);
  spec.set_progress_every_n_steps(1);
  spec.set_memory_baseline_steps(0);
  return spec;
}

Trainer::Options OptionsFor(const v1::JobSpec& spec, const ResolveContext& context) {
  auto resolved = ResolveJobSpec(spec, context);
  EXPECT_OK(resolved);
  Trainer::Options options;
  if (resolved.ok()) options.job = *std::move(resolved);
  return options;
}

const ResolveContext& Cpu() {
  static const ResolveContext* const cpu =
      new ResolveContext{DeviceCapabilities::Probe(torch::kCPU), 1};
  return *cpu;
}

struct RankRun {
  absl::StatusOr<v1::JobResult> result = absl::UnknownError("not run");
  std::vector<double> losses;  // per progress report
  std::vector<torch::Tensor> weights;
  v1::Job job;
  std::vector<v1::JobEvent> events;
  int64_t skipped_steps = 0;
  double scale = 0;
};

void Collect(Trainer& trainer, FakeJobContext& context, RankRun& run) {
  for (const v1::JobEvent& e : context.events()) {
    if (e.type() == v1::JobEvent::PROGRESS) run.losses.push_back(e.job().progress().loss());
  }
  for (const torch::Tensor& p : trainer.model().Parameters()) {
    run.weights.push_back(p.detach().clone());
  }
  run.job = context.job();
  run.events = context.events();
  if (const GradScaler* scaler = trainer.precision().grad_scaler();
      scaler != nullptr && scaler->enabled()) {
    run.skipped_steps = scaler->skipped_steps();
    run.scale = scaler->scale();
  }
}

// One process, as the daemon trains devices = 1.
RankRun Single(Trainer::Options options) {
  at::set_num_threads(1);
  RankRun run;
  auto trainer = Trainer::Create(std::move(options));
  EXPECT_OK(trainer);
  if (!trainer.ok()) return run;
  FakeJobContext context;
  run.result = (*trainer)->Run(context);
  Collect(**trainer, context, run);
  return run;
}

// `world` ranks on threads; `on_update` sees each rank's events.
std::vector<RankRun> Ranks(
    int world, const std::function<Trainer::Options(int)>& options_for,
    const std::function<void(int, const v1::JobEvent&, FakeJobContext&)>& on_update = nullptr) {
  std::vector<RankRun> runs(world);
  OnRanks(world, [&](int rank, DataParallel& dp) {
    Trainer::Options options = options_for(rank);
    options.data_parallel = &dp;
    auto trainer = Trainer::Create(std::move(options));
    ASSERT_OK(trainer);
    FakeJobContext context;
    if (on_update) {
      context.set_on_update(
          [&, rank](const v1::JobEvent& e, FakeJobContext& c) { on_update(rank, e, c); });
    }
    runs[rank].result = (*trainer)->Run(context);
    Collect(**trainer, context, runs[rank]);
  });
  return runs;
}

double MaxRelativeDifference(const std::vector<double>& a, const std::vector<double>& b) {
  double worst = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    worst = std::max(worst, std::abs(a[i] - b[i]) / std::max(1e-12, std::abs(b[i])));
  }
  return worst;
}

double MaxWeightDifference(const std::vector<torch::Tensor>& a,
                           const std::vector<torch::Tensor>& b) {
  double worst = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    worst = std::max(
        worst, (a[i].to(torch::kFloat64) - b[i].to(torch::kFloat64)).abs().max().item<double>());
  }
  return worst;
}

struct EquivalenceCase {
  std::string precision;
  int64_t accumulate;
  double loss_tolerance;    // relative, per step
  double weight_tolerance;  // absolute, after the run
};

void PrintTo(const EquivalenceCase& c, std::ostream* os) {
  *os << c.precision << ", accumulate_grad_batches " << c.accumulate;
}

class DataParallelEquivalenceTest : public ::testing::TestWithParam<EquivalenceCase> {};

TEST_P(DataParallelEquivalenceTest, TwoRanksOfBatchBTrainLikeOneProcessOfBatch2B) {
  const EquivalenceCase& c = GetParam();
  // 97 items, global batch 32: every epoch ends with a batch of 1 item, on
  // rank 0; rank 1's share of it is empty. 12 steps are 3 epochs (6 with 2
  // batches a step).
  auto spec_for = [&](int64_t batch_size) {
    v1::JobSpec spec = Spec(97, batch_size, 12);
    spec.set_precision(c.precision);
    spec.set_accumulate_grad_batches(c.accumulate);
    return spec;
  };
  const RankRun single = Single(OptionsFor(spec_for(32), Cpu()));
  ASSERT_OK(single.result);
  const std::vector<RankRun> ranks = Ranks(2, [&](int) { return OptionsFor(spec_for(16), Cpu()); });
  ASSERT_EQ(single.losses.size(), 12u);
  for (int r = 0; r < 2; ++r) {
    ASSERT_OK(ranks[r].result);
    ASSERT_EQ(ranks[r].losses.size(), 12u) << "rank " << r;
    EXPECT_LT(MaxRelativeDifference(ranks[r].losses, single.losses), c.loss_tolerance)
        << "rank " << r;
    EXPECT_LT(MaxWeightDifference(ranks[r].weights, single.weights), c.weight_tolerance)
        << "rank " << r;
  }
  // The ranks hold the same weights, and agree on the loss exactly.
  EXPECT_EQ(MaxWeightDifference(ranks[0].weights, ranks[1].weights), 0.0);
  EXPECT_EQ(ranks[0].losses, ranks[1].losses);
  // Rank 0 evaluates for the job; the others report no evaluation.
  EXPECT_TRUE(ranks[0].result->has_eval_accuracy());
  EXPECT_FALSE(ranks[1].result->has_eval_accuracy());
  EXPECT_EQ(ranks[0].job.world_size(), 2);
  EXPECT_EQ(ranks[0].job.global_batch_size(), 32 * c.accumulate);
  EXPECT_EQ(single.job.world_size(), 1);
  EXPECT_EQ(single.job.global_batch_size(), 32 * c.accumulate);
  const std::string announced = c.accumulate == 1
                                    ? "2 ranks x batch 16 = global batch 32"
                                    : "2 ranks x batch 16 x 2 accumulated = global batch 64";
  bool found = false;
  for (const v1::JobEvent& e : ranks[0].events) {
    found = found || absl::StrContains(e.message(), announced);
  }
  EXPECT_TRUE(found) << announced;
}

// 32-true: the ranks' weighted per-rank means equal the global mean up to
// float32 rounding of a differently ordered sum (~1e-7 relative per step).
// bf16-mixed: the matmuls round to bf16 (8-bit mantissa, 2^-8 relative),
// and a batch of 16 rows may take another kernel blocking than one of 32, so
// a product can round one bf16 ulp apart; over 12 steps that stays well
// under 1%.
// 64-true: the weights agree to fp64 rounding (2.8e-17 measured), but the
// loss is computed from logits converted back to float32 (Fabric's
// convert_output), so it differs by float32 rounding (9.8e-8 measured).
// bf16-true: the weights themselves are bf16; the summed gradients round to
// bf16 once more, and a weight may land one bf16 ulp away (4.9e-4 measured,
// 2^-11 at these magnitudes; the loss 4.2e-4). The bounds are 8x and 10x.
INSTANTIATE_TEST_SUITE_P(DataParallel, DataParallelEquivalenceTest,
                         ::testing::Values(EquivalenceCase{"32-true", 1, 1e-5, 1e-5},
                                           EquivalenceCase{"32-true", 2, 1e-5, 1e-5},
                                           EquivalenceCase{"bf16-mixed", 1, 1e-2, 1e-2},
                                           EquivalenceCase{"64-true", 1, 1e-6, 1e-12},
                                           EquivalenceCase{"bf16-true", 1, 5e-3, 4e-3}),
                         [](const ::testing::TestParamInfo<EquivalenceCase>& info) {
                           std::string name = info.param.precision + "_accumulate" +
                                              std::to_string(info.param.accumulate);
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

TEST(DataParallelTrainerTest, AnOverflowOnOneRankSkipsTheStepOnEveryRank) {
  // One row's feature is so large that its scaled gradients overflow: the
  // rank whose share holds it finds inf, the other does not.
  testing::TempDir dir;
  {
    std::ofstream csv(dir.File("data.csv"));
    csv << "a,b,label\n";
    for (int i = 0; i < 63; ++i)
      csv << (i % 7) * 0.1 << "," << (i % 5) * 0.2 << "," << i % 2 << "\n";
    csv << "1e36,0.5,1\n";
  }
  ResolveContext context = Cpu();
  context.data_roots = FileRoots({dir.path()}, "mantissad --data_root");
  auto spec_for = [&](int64_t batch_size) {
    v1::JobSpec spec;
    spec.set_model("mlp");
    spec.set_dataset("csv");
    (*spec.mutable_dataset_options())["path"] = dir.File("data.csv");
    (*spec.mutable_dataset_options())["normalize"] = "false";
    (*spec.mutable_dataset_options())["test_fraction"] = "0";
    spec.set_batch_size(batch_size);
    spec.set_steps(4);  // one epoch of global batches of 16
    spec.set_seed(9);
    spec.set_progress_every_n_steps(1);
    spec.set_memory_baseline_steps(0);
    spec.mutable_grad_scaler()->set_enabled(true);
    return spec;
  };
  const RankRun single = Single(OptionsFor(spec_for(16), context));
  ASSERT_OK(single.result);
  EXPECT_EQ(single.skipped_steps, 1);
  const std::vector<RankRun> ranks = Ranks(2, [&](int) {
    v1::JobSpec spec = spec_for(8);
    spec.set_cuda_graph(true);  // refused with a warning: the ranks train eagerly
    return OptionsFor(spec, context);
  });
  for (int r = 0; r < 2; ++r) {
    ASSERT_OK(ranks[r].result);
    EXPECT_EQ(ranks[r].skipped_steps, single.skipped_steps) << "rank " << r;
    EXPECT_EQ(ranks[r].scale, single.scale) << "rank " << r;
    EXPECT_EQ(ranks[r].job.precision_stats().skipped_steps(), 1) << "rank " << r;
  }
  EXPECT_EQ(single.scale, 32768.0);
  EXPECT_THAT(ranks[0].job.warnings(),
              ::testing::Contains(HasSubstr("cuda_graph: not with data-parallel training")));
  EXPECT_EQ(MaxWeightDifference(ranks[0].weights, ranks[1].weights), 0.0);
}

TEST(DataParallelTrainerTest, ResumedRanksEndWhereAnUninterruptedRunEnds) {
  testing::TempDir dir;
  v1::JobSpec spec = Spec(101, 16, 10);
  spec.set_checkpoint_every_n_steps(3);
  const Trainer::Options base = OptionsFor(spec, Cpu());
  const std::vector<RankRun> whole = Ranks(2, [&](int) {
    Trainer::Options options = base;
    options.checkpoint_path = dir.File("whole.pt");
    return options;
  });
  // Only rank 0 is asked to stop, after step 4: both stop there, and rank 0
  // alone writes the checkpoint of step 4.
  const std::vector<RankRun> first = Ranks(
      2,
      [&](int) {
        Trainer::Options options = base;
        options.checkpoint_path = dir.File("job.pt");
        return options;
      },
      [](int rank, const v1::JobEvent& e, FakeJobContext& context) {
        if (rank == 0 && e.type() == v1::JobEvent::PROGRESS && e.job().progress().step() == 4) {
          context.Cancel();
        }
      });
  for (int r = 0; r < 2; ++r) {
    EXPECT_THAT(first[r].result, StatusIs(absl::StatusCode::kCancelled, HasSubstr("step 4")))
        << "rank " << r;
  }
  EXPECT_EQ(first[0].job.checkpoint().step(), 4);
  EXPECT_FALSE(first[1].job.has_checkpoint());
  const std::vector<RankRun> resumed = Ranks(2, [&](int) {
    Trainer::Options options = base;
    options.checkpoint_path = dir.File("job.pt");
    options.resume_path = dir.File("job.pt");
    return options;
  });
  for (int r = 0; r < 2; ++r) {
    ASSERT_OK(whole[r].result);
    ASSERT_OK(resumed[r].result);
    EXPECT_EQ(resumed[r].result->final_loss(), whole[r].result->final_loss()) << "rank " << r;
    EXPECT_EQ(MaxWeightDifference(resumed[r].weights, whole[r].weights), 0.0) << "rank " << r;
    EXPECT_EQ(resumed[r].job.start_step(), 4);
  }
}

}  // namespace
}  // namespace mantissa
