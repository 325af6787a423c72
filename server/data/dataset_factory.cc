#include "server/data/dataset_factory.h"

#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/option_reader.h"
#include "server/common/status_macros.h"
#include "server/data/csv_dataset.h"
#include "server/data/idx_dataset.h"
#include "server/data/synthetic_dataset.h"
#include "server/data/synthetic_tokens_dataset.h"
#include "server/data/token_file_dataset.h"

namespace mantissa {
namespace {

// Per-pixel statistics of each training set.
constexpr TensorDataset::Normalization kFashionMnistNorm{1.0f / 255.0f, 0.2860f, 0.3530f};
constexpr TensorDataset::Normalization kMnistNorm{1.0f / 255.0f, 0.1307f, 0.3081f};

// Options of the IDX datasets. Debian packages Fashion-MNIST but not MNIST.
absl::StatusOr<IdxDataset::Options> ParseIdx(const std::string& name, OptionReader& reader) {
  if (name == "fashion-mnist") {
    return IdxDataset::ParseOptions(reader, "/usr/share/datasets/fashion-mnist", kFashionMnistNorm,
                                    "on Debian: apt-get install dataset-fashion-mnist");
  }
  return IdxDataset::ParseOptions(
      reader, "/usr/share/datasets/mnist", kMnistNorm,
      "no Debian package ships MNIST: download the four IDX files and set "
      "dataset_options dir=DIR");
}

absl::Status UnknownDataset(const std::string& name) {
  return absl::NotFoundError(absl::StrCat("dataset: unknown dataset '", name, "'; valid datasets: ",
                                          absl::StrJoin(DatasetFactory::Names(), ", ")));
}

// Replaces a path-valued option by its canonical path; absent options stay.
absl::Status ConfineOption(std::map<std::string, std::string>& options, const std::string& key,
                           const FileRoots& roots) {
  auto it = options.find(key);
  if (it == options.end() || it->second.empty()) return absl::OkStatus();
  ASSIGN_OR_RETURN(it->second,
                   roots.Resolve(absl::StrCat("dataset_options[", key, "]"), it->second));
  return absl::OkStatus();
}

// A folder option, and each of `files` present in it: a symlink inside an
// allowed folder must not lead out of the roots either. A file that is
// missing is the dataset's own error (its folder is allowed).
absl::Status ConfineFolder(std::map<std::string, std::string>& options, const std::string& key,
                           const std::vector<std::string>& files, const FileRoots& roots) {
  RETURN_IF_ERROR(ConfineOption(options, key, roots));
  auto it = options.find(key);
  if (it == options.end() || it->second.empty()) return absl::OkStatus();
  for (const std::string& file : files) {
    const std::string path = absl::StrCat(it->second, "/", file);
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) continue;
    RETURN_IF_ERROR(roots.Resolve(absl::StrCat("dataset_options[", key, "]"), path).status());
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::map<std::string, std::string>> DatasetFactory::ConfinePaths(
    const std::string& name, std::map<std::string, std::string> options, const FileRoots& roots) {
  if (name == "csv") {
    RETURN_IF_ERROR(ConfineOption(options, "path", roots));
  } else if (name == "tokens") {
    RETURN_IF_ERROR(ConfineFolder(options, "dir", TokenFileDataset::DirFileNames(), roots));
    RETURN_IF_ERROR(ConfineOption(options, "train", roots));
    RETURN_IF_ERROR(ConfineOption(options, "val", roots));
  } else if (name == "fashion-mnist" || name == "mnist") {
    // Unlike tokens, an empty dir is not absent: it names "/" + file.
    if (auto it = options.find("dir"); it != options.end() && it->second.empty()) {
      return roots.Refusal("dataset_options[dir]", it->second);
    }
    RETURN_IF_ERROR(ConfineFolder(options, "dir", IdxDataset::FileNames(), roots));
  }
  return options;
}

std::vector<std::string> DatasetFactory::Names() {
  return {"synthetic", "synthetic-tokens", "fashion-mnist", "mnist", "csv", "tokens"};
}

absl::Status DatasetFactory::Validate(const std::string& name,
                                      const std::map<std::string, std::string>& options) {
  OptionReader reader("dataset_options", options);
  if (name == "synthetic") {
    RETURN_IF_ERROR(SyntheticDataset::ParseOptions(reader).status());
    return reader.CheckAllUsed();
  }
  if (name == "synthetic-tokens") {
    RETURN_IF_ERROR(SyntheticTokensDataset::ParseOptions(reader).status());
    return reader.CheckAllUsed();
  }
  if (name == "fashion-mnist" || name == "mnist") {
    ASSIGN_OR_RETURN(IdxDataset::Options idx, ParseIdx(name, reader));
    RETURN_IF_ERROR(reader.CheckAllUsed());
    return IdxDataset::CheckFiles(idx);
  }
  if (name == "csv") {
    ASSIGN_OR_RETURN(CsvDataset::Options csv, CsvDataset::ParseOptions(reader));
    RETURN_IF_ERROR(reader.CheckAllUsed());
    return CsvDataset::CheckFile(csv);
  }
  if (name == "tokens") {
    ASSIGN_OR_RETURN(TokenFileDataset::Options tokens, TokenFileDataset::ParseOptions(reader));
    RETURN_IF_ERROR(reader.CheckAllUsed());
    return TokenFileDataset::CheckFiles(tokens);
  }
  return UnknownDataset(name);
}

absl::StatusOr<DatasetSplits> DatasetFactory::Load(
    const std::string& name, const std::map<std::string, std::string>& options, uint64_t seed) {
  OptionReader reader("dataset_options", options);
  if (name == "synthetic") {
    ASSIGN_OR_RETURN(SyntheticDataset::Options synthetic, SyntheticDataset::ParseOptions(reader));
    RETURN_IF_ERROR(reader.CheckAllUsed());
    return SyntheticDataset::Generate(synthetic, seed);
  }
  if (name == "synthetic-tokens") {
    ASSIGN_OR_RETURN(SyntheticTokensDataset::Options synthetic,
                     SyntheticTokensDataset::ParseOptions(reader));
    RETURN_IF_ERROR(reader.CheckAllUsed());
    return SyntheticTokensDataset::Generate(synthetic, seed);
  }
  if (name == "fashion-mnist" || name == "mnist") {
    ASSIGN_OR_RETURN(IdxDataset::Options idx, ParseIdx(name, reader));
    RETURN_IF_ERROR(reader.CheckAllUsed());
    return IdxDataset::Load(idx);
  }
  if (name == "csv") {
    ASSIGN_OR_RETURN(CsvDataset::Options csv, CsvDataset::ParseOptions(reader));
    RETURN_IF_ERROR(reader.CheckAllUsed());
    return CsvDataset::Load(csv, seed);
  }
  if (name == "tokens") {
    ASSIGN_OR_RETURN(TokenFileDataset::Options tokens, TokenFileDataset::ParseOptions(reader));
    RETURN_IF_ERROR(reader.CheckAllUsed());
    return TokenFileDataset::Load(tokens);
  }
  return UnknownDataset(name);
}

}  // namespace mantissa
