#include "server/models/model_factory.h"

#include <gtest/gtest.h>

#include "tests/testing/status_matchers.h"

namespace mantissa {
namespace {

using ::testing::HasSubstr;
using testing::StatusIs;

TEST(ModelFactoryTest, MlpHasTheExpectedShapeAndParameterCount) {
  auto model = ModelFactory::Build("mlp", {{"hidden", "16,8"}, {"activation", "gelu"}},
                                   {.input_shape = {1, 4, 4}, .num_classes = 3});
  ASSERT_OK(model);
  // (16*16+16) + (16*8+8) + (8*3+3)
  EXPECT_EQ((*model)->ParameterCount(), 272 + 136 + 27);
  torch::Tensor out = (*model)->Forward(torch::randn({5, 1, 4, 4}));
  EXPECT_EQ(out.sizes(), torch::IntArrayRef({5, 3}));
}

TEST(ModelFactoryTest, ValidateNamesUnknownModelsAndOptions) {
  EXPECT_OK(ModelFactory::Validate("mlp", {}));
  EXPECT_THAT(
      ModelFactory::Validate("gpt5", {}),
      StatusIs(absl::StatusCode::kNotFound, HasSubstr("valid models: mlp, cnn, gpt, torchscript")));
  EXPECT_THAT(ModelFactory::Validate("mlp", {{"width", "3"}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("unknown option 'width'; valid options: activation, hidden")));
  EXPECT_THAT(ModelFactory::Validate("mlp", {{"activation", "swish"}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("relu|gelu|tanh")));
  EXPECT_THAT(ModelFactory::Validate("mlp", {{"hidden", "0"}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("model_options[hidden]")));
}

TEST(ModelFactoryTest, SameSeedSameWeights) {
  const DataSpec data{.input_shape = {6}, .num_classes = 2};
  torch::manual_seed(3);
  auto a = ModelFactory::Build("mlp", {}, data);
  torch::manual_seed(3);
  auto b = ModelFactory::Build("mlp", {}, data);
  ASSERT_OK(a);
  ASSERT_OK(b);
  auto pa = (*a)->Parameters();
  auto pb = (*b)->Parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(torch::equal(pa[i], pb[i]));
}

}  // namespace
}  // namespace mantissa
