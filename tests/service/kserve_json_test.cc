// The KServe v2 REST bodies <-> gRPC messages, in-process: every datatype,
// flat and nested data, FP16/BF16 rounding, Triton's binary extension, the
// errors that name the field, and the JSON of every other endpoint.

#include "server/service/kserve_json.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "tests/testing/status_matchers.h"

namespace mantissa {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using testing::StatusIs;

absl::StatusOr<inference::ModelInferRequest> Parse(const std::string& body,
                                                   std::optional<uint64_t> json_length = {}) {
  return ParseInferRequest({body, json_length, "m", "2"});
}

template <typename T>
std::string Bytes(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

TEST(KServeJsonTest, FlatAndNestedDataGiveTheSameRawContents) {
  auto flat = Parse(R"({"inputs":[{"name":"x","shape":[2,3],"datatype":"FP32",
                        "data":[1,2,3,4,5,6]}]})");
  auto nested = Parse(R"({"inputs":[{"name":"x","shape":[2,3],"datatype":"FP32",
                          "data":[[1,2,3],[4,5,6]]}]})");
  ASSERT_OK(flat);
  ASSERT_OK(nested);
  EXPECT_EQ(flat->model_name(), "m");
  EXPECT_EQ(flat->model_version(), "2");
  ASSERT_EQ(flat->raw_input_contents_size(), 1);
  EXPECT_EQ(flat->raw_input_contents(0), Bytes<float>({1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(nested->raw_input_contents(0), flat->raw_input_contents(0));
  EXPECT_EQ(flat->inputs(0).name(), "x");
  EXPECT_EQ(flat->inputs(0).datatype(), "FP32");
  EXPECT_THAT(flat->inputs(0).shape(), ::testing::ElementsAre(2, 3));
}

struct DatatypeCase {
  std::string datatype;
  std::string data;
  std::string raw;
};

TEST(KServeJsonTest, EveryDatatypeIsEncodedLittleEndian) {
  const std::vector<DatatypeCase> cases = {
      {"BOOL", "[true,false]", std::string("\x01\x00", 2)},
      {"UINT8", "[0,255]", Bytes<uint8_t>({0, 255})},
      {"UINT16", "[1,65535]", Bytes<uint16_t>({1, 65535})},
      {"UINT32", "[1,4294967295]", Bytes<uint32_t>({1, 4294967295u})},
      {"UINT64", "[1,18446744073709551615]", Bytes<uint64_t>({1, ~uint64_t{0}})},
      {"INT8", "[-128,127]", Bytes<int8_t>({-128, 127})},
      {"INT16", "[-32768,32767]", Bytes<int16_t>({-32768, 32767})},
      {"INT32", "[-2147483648,7]", Bytes<int32_t>({std::numeric_limits<int32_t>::min(), 7})},
      {"INT64", "[-9223372036854775808,7]",
       Bytes<int64_t>({std::numeric_limits<int64_t>::min(), 7})},
      {"FP16", "[1.0,-2.5]", Bytes<uint16_t>({0x3c00, 0xc100})},
      {"BF16", "[1.0,-2.5]", Bytes<uint16_t>({0x3f80, 0xc020})},
      {"FP32", "[0.5,-3]", Bytes<float>({0.5f, -3.0f})},
      {"FP64", "[0.1,-3]", Bytes<double>({0.1, -3.0})},
      {"BYTES", R"(["ab",""])",
       std::string("\x02\x00\x00\x00"
                   "ab"
                   "\x00\x00\x00\x00",
                   10)},
  };
  for (const DatatypeCase& c : cases) {
    auto request = Parse(R"({"inputs":[{"name":"x","shape":[2],"datatype":")" + c.datatype +
                         R"(","data":)" + c.data + "}]}");
    ASSERT_OK(request) << c.datatype;
    EXPECT_EQ(request->raw_input_contents(0), c.raw) << c.datatype;
  }
}

