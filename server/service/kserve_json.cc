#include "server/service/kserve_json.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "rapidjson/document.h"
#include "rapidjson/encodedstream.h"
#include "rapidjson/error/en.h"
#include "rapidjson/memorystream.h"
#include "rapidjson/reader.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace mantissa {
namespace {

// Raw contents are little-endian; values are copied as host bytes.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "kserve_json copies raw contents as host bytes: little-endian hosts only");

// Outputs' NaN and infinities pass through as NaN / Infinity / -Infinity (as
// Python's json module writes and reads them): refusing them would hide what
// a model returned. Requests are standard JSON (see ParseJson).
using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer, rapidjson::UTF8<>, rapidjson::UTF8<>,
                                     rapidjson::CrtAllocator, rapidjson::kWriteNanAndInfFlag>;
using ParameterMap = google::protobuf::Map<std::string, inference::InferParameter>;
using Json = rapidjson::Value;

// Deepest nesting a body may have: a request is an object of tensors whose
// data nests once per dimension, and no served tensor has 50 dimensions.
constexpr int kMaxJsonDepth = 64;

// How one datatype's elements are written in JSON and raw contents.
enum class Kind { kBool, kInt, kUint, kFloat, kHalf, kBfloat16, kBytes };
struct Datatype {
  absl::string_view name;
  Kind kind;
  int size;  // bytes per element; 0 for BYTES (4-byte length + bytes each)
};

constexpr Datatype kDatatypes[] = {
    {"BOOL", Kind::kBool, 1},   {"UINT8", Kind::kUint, 1},    {"UINT16", Kind::kUint, 2},
    {"UINT32", Kind::kUint, 4}, {"UINT64", Kind::kUint, 8},   {"INT8", Kind::kInt, 1},
    {"INT16", Kind::kInt, 2},   {"INT32", Kind::kInt, 4},     {"INT64", Kind::kInt, 8},
    {"FP16", Kind::kHalf, 2},   {"BF16", Kind::kBfloat16, 2}, {"FP32", Kind::kFloat, 4},
    {"FP64", Kind::kFloat, 8},  {"BYTES", Kind::kBytes, 0},
};

const Datatype* FindDatatype(absl::string_view name) {
  for (const Datatype& d : kDatatypes) {
    if (d.name == name) return &d;
  }
  return nullptr;
}

std::string ValidDatatypes() {
  return absl::StrJoin(kDatatypes, ", ",
                       [](std::string* out, const Datatype& d) { absl::StrAppend(out, d.name); });
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

// --- Parsing -------------------------------------------------------------

absl::Status Invalid(absl::string_view where, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", what));
}

absl::StatusOr<inference::InferParameter> ParameterFromJson(const Json& value,
                                                            absl::string_view where,
                                                            absl::string_view key) {
  inference::InferParameter p;
  if (value.IsBool()) {
    p.set_bool_param(value.GetBool());
  } else if (value.IsInt64()) {
    p.set_int64_param(value.GetInt64());
  } else if (value.IsUint64()) {
    p.set_uint64_param(value.GetUint64());
  } else if (value.IsNumber()) {
    p.set_double_param(value.GetDouble());
  } else if (value.IsString()) {
    p.set_string_param(std::string(value.GetString(), value.GetStringLength()));
  } else {
    return Invalid(where, absl::StrCat("parameter \"", key, "\" must be a bool, number or string"));
  }
  return p;
}

// Copies the JSON object `parameters` into `out`, except the keys the REST
// layer consumes itself (`skip`); `bools` must be booleans when present.
absl::Status ParseParameters(const Json& parameters, absl::string_view where,
                             std::initializer_list<absl::string_view> skip,
                             std::initializer_list<absl::string_view> bools, ParameterMap* out) {
  if (!parameters.IsObject()) return Invalid(where, "\"parameters\" must be an object");
  for (auto it = parameters.MemberBegin(); it != parameters.MemberEnd(); ++it) {
    const absl::string_view key(it->name.GetString(), it->name.GetStringLength());
    if (std::find(skip.begin(), skip.end(), key) != skip.end()) continue;
    if (std::find(bools.begin(), bools.end(), key) != bools.end() && !it->value.IsBool()) {
      return Invalid(where, absl::StrCat("parameter \"", key, "\" must be true or false"));
    }
    auto p = ParameterFromJson(it->value, where, key);
    if (!p.ok()) return p.status();
    (*out)[std::string(key)] = *std::move(p);
  }
  return absl::OkStatus();
}

template <typename T>
void AppendBytes(T value, std::string* out) {
  out->append(reinterpret_cast<const char*>(&value), sizeof(T));
}

// Appends one JSON element as `type`'s raw bytes; false when it does not fit.
bool AppendElement(const Json& v, const Datatype& type, std::string* out) {
  switch (type.kind) {
    case Kind::kBool:
      if (!v.IsBool()) return false;
      out->push_back(v.GetBool() ? 1 : 0);
      return true;
    case Kind::kInt: {
      if (!v.IsInt64()) return false;
      const int64_t x = v.GetInt64();
      const int bits = type.size * 8;
      if (bits < 64 && (x < -(int64_t{1} << (bits - 1)) || x >= (int64_t{1} << (bits - 1)))) {
        return false;
      }
      out->append(reinterpret_cast<const char*>(&x), type.size);  // low bytes: little-endian
      return true;
    }
    case Kind::kUint: {
      if (!v.IsUint64()) return false;
      const uint64_t x = v.GetUint64();
      if (type.size < 8 && x >> (type.size * 8) != 0) return false;
      out->append(reinterpret_cast<const char*>(&x), type.size);
      return true;
    }
    case Kind::kFloat:
      if (!v.IsNumber()) return false;
      if (type.size == 4) {
        AppendBytes(static_cast<float>(v.GetDouble()), out);
      } else {
        AppendBytes(v.GetDouble(), out);
      }
      return true;
    case Kind::kHalf:
    case Kind::kBfloat16:
      if (!v.IsNumber()) return false;
      AppendBytes(
          type.kind == Kind::kHalf ? ToHalfBits(v.GetDouble()) : ToBfloat16Bits(v.GetDouble()),
          out);
      return true;
    case Kind::kBytes:
      if (!v.IsString()) return false;
      AppendBytes(static_cast<uint32_t>(v.GetStringLength()), out);
      out->append(v.GetString(), v.GetStringLength());
      return true;
  }
  return false;
}

absl::string_view ElementWanted(Kind kind) {
  switch (kind) {
    case Kind::kBool:
      return "true or false";
    case Kind::kInt:
    case Kind::kUint:
      return "an integer in the datatype's range";
    case Kind::kBytes:
      return "a string";
    default:
      return "a number";
  }
}

// Flattens `data` (flat or nested arrays, row-major) into raw bytes without
// recursion, so deep nesting cannot exhaust the stack. Returns the count.
absl::StatusOr<int64_t> FlattenData(const Json& data, const Datatype& type, absl::string_view where,
                                    std::string* out) {
  if (!data.IsArray()) return Invalid(where, "\"data\" must be an array");
  std::vector<std::pair<const Json*, rapidjson::SizeType>> stack = {{&data, 0}};
  int64_t count = 0;
  while (!stack.empty()) {
    auto& [array, next] = stack.back();
    if (next == array->Size()) {
      stack.pop_back();
      continue;
    }
    const Json& v = (*array)[next++];
    if (v.IsArray()) {
      stack.emplace_back(&v, 0);
      continue;
    }
    if (!AppendElement(v, type, out)) {
      return Invalid(where, absl::StrCat("data element ", count, " is not ",
                                         ElementWanted(type.kind), " (datatype ", type.name, ")"));
    }
    ++count;
  }
  return count;
}

absl::StatusOr<std::vector<int64_t>> ParseShape(const Json& shape, absl::string_view where,
                                                int64_t* numel) {
  if (!shape.IsArray()) return Invalid(where, "\"shape\" must be an array of integers");
  std::vector<int64_t> dims;
  *numel = 1;
  for (const Json& d : shape.GetArray()) {
    if (!d.IsInt64() || d.GetInt64() < 0) {
      return Invalid(where, "\"shape\" must hold integers >= 0");
    }
    dims.push_back(d.GetInt64());
    // Bounded so that byte counts (up to 8 per element) cannot overflow.
    if (__builtin_mul_overflow(*numel, d.GetInt64(), numel) ||
        *numel > std::numeric_limits<int64_t>::max() / 8) {
      return Invalid(where, absl::StrCat("shape ", ShapeString(dims), "... has too many elements"));
    }
  }
  return dims;
}

const Json* Member(const Json& object, const char* key) {
  auto it = object.FindMember(key);
  return it == object.MemberEnd() ? nullptr : &it->value;
}

absl::StatusOr<std::string> StringMember(const Json& object, const char* key,
                                         absl::string_view where, bool required) {
  const Json* v = Member(object, key);
  if (v == nullptr) {
    if (required) return Invalid(where, absl::StrCat("\"", key, "\" is required"));
    return std::string();
  }
  if (!v->IsString()) return Invalid(where, absl::StrCat("\"", key, "\" must be a string"));
  return std::string(v->GetString(), v->GetStringLength());
}

// Where the binary inputs are read from, in input order.
struct BinaryTail {
  absl::string_view bytes;
  uint64_t offset = 0;
};

// The raw bytes of one input: its binary_data_size bytes from the tail, or
// its JSON data; either way exactly the shape's worth.
absl::Status ParseInputData(const Json& input, const Datatype& type, int64_t numel,
                            const std::vector<int64_t>& shape, const std::string& where,
                            BinaryTail* tail, std::string* raw) {
  const Json* parameters = Member(input, "parameters");
  const Json* binary_size = parameters != nullptr && parameters->IsObject()
                                ? Member(*parameters, "binary_data_size")
                                : nullptr;
  const Json* data = Member(input, "data");
  if (binary_size != nullptr) {
    if (!binary_size->IsUint64()) {
      return Invalid(where, "parameter \"binary_data_size\" must be an integer >= 0");
    }
    if (data != nullptr) return Invalid(where, "has both \"data\" and binary_data_size");
    const uint64_t size = binary_size->GetUint64();
    if (size > tail->bytes.size() - tail->offset) {
      return Invalid(where, absl::StrCat("binary_data_size ", size, " runs past the body's ",
                                         tail->bytes.size() - tail->offset,
                                         " binary bytes left (Inference-Header-Content-Length "
                                         "must be the JSON's length)"));
    }
    if (type.size > 0 && size != static_cast<uint64_t>(numel) * type.size) {
      return Invalid(where, absl::StrCat("binary_data_size ", size, ", shape ", ShapeString(shape),
                                         " of ", type.name, " needs ", numel * type.size));
    }
    const absl::string_view bytes = tail->bytes.substr(tail->offset, size);
    raw->assign(bytes.data(), bytes.size());
    tail->offset += size;
    return absl::OkStatus();
  }
  if (data == nullptr)
    return Invalid(where, "\"data\" (or parameter binary_data_size) is required");
  auto count = FlattenData(*data, type, where, raw);
  if (!count.ok()) return count.status();
  if (*count != numel) {
    return Invalid(where, absl::StrCat("data has ", *count, " elements, shape ", ShapeString(shape),
                                       " needs ", numel));
  }
  return absl::OkStatus();
}

absl::Status ParseInput(const Json& input, size_t index, BinaryTail* tail,
                        inference::ModelInferRequest* request) {
  std::string where = absl::StrCat("inputs[", index, "]");
  if (!input.IsObject()) return Invalid(where, "must be an object");
  auto name = StringMember(input, "name", where, true);
  if (!name.ok()) return name.status();
  where = absl::StrCat("input \"", *name, "\"");
  auto datatype = StringMember(input, "datatype", where, true);
  if (!datatype.ok()) return datatype.status();
  const Datatype* type = FindDatatype(*datatype);
  if (type == nullptr) {
    return Invalid(where, absl::StrCat("unknown datatype \"", *datatype, "\"; expected one of ",
                                       ValidDatatypes()));
  }
  const Json* shape_json = Member(input, "shape");
  if (shape_json == nullptr) return Invalid(where, "\"shape\" is required");
  int64_t numel = 0;
  auto shape = ParseShape(*shape_json, where, &numel);
  if (!shape.ok()) return shape.status();

  auto* tensor = request->add_inputs();
  tensor->set_name(*name);
  tensor->set_datatype(*datatype);
  for (int64_t d : *shape) tensor->add_shape(d);
  if (const Json* parameters = Member(input, "parameters"); parameters != nullptr) {
    if (absl::Status s = ParseParameters(*parameters, where, {"binary_data_size"}, {},
                                         tensor->mutable_parameters());
        !s.ok()) {
      return s;
    }
  }
  return ParseInputData(input, *type, numel, *shape, where, tail,
                        request->add_raw_input_contents());
}

absl::Status ParseOutput(const Json& output, size_t index, inference::ModelInferRequest* request) {
  std::string where = absl::StrCat("outputs[", index, "]");
  if (!output.IsObject()) return Invalid(where, "must be an object");
  auto name = StringMember(output, "name", where, true);
  if (!name.ok()) return name.status();
  auto* requested = request->add_outputs();
  requested->set_name(*name);
  const Json* parameters = Member(output, "parameters");
  if (parameters == nullptr) return absl::OkStatus();
  return ParseParameters(*parameters, absl::StrCat("output \"", *name, "\""), {}, {"binary_data"},
                         requested->mutable_parameters());
}

// The DOM builder with numbers converted here: RapidJSON 1.1's full-precision
// strtod reads out of bounds on long mantissas with large exponents ("3...3e-1135",
// found by fuzzing) and its default one rounds twice. The reader hands numbers
// over as text (kParseNumbersAsStringsFlag); absl's from_chars rounds them once.
class NumberConverter {
 public:
  explicit NumberConverter(rapidjson::Document& doc) : doc_(doc) {}

  bool Null() { return doc_.Null(); }
  bool Bool(bool b) { return doc_.Bool(b); }
  bool Int(int i) { return doc_.Int(i); }
  bool Uint(unsigned u) { return doc_.Uint(u); }
  bool Int64(int64_t i) { return doc_.Int64(i); }
  bool Uint64(uint64_t u) { return doc_.Uint64(u); }
  bool Double(double d) { return doc_.Double(d); }
  bool String(const char* s, rapidjson::SizeType n, bool copy) { return doc_.String(s, n, copy); }
  bool StartObject() { return doc_.StartObject(); }
  bool Key(const char* s, rapidjson::SizeType n, bool copy) { return doc_.Key(s, n, copy); }
  bool EndObject(rapidjson::SizeType n) { return doc_.EndObject(n); }
  bool StartArray() { return doc_.StartArray(); }
  bool EndArray(rapidjson::SizeType n) { return doc_.EndArray(n); }

  // `text` is a JSON number (the reader checked its grammar). Integers stay
  // integers as RapidJSON makes them; others, and integers beyond 64 bits,
  // become the nearest double.
  bool RawNumber(const char* s, rapidjson::SizeType n, bool) {
    const absl::string_view text(s, n);
    if (text.find_first_of(".eE") == absl::string_view::npos) {
      int64_t i = 0;
      uint64_t u = 0;
      if (text[0] == '-' && absl::SimpleAtoi(text, &i)) return doc_.Int64(i);
      if (text[0] != '-' && absl::SimpleAtoi(text, &u)) return doc_.Uint64(u);
    }
    double d = 0;
    if (!absl::SimpleAtod(text, &d) || !std::isfinite(d)) {
      out_of_range_ = std::string(text.substr(0, 32));
      return false;
    }
    return doc_.Double(d);
  }

  // The number that stopped the parse, "" when none did.
  const std::string& out_of_range() const { return out_of_range_; }

 private:
  rapidjson::Document& doc_;
  std::string out_of_range_;
};

// Whether arrays and objects nest deeper than `limit` anywhere outside
// strings. Checked before parsing: every level costs the parser a value, so
// a body of nothing but '[' would cost tens of times its size in memory.
bool NestsDeeperThan(absl::string_view json, int limit) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < json.size(); ++i) {
    const char c = json[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // the escaped character cannot end the string
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return true;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return false;
}

absl::StatusOr<rapidjson::Document> ParseJson(absl::string_view json, absl::string_view what) {
  if (NestsDeeperThan(json, kMaxJsonDepth)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": arrays and objects nest deeper than ", kMaxJsonDepth, " levels"));
  }
  // Iterative: nesting depth costs heap (bounded by the body limit), not stack.
  // Standard JSON only: RapidJSON 1.1's NaN/Infinity extension misparses
  // "NaNe-7" into its full-precision strtod with no digits (found by fuzzing).
  constexpr unsigned kFlags =
      rapidjson::kParseIterativeFlag | rapidjson::kParseNumbersAsStringsFlag;
  rapidjson::Document doc;
  rapidjson::Reader reader;
  std::string out_of_range;
  auto parse = [&](rapidjson::Document& target) {
    rapidjson::MemoryStream memory(json.data(), json.size());
    rapidjson::EncodedInputStream<rapidjson::UTF8<>, rapidjson::MemoryStream> in(memory);
    NumberConverter converter(target);
    const bool ok = !reader.Parse<kFlags>(in, converter).IsError();
    out_of_range = converter.out_of_range();
    return ok;
  };
  doc.Populate(parse);
  if (!out_of_range.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": the number ", out_of_range, " is beyond the range of a double"));
  }
  if (reader.HasParseError()) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " is not valid JSON: ", rapidjson::GetParseError_En(reader.GetParseErrorCode()),
        " (at byte ", reader.GetErrorOffset(), ")"));
  }
  if (!doc.IsObject()) return absl::InvalidArgumentError(absl::StrCat(what, " must be an object"));
  return doc;
}

