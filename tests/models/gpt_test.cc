#include "server/models/gpt.h"

#include <gtest/gtest.h>

#include <cmath>

#include "server/common/torch_compat.h"
#include "server/models/model_registry.h"
#include "tests/models/train_steps.h"
#include "tests/testing/status_matchers.h"

namespace mantissa {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using testing::StatusIs;

const DataSpec kTokens{
    .task = Task::kLanguageModel, .input_shape = {12}, .vocab_size = 50, .seq_len = 12};
const std::map<std::string, std::string> kSmall = {
    {"d_model", "16"}, {"layers", "2"}, {"heads", "2"}};

std::unique_ptr<Model> BuildSmall(const DataSpec& data = kTokens,
                                  std::map<std::string, std::string> options = kSmall) {
  auto model = ModelRegistry::Build("gpt", options, data);
  EXPECT_OK(model);
  return model.ok() ? std::move(*model) : nullptr;
}

TEST(GptTest, LogitsCoverEveryPositionAndToken) {
  std::unique_ptr<Model> model = BuildSmall();
  ASSERT_NE(model, nullptr);
  torch::Tensor tokens = torch::randint(0, 50, {3, 12}, torch::kInt64);
  EXPECT_EQ(model->Forward(tokens).sizes(), torch::IntArrayRef({3, 12, 50}));
  // Shorter windows work; longer ones than seq_len do not.
  EXPECT_EQ(model->Forward(tokens.slice(1, 0, 5)).sizes(), torch::IntArrayRef({3, 5, 50}));
  EXPECT_THROW(model->Forward(torch::zeros({1, 13}, torch::kInt64)), c10::Error);
}

TEST(GptTest, ParameterCountFormulaMatchesTheBuiltModel) {
  std::unique_ptr<Model> model = BuildSmall();
  ASSERT_NE(model, nullptr);
  Gpt::Options small{.vocab = 50, .d_model = 16, .layers = 2, .heads = 2, .seq_len = 12};
  EXPECT_EQ(Gpt::ParameterCount(small), model->ParameterCount());

  // The reference configuration: about GPT-2 small with an 8k vocabulary.
  Gpt::Options reference{.vocab = 8192, .d_model = 768, .layers = 12, .heads = 12, .seq_len = 512};
  const int64_t n = Gpt::ParameterCount(reference);
  EXPECT_GT(n, 95'000'000);
  EXPECT_LT(n, 100'000'000);
}

TEST(GptTest, VocabAndSeqLenDefaultToTheDatasetsAndMayBeLarger) {
  std::unique_ptr<Model> model =
      BuildSmall(kTokens, {{"d_model", "16"}, {"heads", "2"}, {"vocab", "64"}, {"seq_len", "20"}});
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->Forward(torch::zeros({1, 20}, torch::kInt64)).sizes(),
            torch::IntArrayRef({1, 20, 64}));
}

TEST(GptTest, RejectsAVocabularyOrWindowSmallerThanTheDatasets) {
  const DataSpec bytes{
      .task = Task::kLanguageModel, .input_shape = {64}, .vocab_size = 256, .seq_len = 64};
  EXPECT_THAT(ModelRegistry::Build("gpt", {{"vocab", "100"}}, bytes),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("vocab mismatch"),
                             HasSubstr("model_options[vocab]=100 is smaller than the dataset's "
                                       "vocabulary 256"))));
  EXPECT_THAT(ModelRegistry::Build("gpt", {{"seq_len", "32"}}, bytes),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("seq_len mismatch"), HasSubstr("=32"), HasSubstr("64"))));
  EXPECT_THAT(ModelRegistry::Build("gpt", {}, {.input_shape = {1, 28, 28}, .num_classes = 10}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("model gpt"), HasSubstr("[1, 28, 28]"))));
}

