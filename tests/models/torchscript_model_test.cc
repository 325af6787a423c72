#include "server/models/torchscript_model.h"

#include <gtest/gtest.h>
#include <torch/script.h>

#include <fstream>

#include "server/common/torch_compat.h"
#include "server/models/model_registry.h"
#include "tests/models/train_steps.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/torchscript_writer.h"

namespace mantissa {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::StatusIs;

// 1x4x4 images, 3 classes: the writer's MLP with 16 inputs.
const DataSpec kImages{.input_shape = {1, 4, 4}, .num_classes = 3};

class TorchScriptModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK(testing::WriteTorchScriptMlp(path_, /*in_features=*/16, /*hidden=*/8, /*classes=*/3,
                                           /*seed=*/7));
  }

  std::unique_ptr<Model> Build(const DataSpec& data = kImages) {
    auto model = ModelRegistry::Build("torchscript", {{"path", path_}}, data);
    EXPECT_OK(model);
    return model.ok() ? std::move(*model) : nullptr;
  }

  // Saves `m` next to the MLP and returns its path.
  std::string Save(torch::jit::Module& m, const std::string& name) {
    const std::string path = dir_.File(name);
    m.save(path);
    return path;
  }

  testing::TempDir dir_;
  const std::string path_ = dir_.File("mlp.pt");
};

TEST_F(TorchScriptModelTest, LoadsATrainableClassifier) {
  ASSERT_OK(ModelRegistry::Parse("torchscript", {{"path", path_}}));
  std::unique_ptr<Model> model = Build();
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->Forward(torch::randn({5, 1, 4, 4})).sizes(), torch::IntArrayRef({5, 3}));
  EXPECT_EQ(model->ParameterCount(), 16 * 8 + 8 + 8 * 3 + 3);
  for (const torch::Tensor& p : model->Parameters()) EXPECT_TRUE(p.requires_grad());
  std::vector<std::string> names;
  for (const auto& [name, tensor] : model->State()) names.push_back(name);
  EXPECT_THAT(names, ElementsAre("w1", "b1", "w2", "b2"));
}

TEST_F(TorchScriptModelTest, TheWriterIsDeterministicPerSeed) {
  const std::string again = dir_.File("again.pt");
  const std::string other = dir_.File("other.pt");
  ASSERT_OK(testing::WriteTorchScriptMlp(again, 16, 8, 3, /*seed=*/7));
  ASSERT_OK(testing::WriteTorchScriptMlp(other, 16, 8, 3, /*seed=*/8));
  torch::Tensor w = torch::jit::load(path_).attr("w1").toTensor();
  EXPECT_TRUE(torch::equal(w, torch::jit::load(again).attr("w1").toTensor()));
  EXPECT_FALSE(torch::equal(w, torch::jit::load(other).attr("w1").toTensor()));
}

TEST_F(TorchScriptModelTest, StepsReduceTheLossInFloat32AndBFloat16) {
  for (torch::Dtype dtype : {torch::kFloat32, torch::kBFloat16}) {
    std::unique_ptr<Model> model = Build();
    ASSERT_NE(model, nullptr);
    const torch::Tensor w1 = model->State()[0].second;
    model->ToDtype(dtype);
    for (const torch::Tensor& p : model->Parameters()) {
      EXPECT_EQ(p.scalar_type(), dtype);
      EXPECT_TRUE(p.requires_grad());
    }
    // The cast keeps tensor identity: State() still aliases the parameters.
    EXPECT_TRUE(w1.is_same(model->Parameters()[0]));
    torch::manual_seed(0);
    torch::Tensor x = torch::randn({12, 1, 4, 4}).to(dtype);
    torch::Tensor y = torch::randint(0, 3, {12}, torch::kInt64);
    testing::LossChange loss = testing::TrainOnOneBatch(*model, x, y, /*steps=*/10);
    EXPECT_LT(loss.after, 0.7 * loss.before) << torch::toString(dtype);
  }
}