// --- Writing -------------------------------------------------------------

void WriteString(JsonWriter& w, absl::string_view s) {
  w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
}

void WriteParameter(JsonWriter& w, const inference::InferParameter& p) {
  switch (p.parameter_choice_case()) {
    case inference::InferParameter::kBoolParam:
      w.Bool(p.bool_param());
      break;
    case inference::InferParameter::kInt64Param:
      w.Int64(p.int64_param());
      break;
    case inference::InferParameter::kStringParam:
      WriteString(w, p.string_param());
      break;
    case inference::InferParameter::kDoubleParam:
      w.Double(p.double_param());
      break;
    case inference::InferParameter::kUint64Param:
      w.Uint64(p.uint64_param());
      break;
    default:
      w.Null();
  }
}

// Writes `parameters` (sorted, so bodies are reproducible) and binary_data_size.
void WriteParameters(JsonWriter& w, const ParameterMap& parameters,
                     std::optional<uint64_t> binary_data_size = std::nullopt) {
  if (parameters.empty() && !binary_data_size) return;
  std::vector<std::string> keys;
  for (const auto& [key, value] : parameters) keys.push_back(key);
  std::sort(keys.begin(), keys.end());
  w.Key("parameters");
  w.StartObject();
  for (const std::string& key : keys) {
    WriteString(w, key);
    WriteParameter(w, parameters.at(key));
  }
  if (binary_data_size) {
    w.Key("binary_data_size");
    w.Uint64(*binary_data_size);
  }
  w.EndObject();
}

