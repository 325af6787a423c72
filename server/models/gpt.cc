#include "server/models/gpt.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/status_macros.h"
#include "server/common/torch_compat.h"
#include "server/models/swappable_layers.h"

namespace mantissa {
namespace {

torch::Tensor Dropout(const torch::Tensor& x, double p, bool training) {
  return training && p > 0.0 ? torch::dropout(x, p, /*train=*/true) : x;
}

// The Linear layers are held as AnyModule so that a precision plugin can
// swap them (SwappableLayers): the FP8 plugin's Linear replaces them.
torch::nn::AnyModule RegisterLinear(torch::nn::Module& parent, const std::string& name,
                                    const torch::nn::LinearOptions& options) {
  return torch::nn::AnyModule(parent.register_module(name, torch::nn::Linear(options)));
}

// Re-points `slot` at `layer` if `name` is one of `slots`.
bool SwapSlot(torch::nn::Module& parent,
              std::initializer_list<std::pair<const char*, torch::nn::AnyModule*>> slots,
              const std::string& name, torch::nn::AnyModule layer) {
  for (const auto& [slot_name, slot] : slots) {
    if (name != slot_name) continue;
    parent.replace_module(name, layer.ptr());
    *slot = std::move(layer);
    return true;
  }
  return false;
}

// x + attn(ln1(x)), then x + mlp(ln2(x)).
class BlockImpl : public torch::nn::Module, public SwappableLayers {
 public:
  BlockImpl(int64_t d_model, int64_t heads, double dropout)
      : heads_(heads),
        dropout_(dropout),
        ln1_(register_module("ln1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d_model})))),
        qkv_(RegisterLinear(*this, "qkv", {d_model, 3 * d_model})),
        proj_(RegisterLinear(*this, "proj", {d_model, d_model})),
        ln2_(register_module("ln2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d_model})))),
        fc_(RegisterLinear(*this, "fc", {d_model, 4 * d_model})),
        fc_out_(RegisterLinear(*this, "fc_out", {4 * d_model, d_model})) {}

  torch::Tensor forward(torch::Tensor x) {
    x = x + Attention(ln1_(x));
    return x + Dropout(fc_out_.forward(torch::gelu(fc_.forward(ln2_(x)))), dropout_, is_training());
  }

  bool SwapLayer(const std::string& name, torch::nn::AnyModule layer) override {
    return SwapSlot(*this, {{"qkv", &qkv_}, {"proj", &proj_}, {"fc", &fc_}, {"fc_out", &fc_out_}},
                    name, std::move(layer));
  }

 private:
  torch::Tensor Attention(const torch::Tensor& x) {
    const int64_t n = x.size(0), t = x.size(1), d = x.size(2);
    // [N, T, 3*d] -> three [N, heads, T, head_dim]
    std::vector<torch::Tensor> qkv =
        qkv_.forward(x).view({n, t, 3, heads_, d / heads_}).permute({2, 0, 3, 1, 4}).unbind(0);
    torch::Tensor y = compat::CausalSelfAttention(qkv[0], qkv[1], qkv[2], dropout_, is_training());
    return Dropout(proj_.forward(y.transpose(1, 2).reshape({n, t, d})), dropout_, is_training());
  }

  int64_t heads_;
  double dropout_;
  torch::nn::LayerNorm ln1_;
  torch::nn::AnyModule qkv_;
  torch::nn::AnyModule proj_;
  torch::nn::LayerNorm ln2_;
  torch::nn::AnyModule fc_;
  torch::nn::AnyModule fc_out_;
};
TORCH_MODULE(Block);

class GptNetImpl : public torch::nn::Module, public SwappableLayers {
 public:
  explicit GptNetImpl(const Gpt::Options& o)
      : seq_len_(o.seq_len),
        dropout_(o.dropout),
        tok_emb_(register_module("tok_emb", torch::nn::Embedding(o.vocab, o.d_model))),
        pos_emb_(register_module("pos_emb", torch::nn::Embedding(o.seq_len, o.d_model))),
        blocks_(register_module("blocks", torch::nn::ModuleList())),
        ln_f_(register_module("ln_f",
                              torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.d_model})))),
        head_(RegisterLinear(*this, "head",
                             torch::nn::LinearOptions(o.d_model, o.vocab).bias(false))) {
    for (int64_t i = 0; i < o.layers; ++i) blocks_->push_back(Block(o.d_model, o.heads, o.dropout));
    InitGpt2();
  }

  torch::Tensor forward(const torch::Tensor& tokens) { return Run(tokens, nullptr); }

  // forward, keeping "embedding", "blocks.0", ..., "ln_f" and "head".
  std::vector<std::pair<std::string, torch::Tensor>> forward_layers(const torch::Tensor& tokens) {
    std::vector<std::pair<std::string, torch::Tensor>> layers;
    Run(tokens, &layers);
    return layers;
  }

  bool SwapLayer(const std::string& name, torch::nn::AnyModule layer) override {
    return SwapSlot(*this, {{"head", &head_}}, name, std::move(layer));
  }

 private:
  torch::Tensor Run(const torch::Tensor& tokens,
                    std::vector<std::pair<std::string, torch::Tensor>>* layers) {
    TORCH_CHECK(tokens.dim() == 2 && !tokens.is_floating_point(),
                "model gpt: expected integer token ids [N, T], got ", tokens.scalar_type(), " ",
                tokens.sizes());
    const int64_t t = tokens.size(1);
    TORCH_CHECK(t <= seq_len_, "model gpt: ", t, " tokens exceed seq_len ", seq_len_);
    auto keep = [layers](std::string name, const torch::Tensor& x) {
      if (layers != nullptr) layers->emplace_back(std::move(name), x);
    };
    torch::Tensor positions =
        torch::arange(t, torch::TensorOptions().dtype(torch::kInt64).device(tokens.device()));
    torch::Tensor x = Dropout(tok_emb_(tokens) + pos_emb_(positions), dropout_, is_training());
    keep("embedding", x);
    for (size_t i = 0; i < blocks_->size(); ++i) {
      x = blocks_->ptr(i)->as<BlockImpl>()->forward(x);
      keep(absl::StrCat("blocks.", i), x);
    }
    x = ln_f_(x);
    keep("ln_f", x);
    x = head_.forward(x);
    keep("head", x);
    return x;
  }

  // GPT-2: N(0, 0.02) weights for every Linear and Embedding, zero biases;
  // LayerNorms keep their (1, 0) default.
  void InitGpt2() {
    for (const auto& m : modules(/*include_self=*/false)) {
      if (auto* linear = m->as<torch::nn::Linear>()) {
        torch::nn::init::normal_(linear->weight, 0.0, 0.02);
        if (linear->bias.defined()) torch::nn::init::zeros_(linear->bias);
      } else if (auto* embedding = m->as<torch::nn::Embedding>()) {
        torch::nn::init::normal_(embedding->weight, 0.0, 0.02);
      }
    }
  }

  int64_t seq_len_;
  double dropout_;
  torch::nn::Embedding tok_emb_;
  torch::nn::Embedding pos_emb_;
  torch::nn::ModuleList blocks_;
  torch::nn::LayerNorm ln_f_;
  torch::nn::AnyModule head_;
};
TORCH_MODULE(GptNet);

class GptModel final : public ModuleModel<GptNet> {
 public:
  using ModuleModel::ModuleModel;

