#include "server/data/synthetic_tokens_dataset.h"

#include <ATen/CPUGeneratorImpl.h>

#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"

namespace mantissa {

absl::StatusOr<SyntheticTokensDataset::Options> SyntheticTokensDataset::ParseOptions(
    OptionReader& reader) {
  Options o;
  ASSIGN_OR_RETURN(o.vocab, reader.Int("vocab", o.vocab, 2, 1 << 20));
  ASSIGN_OR_RETURN(o.period, reader.Int("period", o.period, 1, 1 << 20));
  ASSIGN_OR_RETURN(o.seq_len, reader.Int("seq_len", o.seq_len, 1, 1 << 20));
  ASSIGN_OR_RETURN(o.train_tokens, reader.Int("train_tokens", o.train_tokens, 2, 100'000'000));
  ASSIGN_OR_RETURN(o.test_tokens, reader.Int("test_tokens", o.test_tokens, 0, 100'000'000));
  ASSIGN_OR_RETURN(o.noise, reader.Double("noise", o.noise));
  if (!(o.noise >= 0.0 && o.noise <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("dataset_options[noise]: ", o.noise, " is not in [0, 1]"));
  }
  // Each split must hold at least one window of seq_len + 1 tokens.
  if (o.train_tokens < o.seq_len + 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("dataset_options[train_tokens]: ", o.train_tokens,
                     " tokens hold no window of seq_len + 1 = ", o.seq_len + 1, " tokens"));
  }
  if (o.test_tokens > 0 && o.test_tokens < o.seq_len + 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dataset_options[test_tokens]: ", o.test_tokens, " tokens hold no window of seq_len + 1 = ",
        o.seq_len + 1, " tokens (use 0 for no test split)"));
  }
  return o;
}

DatasetSplits SyntheticTokensDataset::Generate(const Options& o, uint64_t seed) {
  // A private generator: concurrent jobs must not disturb each other's data.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto i64 = torch::TensorOptions(torch::kInt64);
  const torch::Tensor pattern = torch::randint(0, o.vocab, {o.period}, gen, i64);
  // One stream, split in two, so the test split continues the training text.
  const int64_t total = o.train_tokens + o.test_tokens;
  torch::Tensor stream = pattern.repeat({(total + o.period - 1) / o.period}).slice(0, 0, total);
  if (o.noise > 0) {
    const torch::Tensor replace =
        torch::rand({total}, gen, torch::TensorOptions(torch::kFloat64)) < o.noise;
    stream = torch::where(replace, torch::randint(0, o.vocab, {total}, gen, i64), stream);
  }
  DatasetSplits splits;
  splits.train = std::make_unique<SyntheticTokensDataset>(
      stream.slice(0, 0, o.train_tokens).clone(), o.seq_len);
  if (o.test_tokens > 0) {
    splits.test = std::make_unique<SyntheticTokensDataset>(
        stream.slice(0, o.train_tokens, total).clone(), o.seq_len);
  }
  splits.spec.task = Task::kLanguageModel;
  splits.spec.vocab_size = o.vocab;
  splits.spec.seq_len = o.seq_len;
  splits.spec.input_shape = {o.seq_len};
  return splits;
}

SyntheticTokensDataset::SyntheticTokensDataset(torch::Tensor tokens, int64_t seq_len)
    : tokens_(std::move(tokens)), seq_len_(seq_len), size_((tokens_.size(0) - 1) / seq_len) {}

Batch SyntheticTokensDataset::Get(const torch::Tensor& indices) const {
  const torch::Tensor items = indices.to(torch::kInt64).reshape({-1, 1});
  if (items.numel() > 0) {
    TORCH_CHECK(items.min().item<int64_t>() >= 0 && items.max().item<int64_t>() < size_,
                "synthetic-tokens: item index out of range [0, ", size_, ")");
  }
  // Token positions [N, seq_len + 1]: item i starts at i * seq_len.
  const torch::Tensor starts = items * seq_len_;
  const torch::Tensor positions = starts + torch::arange(seq_len_ + 1, torch::kInt64);
  const torch::Tensor windows =
      tokens_.index_select(0, positions.reshape({-1})).reshape({-1, seq_len_ + 1});
  return {windows.slice(1, 0, seq_len_).contiguous(), windows.slice(1, 1).contiguous()};
}

}  // namespace mantissa
