#include "client/infer_request.h"

#include <string>
#include <vector>

#include "client/tensor_bytes.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mantissa::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<double> Decoded(const inference::ModelInferRequest& request, int index) {
  absl::StatusOr<std::vector<double>> values =
      DecodeValues(request.inputs(index).datatype(), request.raw_input_contents(index));
  EXPECT_TRUE(values.ok()) << values.status();
  return values.ok() ? *values : std::vector<double>();
}

std::string ErrorOf(absl::string_view json) {
  absl::StatusOr<inference::ModelInferRequest> request = ParseInferRequestJson(json);
  if (request.ok()) return "OK";
  EXPECT_EQ(request.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(request.status().message());
}

TEST(TensorBytesTest, EncodesAndDecodesEachDatatype) {
  for (const char* datatype : {"FP32", "FP16", "BF16", "INT64"}) {
    const std::vector<double> values = std::string(datatype) == "INT64"
                                           ? std::vector<double>{0, -2, 50257}
                                           : std::vector<double>{0.5, -2, 3.25};
    absl::StatusOr<std::string> bytes = EncodeValues(datatype, values);
    ASSERT_TRUE(bytes.ok()) << datatype;
    EXPECT_EQ(bytes->size(), values.size() * DatatypeSize(datatype)) << datatype;
    absl::StatusOr<std::vector<double>> decoded = DecodeValues(datatype, *bytes);
    ASSERT_TRUE(decoded.ok());
    EXPECT_EQ(*decoded, values) << datatype;
  }
  // Little-endian FP16 1.0 = 0x3c00.
  EXPECT_EQ(*EncodeValues("FP16", {1.0}), std::string("\x00\x3c", 2));
  EXPECT_EQ(*DecodeValues("INT64", *EncodeValues("INT64", {7, -1})), (std::vector<double>{7, -1}));
}

TEST(TensorBytesTest, RejectsBadInput) {
  EXPECT_THAT(std::string(EncodeValues("INT64", {1.5}).status().message()),
              HasSubstr("value 0 (1.5) is not a whole number"));
  EXPECT_THAT(std::string(EncodeValues("FP64", {1}).status().message()),
              HasSubstr("'FP64' is not one of FP32, FP16, BF16 or INT64"));
  EXPECT_THAT(std::string(DecodeValues("FP32", "abc").status().message()),
              HasSubstr("3 bytes are not a whole number of FP32 values"));
}

TEST(ParseInferRequestJsonTest, ReadsFlatAndNestedData) {
  absl::StatusOr<inference::ModelInferRequest> request = ParseInferRequestJson(R"({
    "id": "r1",
    "inputs": [
      {"name": "input", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4.5]]},
      {"name": "ids", "shape": [1, 3], "datatype": "INT64", "data": [5, 6, 7]},
      {"name": "half", "shape": [1], "datatype": "BF16", "data": [0.25]}
    ],
    "outputs": [{"name": "logits", "parameters": {"datatype": "FP32"}}]
  })");
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->id(), "r1");
  ASSERT_EQ(request->inputs_size(), 3);
  ASSERT_EQ(request->raw_input_contents_size(), 3);
  EXPECT_EQ(request->inputs(0).name(), "input");
  EXPECT_THAT(request->inputs(0).shape(), ElementsAre(2, 2));
  EXPECT_FALSE(request->inputs(0).has_contents());
  EXPECT_THAT(Decoded(*request, 0), ElementsAre(1, 2, 3, 4.5));
  EXPECT_THAT(Decoded(*request, 1), ElementsAre(5, 6, 7));
  EXPECT_EQ(request->raw_input_contents(2).size(), 2u);
  EXPECT_THAT(Decoded(*request, 2), ElementsAre(0.25));
  ASSERT_EQ(request->outputs_size(), 1);
  EXPECT_EQ(request->outputs(0).name(), "logits");
  EXPECT_EQ(request->outputs(0).parameters().at("datatype").string_param(), "FP32");
  EXPECT_EQ(request->model_name(), "");
}

TEST(ParseInferRequestJsonTest, ParametersKeepTheirTypes) {
  absl::StatusOr<inference::ModelInferRequest> request = ParseInferRequestJson(
      R"({"parameters": {"a": true, "b": "x", "c": 3, "d": 0.5},
          "inputs": [{"name": "x", "shape": [1], "datatype": "FP16", "data": [1]}]})");
  ASSERT_TRUE(request.ok()) << request.status();
  const auto& parameters = request->parameters();
  EXPECT_TRUE(parameters.at("a").bool_param());
  EXPECT_EQ(parameters.at("b").string_param(), "x");
  EXPECT_EQ(parameters.at("c").int64_param(), 3);
  EXPECT_EQ(parameters.at("d").double_param(), 0.5);
  EXPECT_EQ(request->raw_input_contents(0), std::string("\x00\x3c", 2));
}

