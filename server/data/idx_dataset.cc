#include "server/data/idx_dataset.h"

#include <sys/stat.h>
#include <zlib.h>

#include <array>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/status_macros.h"
#include "server/data/path_options.h"

namespace mantissa {
namespace {

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// "train-images-idx3-ubyte" or its ".gz"; empty if neither exists.
std::string FindFile(const std::string& dir, const std::string& stem) {
  for (const std::string& candidate :
       {absl::StrCat(dir, "/", stem), absl::StrCat(dir, "/", stem, ".gz")}) {
    if (FileExists(candidate)) return candidate;
  }
  return "";
}

struct GzCloser {
  void operator()(gzFile_s* f) const { gzclose(f); }
};

absl::Status ReadExactly(gzFile file, void* out, size_t bytes, const std::string& path) {
  // gzread takes unsigned int counts; read large payloads in chunks.
  auto* dst = static_cast<unsigned char*>(out);
  while (bytes > 0) {
    const unsigned chunk = static_cast<unsigned>(std::min<size_t>(bytes, 1u << 30));
    const int got = gzread(file, dst, chunk);
    if (got <= 0) {
      return absl::DataLossError(
          absl::StrCat(path, ": truncated (", bytes, " more bytes expected)"));
    }
    dst += got;
    bytes -= static_cast<size_t>(got);
  }
  return absl::OkStatus();
}

constexpr const char* kStems[] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                  "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};

}  // namespace

absl::StatusOr<IdxDataset::Options> IdxDataset::ParseOptions(
    OptionReader& reader, const std::string& default_dir,
    TensorDataset::Normalization normalization, std::string install_hint) {
  Options o;
  o.normalization = normalization;
  o.install_hint = std::move(install_hint);
  ASSIGN_OR_RETURN(o.dir, reader.String("dir", default_dir));
  ASSIGN_OR_RETURN(o.train_limit, reader.Int("train_limit", 0, 0));
  ASSIGN_OR_RETURN(o.test_limit, reader.Int("test_limit", 0, 0));
  return o;
}

std::vector<std::string> IdxDataset::FileNames() {
  std::vector<std::string> names;
  for (const char* stem : kStems) {
    names.push_back(stem);
    names.push_back(absl::StrCat(stem, ".gz"));
  }
  return names;
}

absl::Status IdxDataset::CheckFiles(const Options& o) {
  for (const char* stem : kStems) {
    if (FindFile(o.dir, stem).empty()) {
      return absl::FailedPreconditionError(absl::StrCat("dataset_options[dir]: ", o.dir, "/", stem,
                                                        "[.gz] not found (", o.install_hint, ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<torch::Tensor> IdxDataset::ReadIdx(const std::string& path, int expected_dims,
                                                  int64_t limit) {
  std::unique_ptr<gzFile_s, GzCloser> file(gzopen(path.c_str(), "rb"));
  if (!file) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::array<unsigned char, 4> magic;
  RETURN_IF_ERROR(ReadExactly(file.get(), magic.data(), 4, path));
  // Magic: two zero bytes, type 0x08 (unsigned byte), number of dimensions.
  if (magic[0] != 0 || magic[1] != 0 || magic[2] != 0x08 || magic[3] != expected_dims) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": bad IDX magic (expected ubyte data with ", expected_dims, " dimensions)"));
  }
  std::vector<int64_t> dims(expected_dims);
  for (int64_t& d : dims) {
    std::array<unsigned char, 4> be;
    RETURN_IF_ERROR(ReadExactly(file.get(), be.data(), 4, path));
    d = (int64_t{be[0]} << 24) | (int64_t{be[1]} << 16) | (int64_t{be[2]} << 8) | be[3];
  }
  const int64_t items = limit > 0 ? std::min(limit, dims[0]) : dims[0];
  dims[0] = items;
  // The header is untrusted: refuse a size the file cannot hold before
  // allocating it (deflate expands at most 1032:1).
  struct stat st;
  const int64_t file_bytes = ::stat(path.c_str(), &st) == 0 ? st.st_size : 0;
  const int64_t max_bytes = gzdirect(file.get()) ? file_bytes : file_bytes * 1032;
  int64_t bytes = 1;
  for (int64_t d : dims) {
    if (__builtin_mul_overflow(bytes, d, &bytes) || bytes > max_bytes) {
      return absl::DataLossError(absl::StrCat(path, ": the header's dimensions [",
                                              absl::StrJoin(dims, ","), "] need more bytes than ",
                                              "the file holds"));
    }
  }
  torch::Tensor data = torch::empty(dims, torch::kUInt8);
  RETURN_IF_ERROR(
      ReadExactly(file.get(), data.data_ptr(), static_cast<size_t>(data.numel()), path));
  return data;
}

absl::StatusOr<DatasetSplits> IdxDataset::Load(const Options& o) {
  RETURN_IF_ERROR(CheckFiles(o));
  const auto load_split = [&](const char* images_stem, const char* labels_stem,
                              int64_t limit) -> absl::StatusOr<std::unique_ptr<TensorDataset>> {
    const std::string images_path = FindFile(o.dir, images_stem);
    const std::string labels_path = FindFile(o.dir, labels_stem);
    ASSIGN_OR_RETURN(torch::Tensor images, ReadIdx(images_path, 3, limit));
    ASSIGN_OR_RETURN(torch::Tensor labels, ReadIdx(labels_path, 1, limit));
    if (images.size(0) != labels.size(0)) {
      return absl::InvalidArgumentError(absl::StrCat(images_path, " has ", images.size(0),
                                                     " images but ", labels_path, " has ",
                                                     labels.size(0), " labels"));
    }
    if (labels.numel() > 0 && labels.max().item<int64_t>() >= o.num_classes) {
      // The label is the file's content: only the valid range is told.
      return absl::InvalidArgumentError(
          absl::StrCat(labels_path, ": a label is out of range [0, ", o.num_classes, ")"));
    }
    // [N, rows, cols] -> [N, 1, rows, cols]: one channel, as convolutions expect.
    return std::make_unique<TensorDataset>(images.unsqueeze(1), labels.to(torch::kInt64),
                                           o.normalization);
  };
  ASSIGN_OR_RETURN(std::unique_ptr<TensorDataset> train,
                   load_split(kStems[0], kStems[1], o.train_limit));
  if (train->size() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(o.dir, ": the training split has no items"));
  }
  DatasetSplits splits;
  splits.spec.input_shape = train->item_shape();
  splits.train = std::move(train);
  ASSIGN_OR_RETURN(splits.test, load_split(kStems[2], kStems[3], o.test_limit));
  splits.spec.num_classes = o.num_classes;
  return splits;
}

namespace {

// Per-pixel statistics of each training set.
constexpr TensorDataset::Normalization kFashionMnistNorm{1.0f / 255.0f, 0.2860f, 0.3530f};
constexpr TensorDataset::Normalization kMnistNorm{1.0f / 255.0f, 0.1307f, 0.3081f};

std::shared_ptr<const DatasetConfig> MakeIdxConfig(const char* name, IdxDataset::Options options) {
  return MakeDatasetConfig(
      name, std::move(options), &IdxDataset::CheckFiles,
      [](const IdxDataset::Options& o, uint64_t) { return IdxDataset::Load(o); });
}

}  // namespace

// Debian packages Fashion-MNIST but not MNIST.
absl::StatusOr<std::shared_ptr<const DatasetConfig>> IdxDataset::ParseFashionMnistConfig(
    OptionReader& reader) {
  ASSIGN_OR_RETURN(Options options,
                   ParseOptions(reader, "/usr/share/datasets/fashion-mnist", kFashionMnistNorm,
                                "on Debian: apt-get install dataset-fashion-mnist"));
  return MakeIdxConfig(kFashionMnistName, std::move(options));
}

absl::StatusOr<std::shared_ptr<const DatasetConfig>> IdxDataset::ParseMnistConfig(
    OptionReader& reader) {
  ASSIGN_OR_RETURN(Options options,
                   ParseOptions(reader, "/usr/share/datasets/mnist", kMnistNorm,
                                "no Debian package ships MNIST: download the four IDX files and "
                                "set dataset_options dir=DIR"));
  return MakeIdxConfig(kMnistName, std::move(options));
}

absl::Status IdxDataset::ConfinePaths(std::map<std::string, std::string>& options,
                                      const FileRoots& roots) {
  // Unlike tokens, an empty dir is not absent: it names "/" + file.
  if (auto it = options.find("dir"); it != options.end() && it->second.empty()) {
    return roots.Refusal("dataset_options[dir]", it->second);
  }
  return ConfineFolderOption(options, "dir", FileNames(), roots);
}

}  // namespace mantissa
