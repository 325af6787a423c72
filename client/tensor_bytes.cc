#include "client/tensor_bytes.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "client/float16.h"

namespace mantissa::cli {
namespace {

template <typename T>
void Append(T value, std::string* out) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));
  out->append(bytes, sizeof(T));
}

template <typename T>
T Read(const char* data) {
  T value;
  std::memcpy(&value, data, sizeof(T));
  return value;
}

absl::Status UnknownDatatype(absl::string_view datatype) {
  return absl::InvalidArgumentError(
      absl::StrCat("datatype '", datatype, "' is not one of ", kDatatypes));
}

}  // namespace

int DatatypeSize(absl::string_view datatype) {
  if (datatype == "FP32") return 4;
  if (datatype == "FP16" || datatype == "BF16") return 2;
  if (datatype == "INT64") return 8;
  return 0;
}

absl::StatusOr<std::string> EncodeValues(absl::string_view datatype,
                                         const std::vector<double>& values) {
  const int size = DatatypeSize(datatype);
  if (size == 0) return UnknownDatatype(datatype);
  std::string out;
  out.reserve(values.size() * size);
  for (size_t i = 0; i < values.size(); ++i) {
    const double value = values[i];
    if (datatype == "FP32") {
      Append(static_cast<float>(value), &out);
    } else if (datatype == "FP16") {
      Append(FloatToHalf(static_cast<float>(value)), &out);
    } else if (datatype == "BF16") {
      Append(FloatToBfloat16(static_cast<float>(value)), &out);
    } else {
      // 2^63 itself is out of range; every double below it converts exactly.
      if (std::trunc(value) != value || !(std::fabs(value) < 9223372036854775808.0)) {
        return absl::InvalidArgumentError(
            absl::StrCat("value ", i, " (", value, ") is not a whole number that fits INT64"));
      }
      Append(static_cast<int64_t>(value), &out);
    }
  }
  return out;
}

absl::StatusOr<std::vector<double>> DecodeValues(absl::string_view datatype,
                                                 absl::string_view bytes) {
  const int size = DatatypeSize(datatype);
  if (size == 0) return UnknownDatatype(datatype);
  if (bytes.size() % size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(bytes.size(),
                                                   " bytes are not a whole number of ", datatype,
                                                   " values (", size, " bytes each)"));
  }
  std::vector<double> values;
  values.reserve(bytes.size() / size);
  for (size_t offset = 0; offset < bytes.size(); offset += size) {
    const char* data = bytes.data() + offset;
    if (datatype == "FP32") {
      values.push_back(Read<float>(data));
    } else if (datatype == "FP16") {
      values.push_back(HalfToFloat(Read<uint16_t>(data)));
    } else if (datatype == "BF16") {
      values.push_back(Bfloat16ToFloat(Read<uint16_t>(data)));
    } else {
      values.push_back(static_cast<double>(Read<int64_t>(data)));
    }
  }
  return values;
}

}  // namespace mantissa::cli