TEST(ParseInferRequestJsonTest, ErrorsNameTheField) {
  EXPECT_THAT(ErrorOf("{"), HasSubstr("not valid JSON"));
  EXPECT_EQ(ErrorOf("[1]"), "request: expected a JSON object, got a list");
  EXPECT_EQ(ErrorOf("{}"), "inputs: is required");
  EXPECT_EQ(ErrorOf(R"({"inputs": []})"), "inputs: is empty");
  EXPECT_THAT(ErrorOf(R"({"input": []})"), HasSubstr("request: unknown field 'input'"));
  EXPECT_EQ(ErrorOf(R"({"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]})"),
            "inputs[0].name: is required");
  EXPECT_THAT(ErrorOf(R"({"inputs": [{"name": "x", "shape": [1], "dtype": "FP32", "data": [1]}]})"),
              HasSubstr("inputs[0]: unknown field 'dtype'"));
  EXPECT_EQ(
      ErrorOf(R"({"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}]})"),
      "inputs[0].datatype: 'FP64' is not one of FP32, FP16, BF16 or INT64");
  EXPECT_EQ(
      ErrorOf(
          R"({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [1, 2]}]})"),
      "inputs[0].data: 2 values, but shape [2,4] holds 8");
  EXPECT_EQ(
      ErrorOf(R"({"inputs": [{"name": "x", "shape": [1.5], "datatype": "FP32", "data": [1]}]})"),
      "inputs[0].shape[0]: 1.5 is not a dimension size (a whole number >= 0)");
  EXPECT_EQ(ErrorOf(R"({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32",
                                    "data": [1, [2, "a"]]}]})"),
            "inputs[0].data[1][1]: expected a number or a list, got a string");
  EXPECT_THAT(ErrorOf(R"({"inputs": [{"name": "x", "shape": [1], "datatype": "INT64",
                                      "data": [0.5]}]})"),
              HasSubstr("inputs[0].data: value 0 (0.5) is not a whole number"));
  EXPECT_EQ(ErrorOf(R"({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
                       "outputs": [{}]})"),
            "outputs[0].name: is required");
}

inference::ModelMetadataResponse Metadata() {
  inference::ModelMetadataResponse metadata;
  metadata.set_name("m");
  auto* image = metadata.add_inputs();
  image->set_name("image");
  image->set_datatype("BF16");
  for (int64_t d : {-1, 3, 4}) image->add_shape(d);
  auto* ids = metadata.add_inputs();
  ids->set_name("ids");
  ids->set_datatype("INT64");
  for (int64_t d : {-1, -1}) ids->add_shape(d);
  return metadata;
}

TEST(RandomInferRequestTest, FillsTheDeclaredShapesBehindTheBatch) {
  absl::StatusOr<inference::ModelInferRequest> request =
      RandomInferRequest(Metadata(), 2, /*metadata_has_batch_dim=*/true, /*seed=*/1);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->model_name(), "m");
  ASSERT_EQ(request->inputs_size(), 2);
  EXPECT_THAT(request->inputs(0).shape(), ElementsAre(2, 3, 4));
  EXPECT_EQ(request->inputs(0).datatype(), "BF16");
  EXPECT_EQ(request->raw_input_contents(0).size(), 2u * 3 * 4 * 2);
  for (double value : Decoded(*request, 0)) {
    EXPECT_GE(value, 0.0);
    EXPECT_LE(value, 1.0);  // bf16 may round the largest draws up to 1
  }
  EXPECT_THAT(request->inputs(1).shape(), ElementsAre(2, kRandomVariableDim));
  for (double id : Decoded(*request, 1)) EXPECT_TRUE(id == 0 || id == 1) << id;

  // Without a batch dimension in the metadata every declared dimension stays.
  request = RandomInferRequest(Metadata(), 1, /*metadata_has_batch_dim=*/false, 1);
  ASSERT_TRUE(request.ok());
  EXPECT_THAT(request->inputs(0).shape(), ElementsAre(1, kRandomVariableDim, 3, 4));
}

TEST(RandomInferRequestTest, IsSeededAndChecksItsArguments) {
  const auto a = RandomInferRequest(Metadata(), 1, true, 7);
  const auto b = RandomInferRequest(Metadata(), 1, true, 7);
  const auto c = RandomInferRequest(Metadata(), 1, true, 8);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->raw_input_contents(0), b->raw_input_contents(0));
  EXPECT_NE(a->raw_input_contents(0), c->raw_input_contents(0));
  EXPECT_EQ(RandomInferRequest(Metadata(), 0, true, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  inference::ModelMetadataResponse fp64 = Metadata();
  fp64.mutable_inputs(0)->set_datatype("FP64");
  EXPECT_THAT(std::string(RandomInferRequest(fp64, 1, true, 1).status().message()),
              HasSubstr("input image: datatype 'FP64'"));
}

TEST(RequestFp32OutputsTest, SetsTheRequestParameter) {
  inference::ModelInferRequest request;
  RequestFp32Outputs(&request);
  EXPECT_EQ(request.parameters().at("output_datatype").string_param(), "FP32");
}

}  // namespace
}  // namespace mantissa::cli