TEST(KServeJsonTest, ValuesOutsideTheDatatypeAreRefusedNamingTheInput) {
  for (const auto& [datatype, data] :
       std::vector<std::pair<std::string, std::string>>{{"INT8", "[128]"},
                                                        {"UINT8", "[-1]"},
                                                        {"UINT16", "[65536]"},
                                                        {"INT32", "[1.5]"},
                                                        {"BOOL", "[1]"},
                                                        {"FP32", "[\"1\"]"},
                                                        {"BYTES", "[1]"}}) {
    EXPECT_THAT(Parse(R"({"inputs":[{"name":"x","shape":[1],"datatype":")" + datatype +
                      R"(","data":)" + data + "}]}"),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(HasSubstr("input \"x\""), HasSubstr("data element 0"))))
        << datatype;
  }
}

TEST(KServeJsonTest, HalfFloatsRoundToNearestEven) {
  EXPECT_EQ(ToHalfBits(1.0), 0x3c00);
  EXPECT_EQ(ToHalfBits(65504.0), 0x7bff);                   // the largest half
  EXPECT_EQ(ToHalfBits(65520.0), 0x7c00);                   // halfway to 65536: rounds up to inf
  EXPECT_EQ(ToHalfBits(65519.0), 0x7bff);                   // below halfway
  EXPECT_EQ(ToHalfBits(1.0 + std::ldexp(1, -11)), 0x3c00);  // tie: to even (down)
  EXPECT_EQ(ToHalfBits(1.0 + 3 * std::ldexp(1, -11)), 0x3c02);  // tie: to even (up)
  EXPECT_EQ(ToHalfBits(1.0 + std::ldexp(1, -11) + std::ldexp(1, -30)), 0x3c01);  // past the tie
  EXPECT_EQ(ToHalfBits(std::ldexp(1, -24)), 0x0001);  // the smallest subnormal
  EXPECT_EQ(ToHalfBits(std::ldexp(1, -25)), 0x0000);  // tie with 0: to even
  EXPECT_EQ(ToHalfBits(std::ldexp(3, -26)), 0x0001);
  EXPECT_EQ(ToHalfBits(-0.0), 0x8000);
  EXPECT_EQ(ToHalfBits(-std::numeric_limits<double>::infinity()), 0xfc00);
  EXPECT_EQ(ToHalfBits(1e300), 0x7c00);
  EXPECT_TRUE(std::isnan(FromHalfBits(ToHalfBits(std::nan("")))));
  EXPECT_EQ(ToBfloat16Bits(1.0 + std::ldexp(1, -8)), 0x3f80);      // tie: to even
  EXPECT_EQ(ToBfloat16Bits(1.0 + 3 * std::ldexp(1, -8)), 0x3f82);  // tie: to even (up)
  EXPECT_EQ(ToBfloat16Bits(3.0e38), 0x7f62);
  EXPECT_EQ(ToBfloat16Bits(std::ldexp(1, -133)), 0x0001);  // the smallest subnormal
  // Every half round-trips.
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    const double v = FromHalfBits(static_cast<uint16_t>(bits));
    if (std::isnan(v)) continue;
    ASSERT_EQ(ToHalfBits(v), bits) << bits;
  }
  EXPECT_EQ(FromBfloat16Bits(0xc020), -2.5);
}

TEST(KServeJsonTest, DataCountMustMatchTheShape) {
  EXPECT_THAT(Parse(R"({"inputs":[{"name":"x","shape":[2,3],"datatype":"FP32",
                        "data":[[1,2,3],[4,5]]}]})"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("input \"x\""), HasSubstr("5 elements"), HasSubstr("[2,3]"),
                             HasSubstr("needs 6"))));
}