template <typename T>
T Load(const char* p) {
  T value;
  std::memcpy(&value, p, sizeof(T));
  return value;
}

// Writes one raw element of `type` at `p` as a JSON value.
void WriteElement(JsonWriter& w, const Datatype& type, const char* p) {
  switch (type.kind) {
    case Kind::kBool:
      w.Bool(*p != 0);
      return;
    case Kind::kInt:
      if (type.size == 1) w.Int(Load<int8_t>(p));
      if (type.size == 2) w.Int(Load<int16_t>(p));
      if (type.size == 4) w.Int(Load<int32_t>(p));
      if (type.size == 8) w.Int64(Load<int64_t>(p));
      return;
    case Kind::kUint:
      if (type.size == 1) w.Uint(Load<uint8_t>(p));
      if (type.size == 2) w.Uint(Load<uint16_t>(p));
      if (type.size == 4) w.Uint(Load<uint32_t>(p));
      if (type.size == 8) w.Uint64(Load<uint64_t>(p));
      return;
    case Kind::kFloat:
      w.Double(type.size == 4 ? Load<float>(p) : Load<double>(p));
      return;
    case Kind::kHalf:
      w.Double(FromHalfBits(Load<uint16_t>(p)));
      return;
    case Kind::kBfloat16:
      w.Double(FromBfloat16Bits(Load<uint16_t>(p)));
      return;
    case Kind::kBytes:
      return;  // written by WriteData, which knows each element's length
  }
}

