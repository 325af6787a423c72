#include "server/artifacts/checkpoint.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "server/models/model_registry.h"
#include "server/precision/fp32_precision.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace mantissa {
namespace {

using ::testing::HasSubstr;
using testing::StatusIs;

struct TrainingRun {
  std::unique_ptr<Model> model;
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  Fp32Precision precision;

  Checkpoint::Parts parts() { return {model.get(), optimizer.get(), &precision, torch::kCPU}; }

  // A few AdamW steps on fixed data, so the optimizer has state.
  torch::Tensor Train(int steps) {
    torch::Tensor x = torch::randn({8, 6});
    torch::Tensor y = torch::randint(0, 3, {8}, torch::kInt64);
    torch::Tensor loss;
    for (int i = 0; i < steps; ++i) {
      optimizer->zero_grad();
      loss = torch::nn::functional::cross_entropy(model->Forward(x), y);
      loss.backward();
      optimizer->step();
    }
    return loss.detach();
  }
};

std::unique_ptr<TrainingRun> MakeRun(int64_t hidden = 16) {
  std::map<std::string, std::string> options = {{"hidden", std::to_string(hidden)}};
  auto config = ModelRegistry::Parse("mlp", options);
  EXPECT_OK(config);
  auto model = (*config)->Build({.input_shape = {6}, .num_classes = 3});
  EXPECT_OK(model);
  auto run = std::make_unique<TrainingRun>();
  run->model = std::move(*model);
  run->optimizer = std::make_unique<torch::optim::AdamW>(run->model->Parameters(),
                                                         torch::optim::AdamWOptions(1e-2));
  return run;
}

TEST(CheckpointTest, RoundTripRestoresWeightsOptimizerPositionAndRng) {
  testing::TempDir dir;
  const std::string path = Checkpoint::PathFor(dir.path(), "job1");
  EXPECT_EQ(path, dir.path() + "/jobs/job1/checkpoint.pt");

  torch::manual_seed(1);
  std::unique_ptr<TrainingRun> a = MakeRun();
  a->Train(3);
  auto bytes =
      Checkpoint::Save(path, {.step = 3, .next_batch = 6, .applied_steps = 2, .last_loss = 0.5},
                       "{\"model\":\"mlp\"}", a->parts());
  ASSERT_OK(bytes);
  EXPECT_EQ(*bytes, static_cast<int64_t>(std::filesystem::file_size(path)));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  const torch::Tensor after_save = torch::rand({4});  // draws from the saved RNG state

  torch::manual_seed(99);
  std::unique_ptr<TrainingRun> b = MakeRun();
  auto position = Checkpoint::Load(path, b->parts());
  ASSERT_OK(position);
  EXPECT_EQ(position->step, 3);
  EXPECT_EQ(position->next_batch, 6);
  EXPECT_EQ(position->applied_steps, 2);
  EXPECT_DOUBLE_EQ(position->last_loss, 0.5);
  EXPECT_TRUE(torch::equal(torch::rand({4}), after_save));
  const NamedTensors sa = a->model->State();
  const NamedTensors sb = b->model->State();
  ASSERT_EQ(sa.size(), sb.size());
  for (size_t i = 0; i < sa.size(); ++i) {
    EXPECT_EQ(sa[i].first, sb[i].first);
    EXPECT_TRUE(torch::equal(sa[i].second, sb[i].second)) << sa[i].first;
  }
  // With the optimizer state restored too, both continue identically.
  torch::manual_seed(5);
  const torch::Tensor la = a->Train(2);
  torch::manual_seed(5);
  const torch::Tensor lb = b->Train(2);
  EXPECT_TRUE(torch::equal(la, lb));

  auto weights = Checkpoint::ReadModelState(path);
  ASSERT_OK(weights);
  ASSERT_EQ(weights->size(), sa.size());
  EXPECT_EQ((*weights)[0].first, "1.weight");  // Flatten is module 0
}

TEST(CheckpointTest, ADifferentModelIsRefusedNamingTheTensor) {
  testing::TempDir dir;
  const std::string path = dir.File("c.pt");
  std::unique_ptr<TrainingRun> a = MakeRun(16);
  ASSERT_OK(Checkpoint::Save(path, {}, "{}", a->parts()));
  std::unique_ptr<TrainingRun> b = MakeRun(8);
  EXPECT_THAT(Checkpoint::Load(path, b->parts()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("does not match the model: it holds 1.weight")));
}

TEST(CheckpointTest, MissingAndCorruptFilesAreErrors) {
  testing::TempDir dir;
  std::unique_ptr<TrainingRun> run = MakeRun();
  EXPECT_THAT(Checkpoint::Load(dir.File("none.pt"), run->parts()),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  { std::ofstream(dir.File("bad.pt")) << "not a checkpoint"; }
  EXPECT_THAT(Checkpoint::Load(dir.File("bad.pt"), run->parts()),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("reading checkpoint")));
}

TEST(CheckpointTest, KeepPreviousKeepsTheNewestNAndTheNewestStaysAtPath) {
  testing::TempDir dir;
  const std::string path = Checkpoint::PathFor(dir.path(), "job1");
  const std::filesystem::path job_dir = std::filesystem::path(path).parent_path();
  std::unique_ptr<TrainingRun> run = MakeRun();
  int64_t previous = 0;
  for (int64_t step : {10, 20, 30, 40}) {
    ASSERT_OK(Checkpoint::KeepPrevious(path, previous, /*keep=*/3));
    ASSERT_OK(Checkpoint::Save(path, {.step = step}, "{}", run->parts()));
    previous = step;
  }
  EXPECT_FALSE(std::filesystem::exists(job_dir / "checkpoint-10.pt"));
  EXPECT_TRUE(std::filesystem::exists(job_dir / "checkpoint-20.pt"));
  EXPECT_TRUE(std::filesystem::exists(job_dir / "checkpoint-30.pt"));
  auto newest = Checkpoint::Load(path, run->parts());
  ASSERT_OK(newest);
  EXPECT_EQ(newest->step, 40);
  auto kept = Checkpoint::Load((job_dir / "checkpoint-20.pt").string(), run->parts());
  ASSERT_OK(kept);
  EXPECT_EQ(kept->step, 20);

  // keep=1 (the default) keeps only the file at `path`.
  ASSERT_OK(Checkpoint::KeepPrevious(path, previous, /*keep=*/1));
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(job_dir)) {
    (void)entry;
    ++files;
  }
  EXPECT_EQ(files, 1);
  EXPECT_TRUE(std::filesystem::exists(path));
}

}  // namespace
}  // namespace mantissa
