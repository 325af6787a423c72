#ifndef MANTISSA_SERVER_MODELS_GPT_H_
#define MANTISSA_SERVER_MODELS_GPT_H_

#include <memory>

#include "absl/status/statusor.h"
#include "server/common/option_reader.h"
#include "server/models/model.h"
#include "server/models/model_config.h"

namespace mantissa {

// A decoder-only transformer language model (GPT-2 layout): token and
// learned position embeddings, `layers` pre-LayerNorm blocks of causal
// multi-head self-attention and a 4x GELU MLP, a final LayerNorm and an
// untied LM head. Input int64 token ids [N, T] with T <= seq_len; output
// logits [N, T, vocab].
// model_options: vocab, d_model=128, layers=2, heads=4, seq_len, dropout=0.
// vocab and seq_len default to the dataset's and may only be larger.
class Gpt {
 public:
  static constexpr char kName[] = "gpt";

  struct Options {
    int64_t vocab = 0;  // 0: the dataset's vocabulary size
    int64_t d_model = 128;
    int64_t layers = 2;
    int64_t heads = 4;
    int64_t seq_len = 0;  // 0: the dataset's window length
    double dropout = 0.0;
  };

  // Checks ranges and d_model % heads == 0.
  static absl::StatusOr<Options> ParseOptions(OptionReader& reader);
  // INVALID_ARGUMENT unless `data` is a language-model dataset that fits
  // within vocab and seq_len. Parameters take the default dtype.
  static absl::StatusOr<std::unique_ptr<Model>> Build(Options options, const DataSpec& data);
  // The number of parameters Build() creates, by formula (vocab and seq_len
  // must be set), so that large configurations can be sized without building.
  static int64_t ParameterCount(const Options& options);
  // The registry's parser: options parsed into a ModelConfig, whose
  // ModelDataSpec applies vocab and seq_len.
  static absl::StatusOr<std::shared_ptr<const ModelConfig>> ParseConfig(OptionReader& reader);
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_MODELS_GPT_H_