// Writes the raw contents of an output of `numel` elements as a flat array.
absl::Status WriteData(JsonWriter& w, const Datatype& type, int64_t numel, absl::string_view raw,
                       absl::string_view where) {
  w.StartArray();
  if (type.kind == Kind::kBytes) {
    size_t offset = 0;
    for (int64_t i = 0; i < numel; ++i) {
      if (raw.size() - offset < 4) return absl::InternalError(absl::StrCat(where, ": short BYTES"));
      const uint32_t length = Load<uint32_t>(raw.data() + offset);
      offset += 4;
      if (raw.size() - offset < length) {
        return absl::InternalError(absl::StrCat(where, ": short BYTES"));
      }
      WriteString(w, raw.substr(offset, length));
      offset += length;
    }
  } else {
    if (raw.size() != static_cast<uint64_t>(numel) * type.size) {
      return absl::InternalError(absl::StrCat(where, ": ", raw.size(), " bytes of ", type.name,
                                              " for ", numel, " elements"));
    }
    for (int64_t i = 0; i < numel; ++i) WriteElement(w, type, raw.data() + i * type.size);
  }
  w.EndArray();
  return absl::OkStatus();
}

// Whether `request` asked for output `name` in binary.
bool WantsBinary(const inference::ModelInferRequest& request, const std::string& name) {
  for (const auto& output : request.outputs()) {
    if (output.name() != name) continue;
    auto it = output.parameters().find("binary_data");
    if (it != output.parameters().end()) return it->second.bool_param();
  }
  auto it = request.parameters().find("binary_data_output");
  return it != request.parameters().end() && it->second.bool_param();
}

