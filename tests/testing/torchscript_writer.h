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

// Writes a TorchScript model that is finite in fp32 and overflows once cast
// to bfloat16: forward(x) = tanh(flatten(x, 1)) * scale, where every element
// of the parameter `scale` [features] is FLT_MAX, which rounds to infinity in
// bf16. For the serving tests of the cast validation's refusal.
absl::Status WriteTorchScriptBf16Overflow(const std::string& path, int64_t features);

}  // namespace mantissa::testing

#endif  // MANTISSA_TESTS_TESTING_TORCHSCRIPT_WRITER_H_
