#ifndef MANTISSA_SERVER_DATA_TOKEN_FILE_DATASET_H_
#define MANTISSA_SERVER_DATA_TOKEN_FILE_DATASET_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/common/file_roots.h"
#include "server/common/option_reader.h"
#include "server/data/dataset.h"
#include "server/data/dataset_config.h"

namespace mantissa {

// Language-modelling data in nanoGPT's layout: a flat file of little-endian
// uint16 token ids (train.bin, val.bin as its prepare scripts write them).
// dataset_options: dir=DIR (with train.bin and val.bin) or train=PATH
// [val=PATH]; vocab (default 65536); seq_len (default 128).
//
// The file is memory-mapped read-only, not loaded: corpora can be far larger
// than RAM, and the page cache is shared between jobs reading the same file.
// Item i is the window of seq_len + 1 tokens starting at token i * seq_len;
// Get() returns its first seq_len tokens as inputs and its last seq_len as
// targets (shifted by one), both int64 [N, seq_len], so a shuffled epoch
// visits random contiguous windows. The file must not be truncated while a
// dataset maps it (reading a vanished page raises SIGBUS).
class TokenFileDataset final : public Dataset {
 public:
  static constexpr char kName[] = "tokens";

  // One file and the option it came from, for error messages.
  struct File {
    std::string option;  // "dir", "train" or "val"
    std::string path;
  };
  struct Options {
    File train;
    File val;  // path empty: no test split
    int64_t vocab = 65536;
    int64_t seq_len = 128;
  };

  static absl::StatusOr<Options> ParseOptions(OptionReader& reader);
  // The files dir=DIR names inside DIR.
  static std::vector<std::string> DirFileNames() { return {"train.bin", "val.bin"}; }
  // FAILED_PRECONDITION for a missing file, INVALID_ARGUMENT for a size that
  // cannot hold one window of whole tokens. Reads no data.
  static absl::Status CheckFiles(const Options& options);
  // Maps the files and scans every token once against vocab.
  static absl::StatusOr<DatasetSplits> Load(const Options& options);
  // The registry's parser: options parsed into a DatasetConfig.
  static absl::StatusOr<std::shared_ptr<const DatasetConfig>> ParseConfig(OptionReader& reader);
  // The registry's confinement of the path-valued options.
  static absl::Status ConfinePaths(std::map<std::string, std::string>& options,
                                   const FileRoots& roots);
  static absl::StatusOr<std::unique_ptr<TokenFileDataset>> Open(const File& file, int64_t vocab,
                                                                int64_t seq_len);

  TokenFileDataset(const TokenFileDataset&) = delete;
  TokenFileDataset& operator=(const TokenFileDataset&) = delete;
  ~TokenFileDataset() override;

  int64_t size() const override { return size_; }
  int64_t num_tokens() const { return num_tokens_; }
  Batch Get(const torch::Tensor& indices) const override;

 private:
  TokenFileDataset(const unsigned char* data, size_t bytes, int64_t seq_len);

  // Token at position `i`, read little-endian whatever the host's order.
  int64_t Token(int64_t i) const { return data_[2 * i] | (int64_t{data_[2 * i + 1]} << 8); }

  const unsigned char* data_;  // the mapping, owned; unmapped in the destructor
  size_t bytes_;
  int64_t num_tokens_;
  int64_t seq_len_;
  int64_t size_;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_DATA_TOKEN_FILE_DATASET_H_
