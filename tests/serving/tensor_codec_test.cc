#include "server/serving/tensor_codec.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/serving/serving_test_util.h"
#include "tests/testing/status_matchers.h"

namespace mantissa {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using testing::StatusIs;

using InputTensor = inference::ModelInferRequest::InferInputTensor;

std::string Bytes(const torch::Tensor& t) {
  const torch::Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
}

InputTensor* AddInput(inference::ModelInferRequest* request, const std::string& name,
                      const std::string& datatype, std::vector<int64_t> shape) {
  InputTensor* input = request->add_inputs();
  input->set_name(name);
  input->set_datatype(datatype);
  for (int64_t d : shape) input->add_shape(d);
  return input;
}

// Adds `t` as raw contents with its own datatype.
void AddRaw(inference::ModelInferRequest* request, const std::string& name,
            const torch::Tensor& t) {
  AddInput(request, name, DatatypeFromDtype(t.scalar_type()), t.sizes().vec());
  request->add_raw_input_contents(Bytes(t));
}

void AddTypedFp32(inference::ModelInferRequest* request, const std::string& name,
                  const torch::Tensor& t) {
  InputTensor* input = AddInput(request, name, "FP32", t.sizes().vec());
  const torch::Tensor c = t.contiguous();
  for (int64_t i = 0; i < c.numel(); ++i) {
    input->mutable_contents()->add_fp32_contents(c.data_ptr<float>()[i]);
  }
}

void AddTypedInt64(inference::ModelInferRequest* request, const std::string& name,
                   const torch::Tensor& t) {
  InputTensor* input = AddInput(request, name, "INT64", t.sizes().vec());
  const torch::Tensor c = t.contiguous();
  for (int64_t i = 0; i < c.numel(); ++i) {
    input->mutable_contents()->add_int64_contents(c.data_ptr<int64_t>()[i]);
  }
}

inference::InferParameter StringParam(const std::string& value) {
  inference::InferParameter p;
  p.set_string_param(value);
  return p;
}

// An image classifier as the zoo exports it: "input" [1,28,28] -> "logits" [10].
const std::vector<v1::TensorSpec> kImageIn = {Spec("input", "FP32", {1, 28, 28})};
const std::vector<v1::TensorSpec> kBf16In = {Spec("input", "BF16", {2, 3})};
const std::vector<v1::TensorSpec> kLogitsOut = {Spec("logits", "BF16", {10})};
// A language model: variable-length token windows.
const std::vector<v1::TensorSpec> kTokensIn = {Spec("input_ids", "INT64", {-1})};
const std::vector<v1::TensorSpec> kTwoIn = {Spec("a", "FP32", {3}), Spec("b", "INT64", {2})};
const std::vector<v1::TensorSpec> kTwoOut = {Spec("logits", "BF16", {4}),
                                             Spec("hidden", "FP32", {2})};

TEST(TensorCodecTest, DatatypeNamesMapToDtypes) {
  EXPECT_EQ(*DtypeFromDatatype("FP32"), torch::kFloat);
  EXPECT_EQ(*DtypeFromDatatype("FP16"), torch::kHalf);
  EXPECT_EQ(*DtypeFromDatatype("BF16"), torch::kBFloat16);
  EXPECT_EQ(*DtypeFromDatatype("INT64"), torch::kLong);
  for (torch::Dtype dtype : {torch::kFloat, torch::kHalf, torch::kBFloat16, torch::kLong}) {
    EXPECT_EQ(*DtypeFromDatatype(DatatypeFromDtype(dtype)), dtype);
  }
  EXPECT_THAT(DtypeFromDatatype("FP64"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"FP64\"")));
  EXPECT_TRUE(IsFloatDatatype("BF16"));
  EXPECT_FALSE(IsFloatDatatype("INT64"));
}