TEST(KServeJsonTest, MalformedBodiesNameTheField) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{", "not valid JSON"},
      {"{} x", "not valid JSON"},
      {"[]", "must be an object"},
      {"{}", "\"inputs\""},
      {R"({"inputs":[{"shape":[1],"datatype":"FP32","data":[1]}]})", "inputs[0]: \"name\""},
      {R"({"inputs":[{"name":"x","shape":[1],"datatype":"FP8","data":[1]}]})",
       "input \"x\": unknown datatype \"FP8\""},
      {R"({"inputs":[{"name":"x","shape":[-1],"datatype":"FP32","data":[1]}]})",
       "input \"x\": \"shape\""},
      {R"({"inputs":[{"name":"x","shape":[1],"datatype":"FP32"}]})", "input \"x\": \"data\""},
      {R"({"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":1}]})",
       "input \"x\": \"data\" must be an array"},
      {R"({"inputs":[],"outputs":[{"name":"y","parameters":{"binary_data":1}}]})",
       "output \"y\": parameter \"binary_data\""},
      {R"({"inputs":[],"parameters":{"binary_data_output":"yes"}})",
       "request: parameter \"binary_data_output\""},
      {R"({"inputs":[],"parameters":{"p":[1]}})", "request: parameter \"p\""},
      {R"({"inputs":[],"id":3})", "\"id\" must be a string"},
      {R"({"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[NaN]}]})", "not valid JSON"},
      {"{\"inputs\":[NaNe-70,2e-7", "not valid JSON"},
  };
  for (const auto& [body, message] : cases) {
    EXPECT_THAT(Parse(body), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(message)))
        << body;
  }
}

// RapidJSON 1.1's full-precision strtod read out of bounds on the second of
// these (found by fuzzing); numbers are converted once, correctly rounded, by
// absl instead.
TEST(KServeJsonTest, LongNumbersAreCorrectlyRoundedAndNeverCrash) {
  const std::string digits = std::string(60, '3') + std::string(12, '0') + "149448";
  for (const std::string& number : {std::string("-") + digits + "e-000000000001135",
                                    std::string("-333333333333.33333333000000000149448e-00350")}) {
    auto request =
        Parse(R"({"inputs":[{"name":"x","shape":[1],"datatype":"FP64","data":[)" + number + "]}]}");
    ASSERT_OK(request);
    EXPECT_EQ(request->raw_input_contents(0), Bytes<double>({std::strtod(number.c_str(), nullptr)}))
        << number;
  }
  // 17 significant digits and the smallest normal double read back exactly.
  auto exact =
      Parse(R"({"inputs":[{"name":"x","shape":[3],"datatype":"FP64","data":[0.30000000000000004,)"
            R"(2.2250738585072014e-308,9007199254740993]}]})");
  ASSERT_OK(exact);
  EXPECT_EQ(exact->raw_input_contents(0),
            Bytes<double>({0.30000000000000004, 2.2250738585072014e-308, 9007199254740992.0}));
  auto ints = Parse(
      R"({"inputs":[{"name":"x","shape":[3],"datatype":"INT64","data":[-9223372036854775808,0,-0]}]})");
  ASSERT_OK(ints);
  EXPECT_EQ(ints->raw_input_contents(0),
            Bytes<int64_t>({std::numeric_limits<int64_t>::min(), 0, 0}));
  EXPECT_THAT(Parse(R"({"inputs":[{"name":"x","shape":[1],"datatype":"FP64","data":[9.9e308]}]})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("9.9e308")));
}

TEST(KServeJsonTest, NestingIsBoundedBeforeParsing) {
  auto nested = [](int depth) {
    return R"({"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":)" +
           std::string(depth, '[') + "1" + std::string(depth, ']') + "}]}";
  };
  // The body's object, "inputs" and the tensor's object take three levels.
  auto request = Parse(nested(61));
  ASSERT_OK(request);
  EXPECT_EQ(request->raw_input_contents(0), Bytes<float>({1}));
  EXPECT_THAT(Parse(nested(62)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("deeper than 64 levels")));
  EXPECT_THAT(Parse(nested(100000)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("deeper than 64 levels")));
  // Brackets inside strings (and escaped quotes) do not count.
  const std::string brackets = std::string(100, '[');
  EXPECT_OK(Parse(R"({"id":"\")" + brackets +
                  R"(","inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]})"));
}

TEST(KServeJsonTest, BinaryInputsAreReadFromTheTailInOrder) {
  const std::string json =
      R"({"inputs":[{"name":"a","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}},)"
      R"({"name":"b","shape":[1],"datatype":"INT64","data":[7]},)"
      R"({"name":"c","shape":[1],"datatype":"FP16","parameters":{"binary_data_size":2}}],)"
      R"("outputs":[{"name":"y","parameters":{"binary_data":true,"datatype":"FP32"}}]})";
  const std::string tail = Bytes<float>({1.5f, -2}) + Bytes<uint16_t>({0x3c00});
  auto request = Parse(json + tail, json.size());
  ASSERT_OK(request);
  EXPECT_EQ(request->raw_input_contents(0), Bytes<float>({1.5f, -2}));
  EXPECT_EQ(request->raw_input_contents(1), Bytes<int64_t>({7}));
  EXPECT_EQ(request->raw_input_contents(2), Bytes<uint16_t>({0x3c00}));
  EXPECT_EQ(request->inputs(0).parameters().count("binary_data_size"), 0);
  ASSERT_EQ(request->outputs_size(), 1);
  EXPECT_TRUE(request->outputs(0).parameters().at("binary_data").bool_param());
  EXPECT_EQ(request->outputs(0).parameters().at("datatype").string_param(), "FP32");

  EXPECT_THAT(Parse(json + tail + "x", json.size()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("11 bytes follow")));
  EXPECT_THAT(Parse(json + tail.substr(0, 9), json.size()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("input \"c\""), HasSubstr("runs past"))));
  EXPECT_THAT(Parse(json, json.size() + 1), StatusIs(absl::StatusCode::kInvalidArgument,
                                                     HasSubstr("Inference-Header-Content-Length")));
  const std::string short_json =
      R"({"inputs":[{"name":"a","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":4}}]})";
  EXPECT_THAT(Parse(short_json + Bytes<float>({1}), short_json.size()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("input \"a\""), HasSubstr("needs 8"))));
}

