#include "tests/testing/fashion_mnist.h"

#include <zlib.h>

#include <memory>

#include "absl/strings/str_cat.h"

namespace mantissa::testing {
namespace {

// The header (magic, then one big-endian int32 per dimension) and the first
// `items` items of a gzipped IDX file.
absl::StatusOr<std::string> ReadIdxPrefix(const std::string& path, int dims, int64_t item_bytes,
                                          int64_t items) {
  std::unique_ptr<gzFile_s, int (*)(gzFile)> file(gzopen(path.c_str(), "rb"), gzclose);
  if (file == nullptr) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  const int64_t size = 4 + 4 * dims + item_bytes * items;
  std::string bytes(size, '\0');
  if (gzread(file.get(), bytes.data(), static_cast<unsigned>(size)) != size) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": fewer than ", items, " items"));
  }
  return bytes;
}

}  // namespace

absl::StatusOr<LabelledImages> ReadFashionMnistTest(int64_t count, const std::string& dir) {
  constexpr int64_t kPixels = 28 * 28;
  auto images = ReadIdxPrefix(dir + "/t10k-images-idx3-ubyte.gz", 3, kPixels, count);
  if (!images.ok()) return images.status();
  auto labels = ReadIdxPrefix(dir + "/t10k-labels-idx1-ubyte.gz", 1, 1, count);
  if (!labels.ok()) return labels.status();
  LabelledImages result;
  result.count = count;
  result.pixels.resize(count * kPixels);
  for (int64_t i = 0; i < count * kPixels; ++i) {
    const float x = static_cast<unsigned char>((*images)[16 + i]) / 255.0f;
    result.pixels[i] = (x - 0.2860f) / 0.3530f;
  }
  for (int64_t i = 0; i < count; ++i) {
    result.labels.push_back(static_cast<unsigned char>((*labels)[8 + i]));
  }
  return result;
}

}  // namespace mantissa::testing