TEST(TensorCodecTest, Fp32RawRoundTrip) {
  const torch::Tensor x = torch::randn({3, 1, 28, 28});
  inference::ModelInferRequest request;
  AddRaw(&request, "input", x);
  auto decoded = DecodeRequest(request, kImageIn, kLogitsOut, 64);
  ASSERT_OK(decoded);
  EXPECT_EQ(decoded->batch_size, 3);
  ASSERT_EQ(decoded->inputs.size(), 1u);
  EXPECT_EQ(decoded->inputs[0].scalar_type(), torch::kFloat);
  EXPECT_TRUE(torch::equal(decoded->inputs[0], x));
  // A copy, not a view of the request's bytes.
  EXPECT_NE(decoded->inputs[0].data_ptr(), request.raw_input_contents(0).data());
  ASSERT_EQ(decoded->outputs.size(), 1u);
  EXPECT_EQ(decoded->outputs[0].index, 0);
  EXPECT_FALSE(decoded->outputs[0].as_fp32);
}

TEST(TensorCodecTest, Fp32TypedRoundTrip) {
  const torch::Tensor x = torch::randn({2, 1, 28, 28});
  inference::ModelInferRequest request;
  AddTypedFp32(&request, "input", x);
  auto decoded = DecodeRequest(request, kImageIn, kLogitsOut, 64);
  ASSERT_OK(decoded);
  EXPECT_EQ(decoded->batch_size, 2);
  EXPECT_TRUE(torch::equal(decoded->inputs[0], x));
}

TEST(TensorCodecTest, HalfAndFp32InputsConvertToTheDeclaredBf16) {
  const torch::Tensor x = torch::randn({4, 2, 3});
  for (torch::Dtype sent : {torch::kHalf, torch::kBFloat16, torch::kFloat}) {
    SCOPED_TRACE(DatatypeFromDtype(sent));
    const torch::Tensor wire = x.to(sent);
    inference::ModelInferRequest request;
    AddRaw(&request, "input", wire);
    auto decoded = DecodeRequest(request, kBf16In, kLogitsOut, 64);
    ASSERT_OK(decoded);
    EXPECT_EQ(decoded->inputs[0].scalar_type(), torch::kBFloat16);
    EXPECT_EQ(decoded->inputs[0].sizes(), torch::IntArrayRef({4, 2, 3}));
    EXPECT_TRUE(torch::equal(decoded->inputs[0], wire.to(torch::kBFloat16)));
  }
  // Typed FP32 contents are converted too.
  inference::ModelInferRequest request;
  AddTypedFp32(&request, "input", x);
  auto decoded = DecodeRequest(request, kBf16In, kLogitsOut, 64);
  ASSERT_OK(decoded);
  EXPECT_TRUE(torch::equal(decoded->inputs[0], x.to(torch::kBFloat16)));
}

TEST(TensorCodecTest, Int64TypedAndRawWithVariableLength) {
  const torch::Tensor ids = torch::randint(0, 50000, {2, 7}, torch::kLong);
  inference::ModelInferRequest typed;
  AddTypedInt64(&typed, "input_ids", ids);
  inference::ModelInferRequest raw;
  AddRaw(&raw, "input_ids", ids);
  for (const auto* request : {&typed, &raw}) {
    auto decoded = DecodeRequest(*request, kTokensIn, kLogitsOut, 64);
    ASSERT_OK(decoded);
    EXPECT_EQ(decoded->inputs[0].scalar_type(), torch::kLong);
    EXPECT_TRUE(torch::equal(decoded->inputs[0], ids));
  }
}

TEST(TensorCodecTest, InputsComeBackInDeclarationOrder) {
  const torch::Tensor a = torch::randn({2, 3});
  const torch::Tensor b = torch::randint(0, 9, {2, 2}, torch::kLong);
  inference::ModelInferRequest request;
  AddTypedInt64(&request, "b", b);
  AddTypedFp32(&request, "a", a);
  auto decoded = DecodeRequest(request, kTwoIn, kTwoOut, 64);
  ASSERT_OK(decoded);
  ASSERT_EQ(decoded->inputs.size(), 2u);
  EXPECT_TRUE(torch::equal(decoded->inputs[0], a));
  EXPECT_TRUE(torch::equal(decoded->inputs[1], b));
}