inference::ModelInferResponse TwoOutputs() {
  inference::ModelInferResponse response;
  response.set_model_name("m");
  response.set_model_version("2");
  response.set_id("r1");
  auto* y = response.add_outputs();
  y->set_name("y");
  y->set_datatype("FP16");
  y->add_shape(1);
  y->add_shape(2);
  response.add_raw_output_contents(Bytes<uint16_t>({0x3c00, 0xc100}));
  auto* z = response.add_outputs();
  z->set_name("z");
  z->set_datatype("INT64");
  z->add_shape(1);
  response.add_raw_output_contents(Bytes<int64_t>({-3}));
  return response;
}

TEST(KServeJsonTest, ResponsesAreJsonWithHalfFloatsAsNumbers) {
  auto body = WriteInferResponse(inference::ModelInferRequest(), TwoOutputs());
  ASSERT_OK(body);
  EXPECT_FALSE(body->json_length.has_value());
  EXPECT_EQ(body->body, R"({"model_name":"m","model_version":"2","id":"r1","outputs":[)"
                        R"({"name":"y","datatype":"FP16","shape":[1,2],"data":[1.0,-2.5]},)"
                        R"({"name":"z","datatype":"INT64","shape":[1],"data":[-3]}]})");
}

TEST(KServeJsonTest, RequestedOutputsComeBackBinary) {
  inference::ModelInferRequest request;
  (*request.mutable_parameters())["binary_data_output"].set_bool_param(true);
  auto* z = request.add_outputs();
  z->set_name("z");
  (*z->mutable_parameters())["binary_data"].set_bool_param(false);
  auto body = WriteInferResponse(request, TwoOutputs());
  ASSERT_OK(body);
  const std::string json =
      R"({"model_name":"m","model_version":"2","id":"r1","outputs":[)"
      R"({"name":"y","datatype":"FP16","shape":[1,2],"parameters":{"binary_data_size":4}},)"
      R"({"name":"z","datatype":"INT64","shape":[1],"data":[-3]}]})";
  ASSERT_TRUE(body->json_length.has_value());
  EXPECT_EQ(*body->json_length, json.size());
  EXPECT_EQ(body->body, json + Bytes<uint16_t>({0x3c00, 0xc100}));
}

