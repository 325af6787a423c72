#ifndef MANTISSA_TESTS_TESTING_TORCHSCRIPT_WRITER_H_
#define MANTISSA_TESTS_TESTING_TORCHSCRIPT_WRITER_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace mantissa::testing {

// Writes a TorchScript classifier to `path`, built from C++ alone (no Python
// needed to make test models): forward(x) = linear(relu(linear(flatten(x, 1),
// w1, b1)), w2, b2) with in_features -> hidden -> classes, Kaiming-style
// weights drawn from `seed`, zero biases. Parameters are float32.
absl::Status WriteTorchScriptMlp(const std::string& path, int64_t in_features, int64_t hidden,
                                 int64_t classes, uint64_t seed = 0);

}  // namespace mantissa::testing

#endif  // MANTISSA_TESTS_TESTING_TORCHSCRIPT_WRITER_H_