  std::vector<std::pair<std::string, torch::Tensor>> ForwardLayers(
      const torch::Tensor& input) override {
    return module()->forward_layers(input);
  }
};

// "model_options[vocab]=100 is smaller than the dataset's vocabulary 256".
absl::Status CheckAtLeast(int64_t* value, const char* key, int64_t dataset_value,
                          const char* what) {
  if (*value == 0) {
    *value = dataset_value;
  } else if (*value < dataset_value) {
    return absl::InvalidArgumentError(
        absl::StrCat("model gpt: ", key, " mismatch: model_options[", key, "]=", *value,
                     " is smaller than the dataset's ", what, " ", dataset_value));
  }
  return absl::OkStatus();
}

class GptConfig final : public ModelConfigOf<Gpt> {
 public:
  using ModelConfigOf::ModelConfigOf;

  std::optional<ModelSizeEstimate> EstimateSize(const DataSpec& data) const override {
    const DataSpec own = ModelDataSpec(data);
    const double vocab = static_cast<double>(own.vocab_size);
    const double seq = static_cast<double>(own.seq_len);
    const double d = static_cast<double>(options().d_model);
    const double layers = static_cast<double>(options().layers);
    ModelSizeEstimate size;
    size.parameters = vocab * d + seq * d + layers * (12 * d * d + 13 * d) + 2 * d + d * vocab;
    // Per token: ~16 d-wide tensors per block, and the logits.
    size.activations_per_item = seq * (layers * 16 * d + 2 * vocab);
    return size;
  }