TEST(KServeJsonTest, OtherEndpointsJson) {
  inference::ServerMetadataResponse server;
  server.set_name("mantissad");
  server.set_version("1");
  server.add_extensions("model_repository");
  EXPECT_EQ(ServerMetadataJson(server),
            R"({"name":"mantissad","version":"1","extensions":["model_repository"]})");

  inference::ModelMetadataResponse model;
  model.set_name("m");
  model.add_versions("1");
  model.set_platform("pytorch_libtorch");
  auto* in = model.add_inputs();
  in->set_name("input");
  in->set_datatype("FP32");
  in->add_shape(-1);
  in->add_shape(4);
  EXPECT_EQ(ModelMetadataJson(model),
            R"({"name":"m","versions":["1"],"platform":"pytorch_libtorch",)"
            R"("inputs":[{"name":"input","datatype":"FP32","shape":[-1,4]}],"outputs":[]})");

  inference::RepositoryIndexResponse index;
  auto* entry = index.add_models();
  entry->set_name("m");
  entry->set_version("1");
  entry->set_state("READY");
  EXPECT_EQ(RepositoryIndexJson(index), R"([{"name":"m","version":"1","state":"READY"}])");

  inference::ModelStatisticsResponse stats;
  auto* s = stats.add_model_stats();
  s->set_name("m");
  s->set_version("1");
  s->set_inference_count(5);
  s->mutable_inference_stats()->mutable_success()->set_count(2);
  s->mutable_inference_stats()->mutable_success()->set_ns(3000);
  auto* b = s->add_batch_stats();
  b->set_batch_size(4);
  b->mutable_compute_infer()->set_count(1);
  const std::string d0 = R"({"count":0,"ns":0})";
  EXPECT_EQ(StatisticsJson(stats),
            R"({"model_stats":[{"name":"m","version":"1","last_inference":0,"inference_count":5,)"
            R"("execution_count":0,"inference_stats":{"success":{"count":2,"ns":3000},"fail":)" +
                d0 + R"(,"queue":)" + d0 + R"(,"compute_input":)" + d0 + R"(,"compute_infer":)" +
                d0 + R"(,"compute_output":)" + d0 +
                R"(},"batch_stats":[{"batch_size":4,"compute_input":)" + d0 +
                R"(,"compute_infer":{"count":1,"ns":0},"compute_output":)" + d0 + "}]}]}");

  EXPECT_EQ(ErrorJson("a \"b\"\n"), R"({"error":"a \"b\"\n"})");
  EXPECT_EQ(BoolJson("ready", false, "m"), R"({"name":"m","ready":false})");
  EXPECT_EQ(BoolJson("live", true), R"({"live":true})");
}

TEST(KServeJsonTest, RepositoryIndexBodyIsOptional) {
  auto empty = ParseRepositoryIndexRequest("");
  ASSERT_OK(empty);
  EXPECT_FALSE(empty->ready());
  auto ready = ParseRepositoryIndexRequest(R"({"ready": true})");
  ASSERT_OK(ready);
  EXPECT_TRUE(ready->ready());
  EXPECT_THAT(ParseRepositoryIndexRequest(R"({"ready": 1})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"ready\"")));
}

TEST(KServeJsonTest, StatusesMapToHttp) {
  EXPECT_EQ(HttpStatusFromStatus(absl::OkStatus()), 200);
  EXPECT_EQ(HttpStatusFromStatus(absl::InvalidArgumentError("")), 400);
  EXPECT_EQ(HttpStatusFromStatus(absl::OutOfRangeError("")), 400);
  EXPECT_EQ(HttpStatusFromStatus(absl::UnauthenticatedError("")), 401);
  EXPECT_EQ(HttpStatusFromStatus(absl::PermissionDeniedError("")), 403);
  EXPECT_EQ(HttpStatusFromStatus(absl::NotFoundError("")), 404);
  EXPECT_EQ(HttpStatusFromStatus(absl::ResourceExhaustedError("")), 429);
  EXPECT_EQ(HttpStatusFromStatus(absl::UnimplementedError("")), 501);
  EXPECT_EQ(HttpStatusFromStatus(absl::FailedPreconditionError("")), 503);
  EXPECT_EQ(HttpStatusFromStatus(absl::UnavailableError("")), 503);
  EXPECT_EQ(HttpStatusFromStatus(absl::DeadlineExceededError("")), 504);
  EXPECT_EQ(HttpStatusFromStatus(absl::InternalError("")), 500);
  EXPECT_EQ(HttpStatusFromStatus(absl::UnknownError("")), 500);
}

}  // namespace
}  // namespace mantissa