TEST(TensorCodecTest, RawAndTypedContentsMustNotMix) {
  inference::ModelInferRequest request;
  AddRaw(&request, "a", torch::randn({1, 3}));
  AddTypedInt64(&request, "b", torch::zeros({1, 2}, torch::kLong));
  request.add_raw_input_contents(Bytes(torch::zeros({1, 2}, torch::kLong)));
  EXPECT_THAT(DecodeRequest(request, kTwoIn, kTwoOut, 64),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("input \"b\""), HasSubstr("int64_contents"),
                             HasSubstr("raw_input_contents"))));
}

TEST(TensorCodecTest, RawContentsNeedOneEntryPerInput) {
  inference::ModelInferRequest request;
  AddRaw(&request, "a", torch::randn({1, 3}));
  AddInput(&request, "b", "INT64", {1, 2});
  EXPECT_THAT(
      DecodeRequest(request, kTwoIn, kTwoOut, 64),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr("raw_input_contents has 1 entries"), HasSubstr("2 inputs"))));
}

TEST(TensorCodecTest, RawByteSizeMustMatchTheShape) {
  inference::ModelInferRequest request;
  AddInput(&request, "input", "FP16", {2, 2, 3});
  request.add_raw_input_contents(std::string(23, '\0'));
  EXPECT_THAT(DecodeRequest(request, kBf16In, kLogitsOut, 64),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("input \"input\""), HasSubstr("has 23 bytes"),
                             HasSubstr("expected 24"))));
}

TEST(TensorCodecTest, TypedCountMustMatchTheShape) {
  inference::ModelInferRequest request;
  AddTypedFp32(&request, "input", torch::randn({1, 2, 3}));
  request.mutable_inputs(0)->set_shape(0, 2);
  EXPECT_THAT(DecodeRequest(request, kBf16In, kLogitsOut, 64),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("input \"input\""), HasSubstr("fp32_contents has 6"),
                             HasSubstr("needs 12"))));
}

TEST(TensorCodecTest, TypedContentsMustMatchTheDatatype) {
  inference::ModelInferRequest request;
  InputTensor* input = AddInput(&request, "input", "FP32", {1, 2, 3});
  for (int i = 0; i < 6; ++i) input->mutable_contents()->add_int64_contents(i);
  EXPECT_THAT(DecodeRequest(request, kBf16In, kLogitsOut, 64),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("input \"input\""), HasSubstr("takes fp32_contents"),
                             HasSubstr("got int64_contents"))));
}

TEST(TensorCodecTest, HalfInputsNeedRawContents) {
  inference::ModelInferRequest request;
  InputTensor* input = AddInput(&request, "input", "BF16", {1, 2, 3});
  for (int i = 0; i < 6; ++i) input->mutable_contents()->add_fp32_contents(i);
  EXPECT_THAT(DecodeRequest(request, kBf16In, kLogitsOut, 64),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("input \"input\""), HasSubstr("raw_input_contents"))));
}

TEST(TensorCodecTest, UnknownInputIsRejected) {
  inference::ModelInferRequest request;
  AddTypedFp32(&request, "image", torch::randn({1, 2, 3}));
  EXPECT_THAT(DecodeRequest(request, kBf16In, kLogitsOut, 64),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("unknown input \"image\""), HasSubstr("\"input\""))));
}

TEST(TensorCodecTest, MissingInputIsRejected) {
  inference::ModelInferRequest request;
  AddTypedFp32(&request, "a", torch::randn({1, 3}));
  EXPECT_THAT(DecodeRequest(request, kTwoIn, kTwoOut, 64),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("missing input \"b\""), HasSubstr("INT64 [2]"))));
}

TEST(TensorCodecTest, RepeatedInputIsRejected) {
  inference::ModelInferRequest request;
  AddTypedFp32(&request, "input", torch::randn({1, 2, 3}));
  AddTypedFp32(&request, "input", torch::randn({1, 2, 3}));
  EXPECT_THAT(DecodeRequest(request, kBf16In, kLogitsOut, 64),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input \"input\" appears more than once")));
}

