#ifndef MANTISSA_CLIENT_TENSOR_BYTES_H_
#define MANTISSA_CLIENT_TENSOR_BYTES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

// Raw tensor contents of the Open Inference Protocol (little-endian,
// row-major) for the datatypes mantissad serves: FP32, FP16, BF16, INT64.
// Values travel as doubles: exact for every float type, and for INT64 up to
// 2^53, beyond any token id.
namespace mantissa::cli {

// "FP32, FP16, BF16 or INT64", for error messages.
inline constexpr char kDatatypes[] = "FP32, FP16, BF16 or INT64";

// Bytes per element; 0 for a datatype outside the four.
int DatatypeSize(absl::string_view datatype);

// INVALID_ARGUMENT for an unknown datatype, or an INT64 value that is not a
// whole number in range.
absl::StatusOr<std::string> EncodeValues(absl::string_view datatype,
                                         const std::vector<double>& values);
// INVALID_ARGUMENT for an unknown datatype or a byte count that is not a
// multiple of the element size.
absl::StatusOr<std::vector<double>> DecodeValues(absl::string_view datatype,
                                                 absl::string_view bytes);

}  // namespace mantissa::cli

#endif  // MANTISSA_CLIENT_TENSOR_BYTES_H_
