#ifndef MANTISSA_TESTS_TESTING_FASHION_MNIST_H_
#define MANTISSA_TESTS_TESTING_FASHION_MNIST_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace mantissa::testing {

// Where Debian's dataset-fashion-mnist package installs the IDX files.
inline constexpr char kFashionMnistDir[] = "/usr/share/datasets/fashion-mnist";

// The first `count` test images of Fashion-MNIST as the daemon's dataset
// feeds them to a model: [count, 1, 28, 28] row-major, scaled to [0, 1] and
// normalised with mean 0.2860, std 0.3530; and their labels. Torch-free, for
// the integration tests that send real images to a served model.
struct LabelledImages {
  std::vector<float> pixels;
  std::vector<int> labels;
  int64_t count = 0;
};
absl::StatusOr<LabelledImages> ReadFashionMnistTest(int64_t count,
                                                    const std::string& dir = kFashionMnistDir);

}  // namespace mantissa::testing

#endif  // MANTISSA_TESTS_TESTING_FASHION_MNIST_H_
