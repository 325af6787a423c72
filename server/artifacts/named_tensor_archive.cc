#include "server/artifacts/named_tensor_archive.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "server/common/status_macros.h"
#include "server/common/torch_status.h"

namespace mantissa {

void WriteNamedTensors(torch::serialize::OutputArchive& archive, const NamedTensors& tensors) {
  std::vector<std::string> names;
  for (size_t i = 0; i < tensors.size(); ++i) {
    names.push_back(tensors[i].first);
    archive.write(absl::StrCat("t", i), tensors[i].second.detach().to(torch::kCPU));
  }
  archive.write("names", c10::IValue(absl::StrJoin(names, "\n")));
}

absl::StatusOr<NamedTensors> ReadNamedTensors(torch::serialize::InputArchive& archive,
                                              const std::string& what) {
  NamedTensors tensors;
  RETURN_IF_ERROR(GuardTorch(what, [&] {
    c10::IValue names_value;
    archive.read("names", names_value);
    const std::string names = names_value.toStringRef();
    if (names.empty()) return absl::OkStatus();
    for (absl::string_view name : absl::StrSplit(names, '\n')) {
      torch::Tensor t;
      archive.read(absl::StrCat("t", tensors.size()), t);
      tensors.emplace_back(std::string(name), t);
    }
    return absl::OkStatus();
  }));
  return tensors;
}

int64_t ReadArchiveInt(torch::serialize::InputArchive& archive, const std::string& key) {
  c10::IValue value;
  archive.read(key, value);
  return value.toInt();
}

double ReadArchiveDouble(torch::serialize::InputArchive& archive, const std::string& key) {
  c10::IValue value;
  archive.read(key, value);
  return value.toDouble();
}

std::string ReadArchiveString(torch::serialize::InputArchive& archive, const std::string& key) {
  c10::IValue value;
  archive.read(key, value);
  return value.toStringRef();
}

absl::Status CheckFormatVersion(torch::serialize::InputArchive& archive, int64_t expected,
                                const std::string& what) {
  const int64_t version = ReadArchiveInt(archive, "format_version");
  if (version != expected) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": format version ", version, ", expected ", expected));
  }
  return absl::OkStatus();
}

}  // namespace mantissa