absl::Status WriteOutput(JsonWriter& w, const inference::ModelInferResponse::InferOutputTensor& out,
                         absl::string_view raw, bool binary) {
  const std::string where = absl::StrCat("output \"", out.name(), "\"");
  const Datatype* type = FindDatatype(out.datatype());
  if (type == nullptr) {
    return absl::InternalError(absl::StrCat(where, ": unknown datatype ", out.datatype()));
  }
  int64_t numel = 1;
  for (int64_t d : out.shape()) numel *= d;
  w.StartObject();
  w.Key("name");
  WriteString(w, out.name());
  w.Key("datatype");
  WriteString(w, out.datatype());
  w.Key("shape");
  w.StartArray();
  for (int64_t d : out.shape()) w.Int64(d);
  w.EndArray();
  WriteParameters(w, out.parameters(), binary ? std::optional<uint64_t>(raw.size()) : std::nullopt);
  if (!binary) {
    w.Key("data");
    if (absl::Status s = WriteData(w, *type, numel, raw, where); !s.ok()) return s;
  }
  w.EndObject();
  return absl::OkStatus();
}

void WriteDuration(JsonWriter& w, const char* key, const inference::StatisticDuration& d) {
  w.Key(key);
  w.StartObject();
  w.Key("count");
  w.Uint64(d.count());
  w.Key("ns");
  w.Uint64(d.ns());
  w.EndObject();
}