TEST(GptTest, ValidateChecksOptions) {
  EXPECT_OK(ModelRegistry::Parse(
      "gpt", {{"d_model", "768"}, {"heads", "12"}, {"layers", "12"}, {"dropout", "0.1"}}));
  EXPECT_THAT(ModelRegistry::Parse("gpt", {{"d_model", "130"}, {"heads", "4"}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("model_options[d_model]=130 is not divisible by "
                                 "model_options[heads]=4")));
  EXPECT_THAT(ModelRegistry::Parse("gpt", {{"dropout", "1"}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("model_options[dropout]")));
  EXPECT_THAT(ModelRegistry::Parse("gpt", {{"layers", "0"}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("model_options[layers]")));
  EXPECT_THAT(ModelRegistry::Parse("gpt", {{"n_head", "4"}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown option 'n_head'")));
}

TEST(GptTest, FutureTokensDoNotChangeEarlierLogits) {
  std::unique_ptr<Model> model = BuildSmall();
  ASSERT_NE(model, nullptr);
  model->SetTraining(false);
  torch::NoGradGuard no_grad;
  const int64_t t = 5;
  torch::Tensor a = torch::randint(0, 50, {2, 12}, torch::kInt64);
  torch::Tensor b = a.clone();
  b.slice(1, t + 1) = (a.slice(1, t + 1) + 1) % 50;
  torch::Tensor la = model->Forward(a);
  torch::Tensor lb = model->Forward(b);
  EXPECT_TRUE(torch::allclose(la.slice(1, 0, t + 1), lb.slice(1, 0, t + 1)));
  // ...while the later positions do see the change.
  EXPECT_FALSE(torch::allclose(la.slice(1, t + 1), lb.slice(1, t + 1)));
}

TEST(GptTest, CausalAttentionMatchesTheMaskedSoftmax) {
  torch::manual_seed(1);
  torch::Tensor q = torch::randn({2, 3, 6, 4});
  torch::Tensor k = torch::randn({2, 3, 6, 4});
  torch::Tensor v = torch::randn({2, 3, 6, 4});
  torch::Tensor out = compat::CausalSelfAttention(q, k, v, /*dropout_p=*/0.5, /*training=*/false);
  torch::Tensor scores = torch::matmul(q, k.transpose(-2, -1)) / 2.0;
  scores = scores + torch::full({6, 6}, -1e9).triu(1);
  torch::Tensor expected = torch::matmul(scores.softmax(-1), v);
  EXPECT_TRUE(torch::allclose(out, expected, 1e-5, 1e-5));
  // The first position sees only itself.
  EXPECT_TRUE(torch::allclose(out.select(2, 0), v.select(2, 0), 1e-6, 1e-6));
}

TEST(GptTest, Gpt2Initialisation) {
  torch::manual_seed(0);
  std::unique_ptr<Model> model = BuildSmall(kTokens, {{"d_model", "64"}, {"heads", "4"}});
  ASSERT_NE(model, nullptr);
  for (const auto& [name, tensor] : model->State()) {
    if (name.find("ln") != std::string::npos) {
      const double fill = name.size() > 6 && name.substr(name.size() - 6) == "weight" ? 1.0 : 0.0;
      EXPECT_TRUE(torch::all(tensor == fill).item<bool>()) << name;
    } else if (name.find("bias") != std::string::npos) {
      EXPECT_TRUE(torch::all(tensor == 0).item<bool>()) << name;
    } else {
      EXPECT_NEAR(tensor.std().item<double>(), 0.02, 0.003) << name;
    }
  }
}

TEST(GptTest, NamesItsState) {
  std::unique_ptr<Model> model = BuildSmall();
  ASSERT_NE(model, nullptr);
  std::vector<std::string> names;
  for (const auto& [name, tensor] : model->State()) names.push_back(name);
  EXPECT_THAT(names,
              ::testing::IsSupersetOf({"tok_emb.weight", "pos_emb.weight", "blocks.0.qkv.weight",
                                       "blocks.1.fc_out.bias", "ln_f.weight", "head.weight"}));
  // The LM head is untied and has no bias.
  EXPECT_THAT(names, ::testing::Not(::testing::Contains("head.bias")));
}

// Fit one fixed batch of token windows (targets = inputs shifted by one).
TEST(GptTest, StepsReduceTheLossInFloat32AndBFloat16) {
  for (torch::Dtype dtype : {torch::kFloat32, torch::kBFloat16}) {
    torch::manual_seed(0);
    std::unique_ptr<Model> model;
    {
      compat::DefaultDtypeGuard init(dtype);
      model = BuildSmall();
    }
    ASSERT_NE(model, nullptr);
    for (const torch::Tensor& p : model->Parameters()) EXPECT_EQ(p.scalar_type(), dtype);
    torch::Tensor stream = torch::randint(0, 50, {4, 13}, torch::kInt64);
    torch::Tensor x = stream.slice(1, 0, 12);
    torch::Tensor y = stream.slice(1, 1, 13);
    testing::LossChange loss = testing::TrainOnOneBatch(*model, x, y, /*steps=*/10);
    // Starts near uniform (ln 50 = 3.9).
    EXPECT_NEAR(loss.before, std::log(50.0), 0.3) << torch::toString(dtype);
    EXPECT_LT(loss.after, loss.before - 0.5) << torch::toString(dtype);
  }
}

TEST(GptTest, BFloat16WeightsAndAutocastGiveFiniteLogits) {
  torch::Tensor tokens = torch::randint(0, 50, {2, 12}, torch::kInt64);
  {
    std::unique_ptr<Model> model =
        BuildSmall(kTokens, {{"d_model", "16"}, {"heads", "2"}, {"dropout", "0.1"}});
    ASSERT_NE(model, nullptr);
    model->ToDtype(torch::kBFloat16);
    model->SetTraining(true);
    torch::Tensor logits = model->Forward(tokens);
    EXPECT_EQ(logits.scalar_type(), torch::kBFloat16);
    EXPECT_TRUE(logits.isfinite().all().item<bool>());
  }
  {
    std::unique_ptr<Model> model = BuildSmall();
    ASSERT_NE(model, nullptr);
    torch::Tensor logits;
    {
      compat::AutocastGuard autocast(c10::DeviceType::CPU, torch::kBFloat16);
      logits = model->Forward(tokens);
    }
    EXPECT_EQ(logits.scalar_type(), torch::kBFloat16);
    EXPECT_TRUE(logits.isfinite().all().item<bool>());
    logits.to(torch::kFloat32).logsumexp(-1).mean().backward();
    for (const torch::Tensor& p : model->Parameters()) {
      ASSERT_TRUE(p.grad().defined());
      EXPECT_EQ(p.grad().scalar_type(), torch::kFloat32);
    }
  }
}

TEST(GptTest, ForwardLayersFollowTheBlocks) {
  std::unique_ptr<Model> model = BuildSmall();
  ASSERT_NE(model, nullptr);
  model->SetTraining(false);
  torch::Tensor tokens = torch::randint(0, 50, {2, 7}, torch::kInt64);
  const auto layers = model->ForwardLayers(tokens);
  std::vector<std::string> names;
  for (const auto& [name, t] : layers) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{"embedding", "blocks.0", "blocks.1", "ln_f", "head"}));
  EXPECT_EQ(layers[1].second.sizes(), torch::IntArrayRef({2, 7, 16}));
  EXPECT_EQ(layers.back().second.sizes(), torch::IntArrayRef({2, 7, 50}));
  EXPECT_TRUE(torch::equal(layers.back().second, model->Forward(tokens)));
}

}  // namespace
}  // namespace mantissa