TEST(TensorCodecTest, DatatypeMustSuitTheDeclaredInput) {
  {
    inference::ModelInferRequest request;
    AddTypedInt64(&request, "input", torch::zeros({1, 2, 3}, torch::kLong));
    EXPECT_THAT(
        DecodeRequest(request, kBf16In, kLogitsOut, 64),
        StatusIs(absl::StatusCode::kInvalidArgument,
                 AllOf(HasSubstr("input \"input\""), HasSubstr("INT64"), HasSubstr("BF16"))));
  }
  {
    inference::ModelInferRequest request;
    AddTypedFp32(&request, "input_ids", torch::zeros({1, 4}));
    EXPECT_THAT(DecodeRequest(request, kTokensIn, kLogitsOut, 64),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(HasSubstr("input \"input_ids\""),
                               HasSubstr("datatype FP32 does not match INT64"))));
  }
  {
    inference::ModelInferRequest request;
    AddInput(&request, "input", "FP64", {1, 2, 3});
    EXPECT_THAT(DecodeRequest(request, kBf16In, kLogitsOut, 64),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(HasSubstr("input \"input\""), HasSubstr("\"FP64\""))));
  }
}

TEST(TensorCodecTest, ShapeMustMatchTheItemShape) {
  inference::ModelInferRequest request;
  AddTypedFp32(&request, "input", torch::randn({2, 1, 28, 29}));
  EXPECT_THAT(DecodeRequest(request, kImageIn, kLogitsOut, 64),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "input \"input\": shape [2,1,28,29] does not match [-1,1,28,28] "
                       "(batch, then the model's item shape)"));
}

TEST(TensorCodecTest, ShapeRankMustBeOnePlusTheItemRank) {
  inference::ModelInferRequest request;
  AddTypedFp32(&request, "input", torch::randn({1, 28, 28}));
  EXPECT_THAT(DecodeRequest(request, kImageIn, kLogitsOut, 64),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("input \"input\""), HasSubstr("[1,28,28]"),
                             HasSubstr("[-1,1,28,28]"))));
}

TEST(TensorCodecTest, VariableDimensionsNeedAtLeastOne) {
  inference::ModelInferRequest request;
  AddInput(&request, "input_ids", "INT64", {1, 0});
  EXPECT_THAT(
      DecodeRequest(request, kTokensIn, kLogitsOut, 64),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr("input \"input_ids\""), HasSubstr("[1,0]"), HasSubstr("[-1,-1]"))));
}

TEST(TensorCodecTest, BatchSizeMustBeInRange) {
  for (int64_t batch : {0, 9}) {
    inference::ModelInferRequest request;
    AddInput(&request, "input_ids", "INT64", {batch, 3});
    EXPECT_THAT(
        DecodeRequest(request, kTokensIn, kLogitsOut, 8),
        StatusIs(absl::StatusCode::kInvalidArgument,
                 AllOf(HasSubstr("input \"input_ids\""),
                       HasSubstr(absl::StrCat("batch size ", batch)), HasSubstr("not in 1..8"))));
  }
}

TEST(TensorCodecTest, BatchSizeMustAgreeAcrossInputs) {
  inference::ModelInferRequest request;
  AddTypedFp32(&request, "a", torch::randn({2, 3}));
  AddTypedInt64(&request, "b", torch::zeros({3, 2}, torch::kLong));
  EXPECT_THAT(DecodeRequest(request, kTwoIn, kTwoOut, 64),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("input \"b\": batch size 3 differs from 2"),
                             HasSubstr("input \"a\""))));
}

TEST(TensorCodecTest, HugeShapesDoNotOverflow) {
  inference::ModelInferRequest request;
  AddInput(&request, "input_ids", "INT64", {1, int64_t{1} << 62});
  request.add_raw_input_contents("");
  EXPECT_THAT(DecodeRequest(request, kTokensIn, kLogitsOut, 64),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("input \"input_ids\"")));
}

// Requested outputs.

inference::ModelInferRequest TwoInputRequest() {
  inference::ModelInferRequest request;
  AddTypedFp32(&request, "a", torch::randn({2, 3}));
  AddTypedInt64(&request, "b", torch::zeros({2, 2}, torch::kLong));
  return request;
}