void WriteTensorMetadata(
    JsonWriter& w, const char* key,
    const google::protobuf::RepeatedPtrField<inference::ModelMetadataResponse::TensorMetadata>&
        tensors) {
  w.Key(key);
  w.StartArray();
  for (const auto& t : tensors) {
    w.StartObject();
    w.Key("name");
    WriteString(w, t.name());
    w.Key("datatype");
    WriteString(w, t.datatype());
    w.Key("shape");
    w.StartArray();
    for (int64_t d : t.shape()) w.Int64(d);
    w.EndArray();
    w.EndObject();
  }
  w.EndArray();
}

void WriteModelStatistics(JsonWriter& w, const inference::ModelStatistics& s) {
  w.StartObject();
  w.Key("name");
  WriteString(w, s.name());
  w.Key("version");
  WriteString(w, s.version());
  w.Key("last_inference");
  w.Uint64(s.last_inference());
  w.Key("inference_count");
  w.Uint64(s.inference_count());
  w.Key("execution_count");
  w.Uint64(s.execution_count());
  const inference::InferStatistics& i = s.inference_stats();
  w.Key("inference_stats");
  w.StartObject();
  WriteDuration(w, "success", i.success());
  WriteDuration(w, "fail", i.fail());
  WriteDuration(w, "queue", i.queue());
  WriteDuration(w, "compute_input", i.compute_input());
  WriteDuration(w, "compute_infer", i.compute_infer());
  WriteDuration(w, "compute_output", i.compute_output());
  w.EndObject();
  w.Key("batch_stats");
  w.StartArray();
  for (const inference::InferBatchStatistics& b : s.batch_stats()) {
    w.StartObject();
    w.Key("batch_size");
    w.Uint64(b.batch_size());
    WriteDuration(w, "compute_input", b.compute_input());
    WriteDuration(w, "compute_infer", b.compute_infer());
    WriteDuration(w, "compute_output", b.compute_output());
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
}

// RNE rounding of `value` to a binary float with `mantissa_bits` stored
// bits and `exponent_bits` exponent bits; returns its bit pattern.
uint16_t ToSmallFloatBits(double value, int mantissa_bits, int exponent_bits) {
  const uint16_t sign = std::signbit(value) ? uint16_t(1u << (mantissa_bits + exponent_bits)) : 0;
  const uint16_t infinity = uint16_t(((1u << exponent_bits) - 1) << mantissa_bits);
  if (std::isnan(value)) return sign | infinity | uint16_t(1u << (mantissa_bits - 1));
  const double a = std::fabs(value);
  if (a == 0) return sign;
  const int bias = (1 << (exponent_bits - 1)) - 1;
  const int min_exponent = 1 - bias;
  int e = 0;
  std::frexp(a, &e);
  int exponent = e - 1;  // a = 1.f * 2^exponent
  if (std::isinf(a) || exponent > bias) return sign | infinity;
  // Subnormals share the smallest normal's quantum, so one formula serves both.
  const int quantum_exponent = std::max(exponent, min_exponent) - mantissa_bits;
  const uint64_t n = static_cast<uint64_t>(std::nearbyint(std::ldexp(a, -quantum_exponent)));
  if (exponent < min_exponent) return sign | uint16_t(n);  // n == 2^m is the smallest normal
  uint64_t significand = n;
  if (significand == (uint64_t{1} << (mantissa_bits + 1))) {  // rounded up to the next binade
    significand >>= 1;
    ++exponent;
  }
  if (exponent > bias) return sign | infinity;
  return sign | uint16_t((exponent + bias) << mantissa_bits) |
         uint16_t(significand - (uint64_t{1} << mantissa_bits));
}

double FromSmallFloatBits(uint16_t bits, int mantissa_bits, int exponent_bits) {
  const bool negative = (bits >> (mantissa_bits + exponent_bits)) & 1;
  const int exponent_field = (bits >> mantissa_bits) & ((1 << exponent_bits) - 1);
  const int mantissa = bits & ((1 << mantissa_bits) - 1);
  const int bias = (1 << (exponent_bits - 1)) - 1;
  double magnitude;
  if (exponent_field == (1 << exponent_bits) - 1) {
    magnitude = mantissa == 0 ? std::numeric_limits<double>::infinity()
                              : std::numeric_limits<double>::quiet_NaN();
  } else if (exponent_field == 0) {
    magnitude = std::ldexp(mantissa, 1 - bias - mantissa_bits);
  } else {
    magnitude = std::ldexp(mantissa + (1 << mantissa_bits), exponent_field - bias - mantissa_bits);
  }
  return negative ? -magnitude : magnitude;
}

}  // namespace

