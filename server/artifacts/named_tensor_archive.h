#ifndef MANTISSA_SERVER_ARTIFACTS_NAMED_TENSOR_ARCHIVE_H_
#define MANTISSA_SERVER_ARTIFACTS_NAMED_TENSOR_ARCHIVE_H_

#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/models/model.h"

namespace mantissa {

// Named tensors inside a LibTorch archive, as checkpoints (their "model"
// part) and the weights files of model versions store them. Tensor names
// hold dots ("0.weight"), which archive keys cannot: the names are stored
// joined by "\n" under "names" and the tensors under "t<i>", in order.
// Each file keeps its own "format_version" (CheckFormatVersion) and saves
// the archive itself.

// Writes `tensors`, detached and on the CPU. Throws c10::Error; run it
// inside GuardTorch.
void WriteNamedTensors(torch::serialize::OutputArchive& archive, const NamedTensors& tensors);

// Reads what WriteNamedTensors wrote. Errors (missing keys, a malformed
// archive) are INTERNAL with `what` in front, e.g. "weights /x/weights.pt".
absl::StatusOr<NamedTensors> ReadNamedTensors(torch::serialize::InputArchive& archive,
                                              const std::string& what);

// The int, double or string an archive holds under `key`. Throw c10::Error
// when it is missing or of another type; run them inside GuardTorch.
int64_t ReadArchiveInt(torch::serialize::InputArchive& archive, const std::string& key);
double ReadArchiveDouble(torch::serialize::InputArchive& archive, const std::string& key);
std::string ReadArchiveString(torch::serialize::InputArchive& archive, const std::string& key);

// Reads the archive's "format_version"; INVALID_ARGUMENT "<what>: format
// version N, expected M" when it is not `expected`. Throws c10::Error when
// the key is missing; run it inside GuardTorch.
absl::Status CheckFormatVersion(torch::serialize::InputArchive& archive, int64_t expected,
                                const std::string& what);

}  // namespace mantissa

#endif  // MANTISSA_SERVER_ARTIFACTS_NAMED_TENSOR_ARCHIVE_H_