TEST(TensorCodecTest, RequestedOutputsFollowTheRequest) {
  inference::ModelInferRequest request = TwoInputRequest();
  request.add_outputs()->set_name("hidden");
  auto* logits = request.add_outputs();
  logits->set_name("logits");
  (*logits->mutable_parameters())["datatype"] = StringParam("FP32");
  auto decoded = DecodeRequest(request, kTwoIn, kTwoOut, 64);
  ASSERT_OK(decoded);
  ASSERT_EQ(decoded->outputs.size(), 2u);
  EXPECT_EQ(decoded->outputs[0].index, 1);
  EXPECT_FALSE(decoded->outputs[0].as_fp32);
  EXPECT_EQ(decoded->outputs[1].index, 0);
  EXPECT_TRUE(decoded->outputs[1].as_fp32);
}

TEST(TensorCodecTest, RequestOutputDatatypeAppliesToEveryOutput) {
  inference::ModelInferRequest request = TwoInputRequest();
  (*request.mutable_parameters())["output_datatype"] = StringParam("FP32");
  auto decoded = DecodeRequest(request, kTwoIn, kTwoOut, 64);
  ASSERT_OK(decoded);
  ASSERT_EQ(decoded->outputs.size(), 2u);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(decoded->outputs[i].index, i);
    EXPECT_TRUE(decoded->outputs[i].as_fp32);
  }
}

TEST(TensorCodecTest, UnknownOutputListsTheValidOnes) {
  inference::ModelInferRequest request = TwoInputRequest();
  request.add_outputs()->set_name("probs");
  EXPECT_THAT(
      DecodeRequest(request, kTwoIn, kTwoOut, 64),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr("unknown output \"probs\""), HasSubstr("\"logits\", \"hidden\""))));
}

TEST(TensorCodecTest, RepeatedOutputIsRejected) {
  inference::ModelInferRequest request = TwoInputRequest();
  request.add_outputs()->set_name("logits");
  request.add_outputs()->set_name("logits");
  EXPECT_THAT(DecodeRequest(request, kTwoIn, kTwoOut, 64),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("output \"logits\" is requested more than once")));
}

TEST(TensorCodecTest, OutputDatatypeParameterMustBeTheStringFp32) {
  inference::InferParameter as_int;
  as_int.set_int64_param(32);
  for (const inference::InferParameter& bad : {StringParam("BF16"), as_int}) {
    inference::ModelInferRequest request = TwoInputRequest();
    auto* output = request.add_outputs();
    output->set_name("logits");
    (*output->mutable_parameters())["datatype"] = bad;
    EXPECT_THAT(DecodeRequest(request, kTwoIn, kTwoOut, 64),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(HasSubstr("output \"logits\""), HasSubstr("\"datatype\""),
                               HasSubstr("\"FP32\""))));
  }
}

TEST(TensorCodecTest, RequestOutputDatatypeParameterMustBeTheStringFp32) {
  inference::ModelInferRequest request = TwoInputRequest();
  (*request.mutable_parameters())["output_datatype"] = StringParam("fp16");
  EXPECT_THAT(DecodeRequest(request, kTwoIn, kTwoOut, 64),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("\"output_datatype\""), HasSubstr("\"fp16\""))));
}

TEST(TensorCodecTest, Fp32OutputParameterOnlyForFloatOutputs) {
  const std::vector<v1::TensorSpec> ids_out = {Spec("ids", "INT64", {})};
  inference::ModelInferRequest request;
  AddTypedInt64(&request, "input_ids", torch::zeros({1, 3}, torch::kLong));
  auto* output = request.add_outputs();
  output->set_name("ids");
  (*output->mutable_parameters())["datatype"] = StringParam("FP32");
  EXPECT_THAT(DecodeRequest(request, kTokensIn, ids_out, 64),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("output \"ids\"")));
  // The request-wide parameter leaves integer outputs alone.
  request.mutable_outputs(0)->mutable_parameters()->clear();
  (*request.mutable_parameters())["output_datatype"] = StringParam("FP32");
  auto decoded = DecodeRequest(request, kTokensIn, ids_out, 64);
  ASSERT_OK(decoded);
  EXPECT_FALSE(decoded->outputs[0].as_fp32);
}

// EncodeResponse.