absl::StatusOr<inference::ModelInferRequest> ParseInferRequest(const RestInferRequest& rest) {
  absl::string_view json = rest.body;
  BinaryTail tail;
  if (rest.json_length) {
    if (*rest.json_length > rest.body.size()) {
      return absl::InvalidArgumentError(absl::StrCat(kInferenceHeaderContentLength, " ",
                                                     *rest.json_length, " exceeds the body's ",
                                                     rest.body.size(), " bytes"));
    }
    json = rest.body.substr(0, *rest.json_length);
    tail.bytes = rest.body.substr(*rest.json_length);
  }
  auto doc = ParseJson(json, "the request body");
  if (!doc.ok()) return doc.status();
  inference::ModelInferRequest request;
  request.set_model_name(rest.model_name);
  request.set_model_version(rest.model_version);
  auto id = StringMember(*doc, "id", "request", false);
  if (!id.ok()) return id.status();
  request.set_id(*id);
  if (const Json* parameters = Member(*doc, "parameters"); parameters != nullptr) {
    if (absl::Status s = ParseParameters(*parameters, "request", {}, {"binary_data_output"},
                                         request.mutable_parameters());
        !s.ok()) {
      return s;
    }
  }
  const Json* inputs = Member(*doc, "inputs");
  if (inputs == nullptr || !inputs->IsArray()) {
    return absl::InvalidArgumentError("request: \"inputs\" must be an array of tensors");
  }
  for (rapidjson::SizeType i = 0; i < inputs->Size(); ++i) {
    if (absl::Status s = ParseInput((*inputs)[i], i, &tail, &request); !s.ok()) return s;
  }
  if (tail.offset != tail.bytes.size()) {
    return absl::InvalidArgumentError(absl::StrCat("request: ", tail.bytes.size(),
                                                   " bytes follow the JSON header, the inputs' ",
                                                   "binary_data_size add up to ", tail.offset));
  }
  if (const Json* outputs = Member(*doc, "outputs"); outputs != nullptr) {
    if (!outputs->IsArray())
      return absl::InvalidArgumentError("request: \"outputs\" must be an array");
    for (rapidjson::SizeType i = 0; i < outputs->Size(); ++i) {
      if (absl::Status s = ParseOutput((*outputs)[i], i, &request); !s.ok()) return s;
    }
  }
  return request;
}

