#include "server/models/model_registry.h"

#include <gtest/gtest.h>

#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/torchscript_writer.h"

namespace mantissa {
namespace {

using ::testing::_;
using ::testing::HasSubstr;
using testing::StatusIs;

TEST(ModelRegistryTest, MlpHasTheExpectedShapeAndParameterCount) {
  auto model = ModelRegistry::Build("mlp", {{"hidden", "16,8"}, {"activation", "gelu"}},
                                    {.input_shape = {1, 4, 4}, .num_classes = 3});
  ASSERT_OK(model);
  // (16*16+16) + (16*8+8) + (8*3+3)
  EXPECT_EQ((*model)->ParameterCount(), 272 + 136 + 27);
  torch::Tensor out = (*model)->Forward(torch::randn({5, 1, 4, 4}));
  EXPECT_EQ(out.sizes(), torch::IntArrayRef({5, 3}));
}

TEST(ModelRegistryTest, ValidateNamesUnknownModelsAndOptions) {
  EXPECT_OK(ModelRegistry::Parse("mlp", {}));
  EXPECT_THAT(
      ModelRegistry::Parse("gpt5", {}),
      StatusIs(absl::StatusCode::kNotFound, HasSubstr("valid models: mlp, cnn, gpt, torchscript")));
  EXPECT_THAT(ModelRegistry::Parse("mlp", {{"width", "3"}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("unknown option 'width'; valid options: activation, hidden")));
  EXPECT_THAT(ModelRegistry::Parse("mlp", {{"activation", "swish"}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("relu|gelu|tanh")));
  EXPECT_THAT(ModelRegistry::Parse("mlp", {{"hidden", "0"}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("model_options[hidden]")));
}

TEST(ModelRegistryTest, SameSeedSameWeights) {
  const DataSpec data{.input_shape = {6}, .num_classes = 2};
  torch::manual_seed(3);
  auto a = ModelRegistry::Build("mlp", {}, data);
  torch::manual_seed(3);
  auto b = ModelRegistry::Build("mlp", {}, data);
  ASSERT_OK(a);
  ASSERT_OK(b);
  auto pa = (*a)->Parameters();
  auto pb = (*b)->Parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(torch::equal(pa[i], pb[i]));
}

// A dataset each registered model takes, and options that keep it small.
struct Fit {
  std::map<std::string, std::string> options;
  DataSpec data;
};

Fit FitFor(const std::string& name, const std::string& torchscript_path) {
  const DataSpec images{.input_shape = {1, 8, 8}, .num_classes = 3};
  if (name == "gpt") {
    return {{{"d_model", "16"}, {"heads", "2"}, {"layers", "1"}},
            {.task = Task::kLanguageModel, .input_shape = {8}, .vocab_size = 11, .seq_len = 8}};
  }
  if (name == "torchscript") {
    return {{{"path", torchscript_path}}, {.input_shape = {1, 4, 4}, .num_classes = 3}};
  }
  return {{}, images};
}

// What validation accepts, Build builds; and the size estimate (where there
// is one) is the built model's parameter count.
TEST(ModelRegistryTest, EveryModelParsesItsDefaultsAndBuildsWhatItEstimates) {
  testing::TempDir dir;
  const std::string script = dir.File("mlp.pt");
  ASSERT_OK(testing::WriteTorchScriptMlp(script, /*in_features=*/16, /*hidden=*/8, /*classes=*/3,
                                         /*seed=*/1));
  ASSERT_EQ(ModelRegistry::Names().size(), ModelRegistry::Entries().size());
  for (const ModelEntry& entry : ModelRegistry::Entries()) {
    SCOPED_TRACE(entry.name);
    EXPECT_NE(std::string(entry.help), "");
    const Fit fit = FitFor(entry.name, script);
    auto config = ModelRegistry::Parse(entry.name, fit.options);
    ASSERT_OK(config);
    EXPECT_EQ((*config)->name(), entry.name);
    EXPECT_EQ(ModelRegistry::Find(entry.name), &entry);
    EXPECT_OK((*config)->CheckData(fit.data));
    auto model = (*config)->Build(fit.data);
    ASSERT_OK(model);
    const std::optional<ModelSizeEstimate> size = (*config)->EstimateSize(fit.data);
    if (size.has_value()) {
      EXPECT_EQ(size->parameters, static_cast<double>((*model)->ParameterCount()));
      EXPECT_GT(size->activations_per_item, 0);
    }
  }
}

TEST(ModelRegistryTest, ClassifiersRefuseTokenWindowsBeforeBuilding) {
  const DataSpec tokens{
      .task = Task::kLanguageModel, .input_shape = {8}, .vocab_size = 11, .seq_len = 8};
  for (const std::string name : {"mlp", "cnn"}) {
    auto config = ModelRegistry::Parse(name, {});
    ASSERT_OK(config);
    EXPECT_THAT((*config)->Build(tokens), StatusIs(absl::StatusCode::kInvalidArgument,
                                                   HasSubstr("language-model token windows")));
  }
  auto mlp = ModelRegistry::Parse("mlp", {});
  ASSERT_OK(mlp);
  EXPECT_THAT((*mlp)->CheckData(tokens),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("try model gpt")));
}

TEST(ModelRegistryTest, GptWidensTheDataSpecItServes) {
  const DataSpec tokens{
      .task = Task::kLanguageModel, .input_shape = {8}, .vocab_size = 11, .seq_len = 8};
  auto wide = ModelRegistry::Parse("gpt", {{"vocab", "32"}, {"seq_len", "16"}});
  ASSERT_OK(wide);
  const DataSpec own = (*wide)->ModelDataSpec(tokens);
  EXPECT_EQ(own.vocab_size, 32);
  EXPECT_EQ(own.seq_len, 16);
  auto plain = ModelRegistry::Parse("gpt", {});
  ASSERT_OK(plain);
  EXPECT_EQ((*plain)->ModelDataSpec(tokens).vocab_size, 11);
  auto mlp = ModelRegistry::Parse("mlp", {});
  ASSERT_OK(mlp);
  EXPECT_EQ((*mlp)->ModelDataSpec(tokens).seq_len, 8);
}

TEST(ModelRegistryTest, HugeModelsAreResourceExhaustedNotACrash) {
  // ~2^42 parameters: far beyond any host.
  auto config = ModelRegistry::Parse("mlp", {{"hidden", "4194304,1048576"}});
  ASSERT_OK(config);
  const DataSpec data{.input_shape = {1048576}, .num_classes = 2};
  ASSERT_TRUE((*config)->EstimateSize(data).has_value());
  EXPECT_GT((*config)->EstimateSize(data)->parameters, 4e12);
  EXPECT_THAT((*config)->Build(data), StatusIs(absl::StatusCode::kResourceExhausted, _));
}

TEST(ModelRegistryTest, MlpForwardLayersEndInForward) {
  auto model = ModelRegistry::Build("mlp", {{"hidden", "8,4"}},
                                    {.input_shape = {1, 4, 4}, .num_classes = 3});
  ASSERT_OK(model);
  torch::Tensor x = torch::randn({5, 1, 4, 4});
  const auto layers = (*model)->ForwardLayers(x);
  // flatten, linear, relu, linear, relu, linear.
  ASSERT_EQ(layers.size(), 6u);
  for (size_t i = 0; i < layers.size(); ++i) EXPECT_EQ(layers[i].first, std::to_string(i));
  EXPECT_EQ(layers[0].second.sizes(), torch::IntArrayRef({5, 16}));
  EXPECT_EQ(layers[1].second.sizes(), torch::IntArrayRef({5, 8}));
  EXPECT_GE(layers[2].second.min().item<float>(), 0.0f);  // after ReLU
  EXPECT_TRUE(torch::equal(layers.back().second, (*model)->Forward(x)));
}

}  // namespace
}  // namespace mantissa
