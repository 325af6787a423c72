#include "server/models/cnn.h"

#include <gtest/gtest.h>

#include "server/common/torch_compat.h"
#include "server/models/model_registry.h"
#include "tests/models/train_steps.h"
#include "tests/testing/status_matchers.h"

namespace mantissa {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using testing::StatusIs;

const DataSpec kMnist{.input_shape = {1, 28, 28}, .num_classes = 10};
const DataSpec kCifar{.input_shape = {3, 32, 32}, .num_classes = 10};

TEST(CnnTest, ClassifiesGrayAndColourImages) {
  for (const DataSpec& data : {kMnist, kCifar}) {
    auto model = ModelRegistry::Build("cnn", {}, data);
    ASSERT_OK(model);
    std::vector<int64_t> shape = {4};
    shape.insert(shape.end(), data.input_shape.begin(), data.input_shape.end());
    torch::Tensor out = (*model)->Forward(torch::randn(shape));
    EXPECT_EQ(out.sizes(), torch::IntArrayRef({4, 10}));
  }
}

TEST(CnnTest, FlattenedSizeFollowsTheInputShape) {
  // 8x8 -> conv (same size) -> pool -> 4x4 with 4 channels: 64 features.
  auto model =
      ModelRegistry::Build("cnn", {{"channels", "4"}, {"hidden", "8"}, {"batchnorm", "false"}},
                           {.input_shape = {1, 8, 8}, .num_classes = 3});
  ASSERT_OK(model);
  // conv 1*4*25 + 4, fc 64*8 + 8, out 8*3 + 3
  EXPECT_EQ((*model)->ParameterCount(), 104 + 520 + 27);
  EXPECT_EQ((*model)->Forward(torch::randn({2, 1, 8, 8})).sizes(), torch::IntArrayRef({2, 3}));

  // Odd and non-square sizes floor at each pooling: 13x9 -> 6x4 -> 3x2.
  auto odd = ModelRegistry::Build("cnn", {{"channels", "4,6"}},
                                  {.input_shape = {2, 13, 9}, .num_classes = 5});
  ASSERT_OK(odd);
  EXPECT_EQ((*odd)->Forward(torch::randn({3, 2, 13, 9})).sizes(), torch::IntArrayRef({3, 5}));
}

TEST(CnnTest, BatchNormFollowsEachConvolution) {
  auto model = ModelRegistry::Build("cnn", {}, kMnist);
  ASSERT_OK(model);
  std::vector<std::string> names;
  for (const auto& [name, tensor] : (*model)->State()) names.push_back(name);
  EXPECT_THAT(names, ::testing::IsSupersetOf({"0.weight", "1.weight", "1.running_mean",
                                              "1.num_batches_tracked", "5.running_var"}));
  // The conv bias would duplicate BatchNorm's shift.
  EXPECT_THAT(names, ::testing::Not(::testing::Contains("0.bias")));

  auto plain = ModelRegistry::Build("cnn", {{"batchnorm", "false"}}, kMnist);
  ASSERT_OK(plain);
  for (const auto& [name, tensor] : (*plain)->State()) {
    EXPECT_THAT(name, ::testing::Not(HasSubstr("running"))) << name;
  }
}

TEST(CnnTest, RejectsDataThatIsNotAnImage) {
  EXPECT_THAT(ModelRegistry::Build("cnn", {}, {.input_shape = {784}, .num_classes = 10}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("model cnn"), HasSubstr("[784]"))));
  EXPECT_THAT(
      ModelRegistry::Build(
          "cnn", {},
          {.task = Task::kLanguageModel, .input_shape = {64}, .vocab_size = 256, .seq_len = 64}),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr("model cnn"), HasSubstr("[64]"))));
  // Four poolings halve 8x8 to zero.
  EXPECT_THAT(ModelRegistry::Build("cnn", {{"channels", "4,4,4,4"}},
                                   {.input_shape = {1, 8, 8}, .num_classes = 2}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("too small for 4")));
}

TEST(CnnTest, ValidateChecksOptions) {
  EXPECT_OK(ModelRegistry::Parse("cnn", {{"channels", "8,16,32"}, {"hidden", "64"}}));
  EXPECT_THAT(ModelRegistry::Parse("cnn", {{"channels", "0"}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("model_options[channels]")));
  EXPECT_THAT(ModelRegistry::Parse("cnn", {{"batchnorm", "yes"}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("true|false")));
  EXPECT_THAT(ModelRegistry::Parse("cnn", {{"hidden", "0"}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("model_options[hidden]")));
  EXPECT_THAT(ModelRegistry::Parse("cnn", {{"kernel", "3"}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown option 'kernel'")));
}

// One fixed batch of 16 MNIST-sized images with random labels: a few AdamW
// steps must fit it better.
TEST(CnnTest, StepsReduceTheLossInFloat32AndBFloat16) {
  for (torch::Dtype dtype : {torch::kFloat32, torch::kBFloat16}) {
    torch::manual_seed(0);
    std::unique_ptr<Model> model;
    {
      compat::DefaultDtypeGuard init(dtype);
      auto built = ModelRegistry::Build("cnn", {{"channels", "8,16"}, {"hidden", "32"}}, kMnist);
      ASSERT_OK(built);
      model = std::move(*built);
    }
    for (const torch::Tensor& p : model->Parameters()) EXPECT_EQ(p.scalar_type(), dtype);
    torch::Tensor x = torch::randn({16, 1, 28, 28}).to(dtype);
    torch::Tensor y = torch::randint(0, 10, {16}, torch::kInt64);
    testing::LossChange loss = testing::TrainOnOneBatch(*model, x, y, /*steps=*/8);
    EXPECT_LT(loss.after, 0.7 * loss.before) << torch::toString(dtype);
  }
}

TEST(CnnTest, RunsUnderBFloat16Autocast) {
  auto model = ModelRegistry::Build("cnn", {{"channels", "8,16"}}, kMnist);
  ASSERT_OK(model);
  torch::Tensor out;
  {
    compat::AutocastGuard autocast(c10::DeviceType::CPU, torch::kBFloat16);
    out = (*model)->Forward(torch::randn({4, 1, 28, 28}));
  }
  EXPECT_EQ(out.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(out.isfinite().all().item<bool>());
  out.to(torch::kFloat32).sum().backward();
  EXPECT_TRUE((*model)->Parameters()[0].grad().defined());
}

TEST(CnnTest, ForwardLayersNameEverySequentialEntry) {
  auto model = ModelRegistry::Build("cnn", {{"channels", "4"}, {"hidden", "8"}},
                                    {.input_shape = {1, 8, 8}, .num_classes = 3});
  ASSERT_OK(model);
  (*model)->SetTraining(false);
  torch::Tensor x = torch::randn({2, 1, 8, 8});
  const auto layers = (*model)->ForwardLayers(x);
  // conv, batchnorm, relu, pool, flatten, linear, relu, linear.
  std::vector<std::string> names;
  for (const auto& [name, t] : layers) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{"0", "1", "2", "3", "4", "5", "6", "7"}));
  EXPECT_EQ(layers[0].second.sizes(), torch::IntArrayRef({2, 4, 8, 8}));
  EXPECT_EQ(layers[3].second.sizes(), torch::IntArrayRef({2, 4, 4, 4}));
  EXPECT_TRUE(torch::equal(layers.back().second, (*model)->Forward(x)));
}

}  // namespace
}  // namespace mantissa
