#ifndef MANTISSA_CLIENT_FLOAT16_H_
#define MANTISSA_CLIENT_FLOAT16_H_

#include <cstdint>

// IEEE half (FP16) and bfloat16 (BF16) bit patterns, for the CLI's raw
// inference tensors without LibTorch. float -> 16 bits rounds to nearest,
// ties to even, as LibTorch's casts do; NaN stays NaN (quiet) and values past
// the format's range become infinities.
namespace mantissa::cli {

uint16_t FloatToHalf(float value);
float HalfToFloat(uint16_t bits);
uint16_t FloatToBfloat16(float value);
float Bfloat16ToFloat(uint16_t bits);

}  // namespace mantissa::cli

#endif  // MANTISSA_CLIENT_FLOAT16_H_
