#include "server/data/dataset_factory.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/option_reader.h"
#include "server/common/status_macros.h"
#include "server/data/idx_dataset.h"
#include "server/data/synthetic_dataset.h"

namespace mantissa {
namespace {

constexpr char kFashionMnistDir[] = "/usr/share/datasets/fashion-mnist";
// Per-pixel statistics of the Fashion-MNIST training set.
constexpr TensorDataset::Normalization kFashionMnistNorm{1.0f / 255.0f, 0.2860f, 0.3530f};

absl::Status UnknownDataset(const std::string& name) {
  return absl::NotFoundError(absl::StrCat("dataset: unknown dataset '", name, "'; valid datasets: ",
                                          absl::StrJoin(DatasetFactory::Names(), ", ")));
}

}  // namespace

std::vector<std::string> DatasetFactory::Names() { return {"synthetic", "fashion-mnist"}; }

absl::Status DatasetFactory::Validate(const std::string& name,
                                      const std::map<std::string, std::string>& options) {
  OptionReader reader("dataset_options", options);
  if (name == "synthetic") {
    RETURN_IF_ERROR(SyntheticDataset::ParseOptions(reader).status());
    return reader.CheckAllUsed();
  }
  if (name == "fashion-mnist") {
    ASSIGN_OR_RETURN(IdxDataset::Options idx,
                     IdxDataset::ParseOptions(reader, kFashionMnistDir, kFashionMnistNorm));
    RETURN_IF_ERROR(reader.CheckAllUsed());
    return IdxDataset::CheckFiles(idx);
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
  if (name == "fashion-mnist") {
    ASSIGN_OR_RETURN(IdxDataset::Options idx,
                     IdxDataset::ParseOptions(reader, kFashionMnistDir, kFashionMnistNorm));
    RETURN_IF_ERROR(reader.CheckAllUsed());
    return IdxDataset::Load(idx);
  }
  return UnknownDataset(name);
}

}  // namespace mantissa