TEST_F(TorchScriptModelTest, DtypeCastsLeaveIntegerBuffersAlone) {
  // jit::Module::to(dtype) would turn this counter into bfloat16.
  torch::jit::Module m("WithCounter");
  m.register_parameter("w", torch::randn({3, 16}), /*is_buffer=*/false);
  m.register_buffer("calls", torch::zeros({}, torch::kInt64));
  m.define(R"JIT(
def forward(self, x):
    return torch.linear(torch.flatten(x, 1), self.w)
)JIT");
  const std::string path = Save(m, "counter.pt");
  auto model = ModelRegistry::Build("torchscript", {{"path", path}}, kImages);
  ASSERT_OK(model);
  (*model)->ToDtype(torch::kBFloat16);
  NamedTensors state = (*model)->State();
  ASSERT_EQ(state.size(), 2u);
  EXPECT_EQ(state[0].first, "w");
  EXPECT_EQ(state[0].second.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(state[1].first, "calls");
  EXPECT_EQ(state[1].second.scalar_type(), torch::kInt64);
}

TEST_F(TorchScriptModelTest, SetTrainingReachesTheModule) {
  torch::jit::Module m("Mode");
  // Python's torch.jit.script adds it; a C++-built module has to.
  m.register_attribute("training", c10::BoolType::get(), true);
  m.register_parameter("w", torch::randn({3, 16}), /*is_buffer=*/false);
  // Logits scaled by 2 in training mode: shows which flag forward saw.
  m.define(R"JIT(
def forward(self, x):
    y = torch.linear(torch.flatten(x, 1), self.w)
    if self.training:
        return y * 2.0
    return y
)JIT");
  auto model = ModelRegistry::Build("torchscript", {{"path", Save(m, "mode.pt")}}, kImages);
  ASSERT_OK(model);
  torch::Tensor x = torch::randn({2, 1, 4, 4});
  (*model)->SetTraining(false);
  torch::Tensor eval = (*model)->Forward(x);
  (*model)->SetTraining(true);
  EXPECT_TRUE(torch::allclose((*model)->Forward(x), eval * 2.0));
}

TEST_F(TorchScriptModelTest, MissingOrBadFiles) {
  EXPECT_THAT(ModelRegistry::Parse("torchscript", {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("model_options[path]")));
  const std::string missing = dir_.File("missing.pt");
  EXPECT_THAT(ModelRegistry::Parse("torchscript", {{"path", missing}}),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("model_options[path]: " + missing + " not found")));
  EXPECT_THAT(ModelRegistry::Build("torchscript", {{"path", missing}}, kImages),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("not found")));

  const std::string text = dir_.File("text.pt");
  std::ofstream(text) << "not a zip archive\n";
  EXPECT_OK(ModelRegistry::Parse("torchscript", {{"path", text}}));  // does not read it
  EXPECT_THAT(
      ModelRegistry::Build("torchscript", {{"path", text}}, kImages),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("model_options[path]: " + text + " is not a TorchScript module: ")));
}

TEST_F(TorchScriptModelTest, RejectsModulesThatCannotTrainOnTheDataset) {
  torch::jit::Module empty("NoParameters");
  empty.define(R"JIT(
def forward(self, x):
    return torch.flatten(x, 1)
)JIT");
  EXPECT_THAT(
      ModelRegistry::Build("torchscript", {{"path", Save(empty, "empty.pt")}}, kImages),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no floating-point parameters")));

  torch::jit::Module pair("Pair");
  pair.register_parameter("w", torch::randn({3, 16}), /*is_buffer=*/false);
  pair.define(R"JIT(
def forward(self, x):
    y = torch.linear(torch.flatten(x, 1), self.w)
    return (y, y)
)JIT");
  EXPECT_THAT(ModelRegistry::Build("torchscript", {{"path", Save(pair, "pair.pt")}}, kImages),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("returned Tuple"), HasSubstr("one Tensor"))));

  // 3 outputs for 10 classes; 16 inputs for 25 pixels.
  EXPECT_THAT(ModelRegistry::Build("torchscript", {{"path", path_}},
                                   {.input_shape = {1, 4, 4}, .num_classes = 10}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("returned [2, 3]"), HasSubstr("10 classes"))));
  EXPECT_THAT(ModelRegistry::Build("torchscript", {{"path", path_}},
                                   {.input_shape = {1, 5, 5}, .num_classes = 3}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("zero batch [2, 1, 5, 5]"), HasSubstr("failed"))));
}

// The interpreter dispatches each op like eager code, so CPU autocast
// reaches the scripted linear layers: the same bf16 logits as the eager
// computation, on every run (the profiling executor optimises the graph
// after the first runs).
TEST_F(TorchScriptModelTest, RunsItsMatmulsInBFloat16UnderAutocast) {
  std::unique_ptr<Model> model = Build();
  ASSERT_NE(model, nullptr);
  std::vector<torch::Tensor> p = model->Parameters();  // w1, b1, w2, b2
  torch::Tensor x = torch::randn({4, 1, 4, 4});
  compat::AutocastGuard autocast(c10::DeviceType::CPU, torch::kBFloat16);
  torch::Tensor expected =
      torch::linear(torch::relu(torch::linear(x.flatten(1), p[0], p[1])), p[2], p[3]);
  ASSERT_EQ(expected.scalar_type(), torch::kBFloat16);
  for (int run = 0; run < 4; ++run) {
    torch::Tensor out = model->Forward(x);
    EXPECT_EQ(out.scalar_type(), torch::kBFloat16) << "run " << run;
    EXPECT_TRUE(torch::equal(out, expected)) << "run " << run;
  }
}

}  // namespace
}  // namespace mantissa
