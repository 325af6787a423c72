#include "server/data/token_file_dataset.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/data/path_options.h"

namespace mantissa {
namespace {

constexpr int64_t kMaxVocab = 65536;  // what a uint16 can hold

std::string Where(const TokenFileDataset::File& file) {
  return absl::StrCat("dataset_options[", file.option, "]: ", file.path);
}

// The file's size in bytes, or FAILED_PRECONDITION when it is not there.
absl::StatusOr<int64_t> FileSize(const TokenFileDataset::File& file) {
  struct stat st;
  if (::stat(file.path.c_str(), &st) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(Where(file),
                     ": not found; nanoGPT's data/*/prepare.py scripts write train.bin and "
                     "val.bin"));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(Where(file), ": not a regular file"));
  }
  return static_cast<int64_t>(st.st_size);
}

absl::Status CheckSize(const TokenFileDataset::File& file, int64_t bytes, int64_t seq_len) {
  if (bytes % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(Where(file), ": its size is not a whole number of uint16 tokens"));
  }
  if (bytes / 2 < seq_len + 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        Where(file), ": too short for one window of seq_len + 1 = ", seq_len + 1, " tokens"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TokenFileDataset::Options> TokenFileDataset::ParseOptions(OptionReader& reader) {
  Options o;
  ASSIGN_OR_RETURN(std::string dir, reader.String("dir", ""));
  ASSIGN_OR_RETURN(std::string train, reader.String("train", ""));
  ASSIGN_OR_RETURN(std::string val, reader.String("val", ""));
  ASSIGN_OR_RETURN(o.vocab, reader.Int("vocab", o.vocab, 1, kMaxVocab));
  ASSIGN_OR_RETURN(o.seq_len, reader.Int("seq_len", o.seq_len, 1, 1 << 20));
  // A misspelt key (file=, train_path=) explains a missing one: report it first.
  RETURN_IF_ERROR(reader.CheckAllUsed());
  if (!dir.empty() && (!train.empty() || !val.empty())) {
    return absl::InvalidArgumentError(
        "dataset_options[dir]: give either dir=DIR or train=PATH [val=PATH], not both");
  }
  if (!dir.empty()) {
    o.train = {"dir", absl::StrCat(dir, "/train.bin")};
    o.val = {"dir", absl::StrCat(dir, "/val.bin")};
  } else if (!train.empty()) {
    o.train = {"train", train};
    if (!val.empty()) o.val = {"val", val};
  } else {
    return absl::InvalidArgumentError(
        val.empty() ? "dataset_options: tokens needs dir=DIR (with train.bin and val.bin) or "
                      "train=PATH [val=PATH]"
                    : "dataset_options[val]: needs train=PATH as well");
  }
  return o;
}

absl::Status TokenFileDataset::CheckFiles(const Options& o) {
  for (const File* file : {&o.train, &o.val}) {
    if (file->path.empty()) continue;
    ASSIGN_OR_RETURN(int64_t bytes, FileSize(*file));
    RETURN_IF_ERROR(CheckSize(*file, bytes, o.seq_len));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<TokenFileDataset>> TokenFileDataset::Open(const File& file,
                                                                         int64_t vocab,
                                                                         int64_t seq_len) {
  const int fd = ::open(file.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(Where(file), ": cannot open: ", std::strerror(errno)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::InternalError(absl::StrCat(Where(file), ": fstat: ", std::strerror(err)));
  }
  const int64_t bytes = st.st_size;
  if (absl::Status s = CheckSize(file, bytes, seq_len); !s.ok()) {
    ::close(fd);
    return s;
  }
  void* mapped = ::mmap(nullptr, static_cast<size_t>(bytes), PROT_READ, MAP_SHARED, fd, 0);
  const int err = errno;
  ::close(fd);  // the mapping keeps the file open
  if (mapped == MAP_FAILED) {
    return absl::InternalError(absl::StrCat(Where(file), ": mmap: ", std::strerror(err)));
  }
  // Owned from here on: the destructor unmaps on every return path.
  std::unique_ptr<TokenFileDataset> dataset(
      new TokenFileDataset(static_cast<const unsigned char*>(mapped), bytes, seq_len));

  // One pass over every token: a tokenizer with a larger vocabulary than the
  // model's would otherwise fail deep inside an embedding lookup mid-training.
  if (vocab < kMaxVocab) {
    ::madvise(mapped, static_cast<size_t>(bytes), MADV_SEQUENTIAL);
    for (int64_t i = 0; i < dataset->num_tokens_; ++i) {
      const int64_t token = dataset->Token(i);
      if (token >= vocab) {
        return absl::InvalidArgumentError(
            absl::StrCat(Where(file), ": token ", i, " is >= vocab ", vocab,
                         ": vocab mismatch (set dataset_options vocab=N to the "
                         "tokenizer's vocabulary size)"));
      }
    }
  }
  // Training reads windows at random positions: no read-ahead beyond them.
  ::madvise(mapped, static_cast<size_t>(bytes), MADV_RANDOM);
  return dataset;
}

absl::StatusOr<DatasetSplits> TokenFileDataset::Load(const Options& o) {
  RETURN_IF_ERROR(CheckFiles(o));
  DatasetSplits splits;
  ASSIGN_OR_RETURN(splits.train, Open(o.train, o.vocab, o.seq_len));
  if (!o.val.path.empty()) {
    ASSIGN_OR_RETURN(splits.test, Open(o.val, o.vocab, o.seq_len));
  }
  splits.spec.task = Task::kLanguageModel;
  splits.spec.vocab_size = o.vocab;
  splits.spec.seq_len = o.seq_len;
  splits.spec.input_shape = {o.seq_len};
  return splits;
}

TokenFileDataset::TokenFileDataset(const unsigned char* data, size_t bytes, int64_t seq_len)
    : data_(data),
      bytes_(bytes),
      num_tokens_(static_cast<int64_t>(bytes / 2)),
      seq_len_(seq_len),
      size_((num_tokens_ - 1) / seq_len) {}

TokenFileDataset::~TokenFileDataset() { ::munmap(const_cast<unsigned char*>(data_), bytes_); }

Batch TokenFileDataset::Get(const torch::Tensor& indices) const {
  // LibTorch 1.13 has no uint16 dtype: gather the windows by hand.
  const torch::Tensor items = indices.to(torch::kInt64).contiguous().reshape({-1});
  const int64_t n = items.numel();
  torch::Tensor inputs = torch::empty({n, seq_len_}, torch::kInt64);
  torch::Tensor targets = torch::empty({n, seq_len_}, torch::kInt64);
  const int64_t* item = items.data_ptr<int64_t>();
  int64_t* in = inputs.data_ptr<int64_t>();
  int64_t* out = targets.data_ptr<int64_t>();
  for (int64_t r = 0; r < n; ++r) {
    TORCH_CHECK(item[r] >= 0 && item[r] < size_, "tokens: item ", item[r], " out of range [0, ",
                size_, ")");
    const int64_t start = item[r] * seq_len_;
    int64_t previous = Token(start);
    for (int64_t k = 0; k < seq_len_; ++k) {
      const int64_t next = Token(start + k + 1);
      in[r * seq_len_ + k] = previous;
      out[r * seq_len_ + k] = next;
      previous = next;
    }
  }
  return {inputs, targets};
}

absl::StatusOr<std::shared_ptr<const DatasetConfig>> TokenFileDataset::ParseConfig(
    OptionReader& reader) {
  ASSIGN_OR_RETURN(Options options, ParseOptions(reader));
  return MakeDatasetConfig(kName, std::move(options), &CheckFiles,
                           [](const Options& o, uint64_t) { return Load(o); });
}

absl::Status TokenFileDataset::ConfinePaths(std::map<std::string, std::string>& options,
                                            const FileRoots& roots) {
  RETURN_IF_ERROR(ConfineFolderOption(options, "dir", DirFileNames(), roots));
  RETURN_IF_ERROR(ConfinePathOption(options, "train", roots));
  return ConfinePathOption(options, "val", roots);
}

}  // namespace mantissa
