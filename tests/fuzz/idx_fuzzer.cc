// Fuzzes the IDX reader (plain and gzipped MNIST-layout files): the input is
// the file. Read as images and as labels, whole and cut to a limit; whatever
// the header claims, nothing may be allocated beyond what the file holds.

#include <torch/torch.h>

#include <cstddef>
#include <cstdint>

#include "server/data/idx_dataset.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  torch::set_num_threads(1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const mantissa::fuzz::ScratchFile file("train-images-idx3-ubyte");
  file.Write(data, size);
  for (int dims : {3, 1}) {
    for (int64_t limit : {0, 2}) {
      absl::StatusOr<torch::Tensor> t = mantissa::IdxDataset::ReadIdx(file.path(), dims, limit);
      if (!t.ok()) continue;
      FUZZ_CHECK(t->dim() == dims && t->scalar_type() == torch::kUInt8);
      FUZZ_CHECK(limit == 0 || t->size(0) <= limit);
      // Every byte of the tensor came from the (decompressed) file.
      FUZZ_CHECK(t->numel() <= static_cast<int64_t>(size) * 1100);
    }
  }
  return 0;
}
