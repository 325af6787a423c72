// Writes small TorchScript models for tests, without Python:
//   write_torchscript_model OUT.pt IN_FEATURES HIDDEN CLASSES [SEED]
//   write_torchscript_model --bf16-overflow OUT.pt FEATURES
// The integration tests (which do not link torch) run it to get a model file
// for `--model torchscript --model_options path=OUT.pt` or `mantissa load`.
// The second form writes a model that is finite in fp32 and overflows when
// cast to bf16 (see WriteTorchScriptBf16Overflow).

#include <cstdint>
#include <cstdio>
#include <cstring>

#include "absl/strings/numbers.h"
#include "tests/testing/torchscript_writer.h"

int main(int argc, char** argv) {
  absl::Status status;
  if (argc == 4 && std::strcmp(argv[1], "--bf16-overflow") == 0) {
    int64_t features = 0;
    if (!absl::SimpleAtoi(argv[3], &features)) {
      std::fprintf(stderr, "usage: %s --bf16-overflow OUT.pt FEATURES\n", argv[0]);
      return 2;
    }
    status = mantissa::testing::WriteTorchScriptBf16Overflow(argv[2], features);
  } else {
    int64_t in = 0, hidden = 0, classes = 0;
    uint64_t seed = 0;
    if ((argc != 5 && argc != 6) || !absl::SimpleAtoi(argv[2], &in) ||
        !absl::SimpleAtoi(argv[3], &hidden) || !absl::SimpleAtoi(argv[4], &classes) ||
        (argc == 6 && !absl::SimpleAtoi(argv[5], &seed))) {
      std::fprintf(stderr,
                   "usage: %s OUT.pt IN_FEATURES HIDDEN CLASSES [SEED]\n"
                   "       %s --bf16-overflow OUT.pt FEATURES\n",
                   argv[0], argv[0]);
      return 2;
    }
    status = mantissa::testing::WriteTorchScriptMlp(argv[1], in, hidden, classes, seed);
  }
  if (!status.ok()) {
    std::fprintf(stderr, "%s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
