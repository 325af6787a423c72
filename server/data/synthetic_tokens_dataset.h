#ifndef MANTISSA_SERVER_DATA_SYNTHETIC_TOKENS_DATASET_H_
#define MANTISSA_SERVER_DATA_SYNTHETIC_TOKENS_DATASET_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "server/common/option_reader.h"
#include "server/data/dataset.h"

namespace mantissa {

// Language-modelling data fully determined by the seed: a random pattern of
// `period` tokens repeated over the whole stream, with a `noise` fraction of
// positions replaced by random tokens. A model that learns the pattern gets a
// loss far below ln(vocab), so tests can check that a language model trains.
// dataset_options: vocab, period, train_tokens, test_tokens, noise, seq_len.
//
// Items are windows as in TokenFileDataset: item i holds tokens
// [i*seq_len, i*seq_len + seq_len]; inputs are its first seq_len tokens and
// targets the last seq_len (shifted by one), both int64 [N, seq_len].
class SyntheticTokensDataset final : public Dataset {
 public:
  static constexpr char kName[] = "synthetic-tokens";

  struct Options {
    int64_t vocab = 256;
    int64_t period = 16;
    int64_t train_tokens = 65536;
    int64_t test_tokens = 8192;  // 0: no test split
    double noise = 0.0;          // fraction of positions replaced, in [0, 1]
    int64_t seq_len = 64;
  };

  static absl::StatusOr<Options> ParseOptions(OptionReader& reader);
  static DatasetSplits Generate(const Options& options, uint64_t seed);

  // `tokens`: int64 [T] with T >= seq_len + 1.
  SyntheticTokensDataset(torch::Tensor tokens, int64_t seq_len);

  int64_t size() const override { return size_; }
  Batch Get(const torch::Tensor& indices) const override;

 private:
  torch::Tensor tokens_;
  int64_t seq_len_;
  int64_t size_;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_DATA_SYNTHETIC_TOKENS_DATASET_H_
