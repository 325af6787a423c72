// Writes a small TorchScript classifier for tests, without Python:
//   write_torchscript_model OUT.pt IN_FEATURES HIDDEN CLASSES [SEED]
// The integration tests (which do not link torch) run it to get a model file
// for `--model torchscript --model_options path=OUT.pt`.

#include <cstdint>
#include <cstdio>

#include "absl/strings/numbers.h"
#include "tests/testing/torchscript_writer.h"

int main(int argc, char** argv) {
  int64_t in = 0, hidden = 0, classes = 0;
  uint64_t seed = 0;
  if ((argc != 5 && argc != 6) || !absl::SimpleAtoi(argv[2], &in) ||
      !absl::SimpleAtoi(argv[3], &hidden) || !absl::SimpleAtoi(argv[4], &classes) ||
      (argc == 6 && !absl::SimpleAtoi(argv[5], &seed))) {
    std::fprintf(stderr, "usage: %s OUT.pt IN_FEATURES HIDDEN CLASSES [SEED]\n", argv[0]);
    return 2;
  }
  const absl::Status status =
      mantissa::testing::WriteTorchScriptMlp(argv[1], in, hidden, classes, seed);
  if (!status.ok()) {
    std::fprintf(stderr, "%s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