TEST(TensorCodecTest, EncodeWritesTheModelsDatatype) {
  DecodedRequest decoded;
  decoded.batch_size = 2;
  decoded.outputs = {{0, false}, {1, false}};
  const torch::Tensor logits = torch::randn({2, 4}).to(torch::kBFloat16);
  const torch::Tensor hidden = torch::randn({2, 2});
  inference::ModelInferResponse response;
  ASSERT_OK(EncodeResponse({logits, hidden}, decoded, kTwoOut, &response));
  ASSERT_EQ(response.outputs_size(), 2);
  ASSERT_EQ(response.raw_output_contents_size(), 2);
  EXPECT_EQ(response.outputs(0).name(), "logits");
  EXPECT_EQ(response.outputs(0).datatype(), "BF16");
  EXPECT_THAT(response.outputs(0).shape(), ::testing::ElementsAre(2, 4));
  EXPECT_EQ(response.raw_output_contents(0), Bytes(logits));
  EXPECT_EQ(response.outputs(1).name(), "hidden");
  EXPECT_EQ(response.outputs(1).datatype(), "FP32");
  EXPECT_EQ(response.raw_output_contents(1), Bytes(hidden));
}

TEST(TensorCodecTest, EncodeFp32OverrideConvertsFromHalf) {
  DecodedRequest decoded;
  decoded.batch_size = 3;
  decoded.outputs = {{0, true}};
  // A non-contiguous half output: the bytes must still come out row-major.
  const torch::Tensor logits = torch::randn({4, 3}).to(torch::kBFloat16).t();
  inference::ModelInferResponse response;
  ASSERT_OK(EncodeResponse({logits, torch::zeros({3, 2})}, decoded, kTwoOut, &response));
  ASSERT_EQ(response.outputs_size(), 1);
  EXPECT_EQ(response.outputs(0).name(), "logits");
  EXPECT_EQ(response.outputs(0).datatype(), "FP32");
  EXPECT_THAT(response.outputs(0).shape(), ::testing::ElementsAre(3, 4));
  const std::string& bytes = response.raw_output_contents(0);
  ASSERT_EQ(bytes.size(), 12 * sizeof(float));
  std::vector<float> values(12);
  std::memcpy(values.data(), bytes.data(), bytes.size());
  const torch::Tensor expected = logits.to(torch::kFloat).contiguous();
  for (int i = 0; i < 12; ++i) EXPECT_EQ(values[i], expected.data_ptr<float>()[i]) << i;
}

TEST(TensorCodecTest, DecodeThenEncodeRoundTrip) {
  const torch::Tensor x = torch::randn({2, 1, 28, 28});
  inference::ModelInferRequest request;
  AddRaw(&request, "input", x.to(torch::kHalf));
  const std::vector<v1::TensorSpec> in = {Spec("input", "BF16", {1, 28, 28})};
  const std::vector<v1::TensorSpec> out = {Spec("image", "BF16", {1, 28, 28})};
  auto decoded = DecodeRequest(request, in, out, 64);
  ASSERT_OK(decoded);
  inference::ModelInferResponse response;
  ASSERT_OK(EncodeResponse(decoded->inputs, *decoded, out, &response));
  EXPECT_EQ(response.raw_output_contents(0), Bytes(x.to(torch::kHalf).to(torch::kBFloat16)));
}

TEST(TensorCodecTest, EncodeRejectsOutputsThatDoNotMatch) {
  DecodedRequest decoded;
  decoded.batch_size = 2;
  decoded.outputs = {{1, false}, {0, false}};
  inference::ModelInferResponse response;
  EXPECT_THAT(EncodeResponse({torch::zeros({2, 4})}, decoded, kTwoOut, &response),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("1 outputs")));
  // The second requested output has the wrong batch; nothing is written.
  EXPECT_THAT(
      EncodeResponse({torch::zeros({3, 4}), torch::zeros({2, 2})}, decoded, kTwoOut, &response),
      StatusIs(absl::StatusCode::kInternal,
               AllOf(HasSubstr("output \"logits\""), HasSubstr("[3,4]"))));
  EXPECT_EQ(response.outputs_size(), 0);
  EXPECT_EQ(response.raw_output_contents_size(), 0);
}

}  // namespace
}  // namespace mantissa