absl::StatusOr<RestBody> WriteInferResponse(const inference::ModelInferRequest& request,
                                            const inference::ModelInferResponse& response) {
  if (response.raw_output_contents_size() != response.outputs_size()) {
    return absl::InternalError(absl::StrCat("the response has ", response.outputs_size(),
                                            " outputs and ", response.raw_output_contents_size(),
                                            " raw contents"));
  }
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  std::string tail;
  bool any_binary = false;
  w.StartObject();
  w.Key("model_name");
  WriteString(w, response.model_name());
  w.Key("model_version");
  WriteString(w, response.model_version());
  if (!response.id().empty()) {
    w.Key("id");
    WriteString(w, response.id());
  }
  WriteParameters(w, response.parameters());
  w.Key("outputs");
  w.StartArray();
  for (int i = 0; i < response.outputs_size(); ++i) {
    const auto& out = response.outputs(i);
    const bool binary = WantsBinary(request, out.name());
    if (absl::Status s = WriteOutput(w, out, response.raw_output_contents(i), binary); !s.ok()) {
      return s;
    }
    if (binary) tail.append(response.raw_output_contents(i));
    any_binary |= binary;
  }
  w.EndArray();
  w.EndObject();
  RestBody body{std::string(buffer.GetString(), buffer.GetSize()), std::nullopt};
  if (any_binary) {
    body.json_length = body.body.size();
    body.body += tail;
  }
  return body;
}

std::string ServerMetadataJson(const inference::ServerMetadataResponse& metadata) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("name");
  WriteString(w, metadata.name());
  w.Key("version");
  WriteString(w, metadata.version());
  w.Key("extensions");
  w.StartArray();
  for (const std::string& e : metadata.extensions()) WriteString(w, e);
  w.EndArray();
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

std::string ModelMetadataJson(const inference::ModelMetadataResponse& metadata) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("name");
  WriteString(w, metadata.name());
  w.Key("versions");
  w.StartArray();
  for (const std::string& v : metadata.versions()) WriteString(w, v);
  w.EndArray();
  w.Key("platform");
  WriteString(w, metadata.platform());
  WriteTensorMetadata(w, "inputs", metadata.inputs());
  WriteTensorMetadata(w, "outputs", metadata.outputs());
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

std::string RepositoryIndexJson(const inference::RepositoryIndexResponse& index) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartArray();
  for (const auto& model : index.models()) {
    w.StartObject();
    w.Key("name");
    WriteString(w, model.name());
    if (!model.version().empty()) {
      w.Key("version");
      WriteString(w, model.version());
    }
    if (!model.state().empty()) {
      w.Key("state");
      WriteString(w, model.state());
    }
    if (!model.reason().empty()) {
      w.Key("reason");
      WriteString(w, model.reason());
    }
    w.EndObject();
  }
  w.EndArray();
  return std::string(buffer.GetString(), buffer.GetSize());
}

std::string StatisticsJson(const inference::ModelStatisticsResponse& statistics) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("model_stats");
  w.StartArray();
  for (const auto& s : statistics.model_stats()) WriteModelStatistics(w, s);
  w.EndArray();
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

std::string BoolJson(absl::string_view key, bool value, absl::string_view name) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  if (!name.empty()) {
    w.Key("name");
    WriteString(w, name);
  }
  WriteString(w, key);
  w.Bool(value);
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

std::string ErrorJson(absl::string_view message) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("error");
  WriteString(w, message);
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

absl::StatusOr<inference::RepositoryIndexRequest> ParseRepositoryIndexRequest(
    absl::string_view body) {
  inference::RepositoryIndexRequest request;
  if (body.find_first_not_of(" \t\r\n") == absl::string_view::npos) return request;
  auto doc = ParseJson(body, "the request body");
  if (!doc.ok()) return doc.status();
  if (const Json* ready = Member(*doc, "ready"); ready != nullptr) {
    if (!ready->IsBool()) return absl::InvalidArgumentError("\"ready\" must be true or false");
    request.set_ready(ready->GetBool());
  }
  return request;
}

int HttpStatusFromStatus(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kUnimplemented:
      return 501;
    case absl::StatusCode::kFailedPrecondition:  // KServe's ModelNotReady
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

uint16_t ToHalfBits(double value) { return ToSmallFloatBits(value, 10, 5); }
uint16_t ToBfloat16Bits(double value) { return ToSmallFloatBits(value, 7, 8); }
double FromHalfBits(uint16_t bits) { return FromSmallFloatBits(bits, 10, 5); }
double FromBfloat16Bits(uint16_t bits) { return FromSmallFloatBits(bits, 7, 8); }

}  // namespace mantissa
