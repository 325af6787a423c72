#include "client/float16.h"

#include <cstring>

namespace mantissa::cli {
namespace {

uint32_t Bits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits;
}

float FromBits(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

}  // namespace

uint16_t FloatToHalf(float value) {
  uint32_t f = Bits(value);
  const uint16_t sign = static_cast<uint16_t>((f >> 16) & 0x8000u);
  f &= 0x7fffffffu;
  if (f > 0x7f800000u) return sign | 0x7e00u;  // NaN
  // 65520 and above (half's max 65504 plus half an ulp) round to infinity.
  if (f >= 0x477ff000u) return sign | 0x7c00u;
  if (f < 0x38800000u) {
    // Below half's smallest normal (2^-14): a subnormal, a multiple of 2^-24.
    // Adding 0.5, whose float ulp is 2^-24, rounds to that multiple in
    // hardware (ties to even); the low mantissa bits then hold the count.
    const float rounded = FromBits(f) + 0.5f;
    return sign | static_cast<uint16_t>(Bits(rounded) - 0x3f000000u);
  }
  // Normal: rebias the exponent (127 -> 15) and round the 13 dropped bits to
  // nearest even; a carry into the exponent is the correct result.
  const uint32_t odd = (f >> 13) & 1u;
  f += 0xc8000fffu + odd;
  return sign | static_cast<uint16_t>(f >> 13);
}

float HalfToFloat(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1fu;
  const uint32_t mantissa = bits & 0x3ffu;
  if (exponent == 0x1f) return FromBits(sign | 0x7f800000u | (mantissa << 13));
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24, exact in float.
    const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
    return sign != 0 ? -magnitude : magnitude;
  }
  return FromBits(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

uint16_t FloatToBfloat16(float value) {
  uint32_t f = Bits(value);
  if ((f & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((f >> 16) | 0x40u);  // NaN
  f += 0x7fffu + ((f >> 16) & 1u);
  return static_cast<uint16_t>(f >> 16);
}

float Bfloat16ToFloat(uint16_t bits) { return FromBits(static_cast<uint32_t>(bits) << 16); }

}  // namespace mantissa::cli