  DataSpec ModelDataSpec(const DataSpec& data) const override {
    DataSpec own = data;
    if (options().vocab > 0) own.vocab_size = options().vocab;
    if (options().seq_len > 0) own.seq_len = options().seq_len;
    return own;
  }
};

}  // namespace

absl::StatusOr<std::shared_ptr<const ModelConfig>> Gpt::ParseConfig(OptionReader& reader) {
  return ParseModelConfig<Gpt, GptConfig>(reader);
}

absl::StatusOr<Gpt::Options> Gpt::ParseOptions(OptionReader& reader) {
  Options o;
  ASSIGN_OR_RETURN(o.vocab, reader.Int("vocab", o.vocab, /*min_value=*/1));
  ASSIGN_OR_RETURN(o.d_model, reader.Int("d_model", o.d_model, /*min_value=*/1));
  ASSIGN_OR_RETURN(o.layers, reader.Int("layers", o.layers, /*min_value=*/1));
  ASSIGN_OR_RETURN(o.heads, reader.Int("heads", o.heads, /*min_value=*/1));
  ASSIGN_OR_RETURN(o.seq_len, reader.Int("seq_len", o.seq_len, /*min_value=*/1));
  ASSIGN_OR_RETURN(o.dropout, reader.Double("dropout", o.dropout));
  if (!(o.dropout >= 0.0 && o.dropout < 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("model_options[dropout]: ", o.dropout, " is not in [0, 1)"));
  }
  if (o.d_model % o.heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("model_options[d_model]=", o.d_model,
                     " is not divisible by model_options[heads]=", o.heads));
  }
  return o;
}

absl::StatusOr<std::unique_ptr<Model>> Gpt::Build(Options options, const DataSpec& data) {
  if (data.task != Task::kLanguageModel) {
    return absl::InvalidArgumentError(
        absl::StrCat("model gpt needs a language-model dataset (token ids); the dataset gives "
                     "classification inputs of shape [",
                     absl::StrJoin(data.input_shape, ", "), "]"));
  }
  if (data.vocab_size <= 0 || data.seq_len <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model gpt: the dataset gives no vocabulary size or sequence length (vocab_size ",
        data.vocab_size, ", seq_len ", data.seq_len, ")"));
  }
  RETURN_IF_ERROR(CheckAtLeast(&options.vocab, "vocab", data.vocab_size, "vocabulary"));
  RETURN_IF_ERROR(CheckAtLeast(&options.seq_len, "seq_len", data.seq_len, "sequence length"));
  return std::make_unique<GptModel>(GptNet(options));
}

int64_t Gpt::ParameterCount(const Options& o) {
  const int64_t d = o.d_model;
  // ln1 + ln2 (2d each), qkv (3d*d + 3d), proj (d*d + d), fc (4d*d + 4d), fc_out (4d*d + d).
  const int64_t per_block = 12 * d * d + 13 * d;
  return o.vocab * d + o.seq_len * d + o.layers * per_block + 2 * d + d * o.vocab;
}

}  // namespace mantissa
