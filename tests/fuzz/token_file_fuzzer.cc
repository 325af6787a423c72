// Fuzzes the token-file dataset: input = [vocab byte][seq_len byte][file].
// An opened file must hand out every window, shifted by one token, with ids
// below the vocabulary.

#include <torch/torch.h>

#include <cstddef>
#include <cstdint>

#include "server/data/token_file_dataset.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  torch::set_num_threads(1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using mantissa::TokenFileDataset;
  if (size < 2) return 0;
  static const mantissa::fuzz::ScratchFile file("train.bin");
  // 0 picks the full uint16 range (no scan), anything else a small vocabulary.
  const int64_t vocab = data[0] == 0 ? 65536 : data[0];
  const int64_t seq_len = 1 + data[1] % 16;
  file.Write(data + 2, size - 2);

  absl::StatusOr<std::unique_ptr<TokenFileDataset>> dataset =
      TokenFileDataset::Open({"train", file.path()}, vocab, seq_len);
  if (!dataset.ok()) return 0;
  const TokenFileDataset& d = **dataset;
  FUZZ_CHECK(d.num_tokens() == static_cast<int64_t>((size - 2) / 2));
  FUZZ_CHECK(d.size() >= 1 && d.size() == (d.num_tokens() - 1) / seq_len);
  const int64_t n = std::min<int64_t>(d.size(), 64);
  mantissa::Batch batch = d.Get(torch::arange(n, torch::kInt64));
  FUZZ_CHECK(batch.inputs.sizes() == torch::IntArrayRef({n, seq_len}));
  FUZZ_CHECK(batch.targets.sizes() == torch::IntArrayRef({n, seq_len}));
  FUZZ_CHECK(batch.inputs.max().item<int64_t>() < vocab);
  FUZZ_CHECK(batch.targets.min().item<int64_t>() >= 0);
  if (seq_len > 1) {
    // Targets are the inputs shifted by one.
    FUZZ_CHECK(torch::equal(batch.inputs.slice(1, 1), batch.targets.slice(1, 0, seq_len - 1)));
  }
  return 0;
}
