// ModelInfer as the Open Inference Protocol defines it, through the real
// daemon: every kind of malformed request is INVALID_ARGUMENT naming the
// tensor, unknown models are NOT_FOUND, the refusals are counted by status
// in /metrics, and the daemon keeps serving good requests afterwards.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <functional>

#include "tests/testing/half_float.h"
#include "tests/testing/serving_daemon_test.h"

namespace mantissa {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using testing::GrpcStatusIs;
using ::testing::HasSubstr;
using testing::OutputFloats;

constexpr int kFeatures = 32;  // the synthetic dataset's default
constexpr int kMaxBatch = 8;

class InferenceProtocolTest : public testing::ServingDaemonTest {
 protected:
  void SetUp() override {
    ServingDaemonTest::SetUp();
    const std::string job = Train(testing::SyntheticMlpSpec(20));
    ASSERT_FALSE(job.empty());
    Export(job, "m", "bf16-true", kMaxBatch);
    ASSERT_FALSE(HasFailure());
  }

  // Two items as raw FP32.
  inference::ModelInferRequest Good() {
    return testing::FloatRequest("m", "input", {2, kFeatures},
                                 testing::PseudoRandomFloats(2 * kFeatures, 5));
  }

  grpc::Status Infer(const inference::ModelInferRequest& request) {
    inference::ModelInferResponse response;
    return client_->Infer(request, &response);
  }
};

struct BadRequest {
  std::string what;
  std::function<void(inference::ModelInferRequest&)> mutate;
  std::vector<std::string> message_parts;  // each must appear in the error message
};

TEST_F(InferenceProtocolTest, EveryMalformedRequestIsInvalidArgumentNamingTheTensor) {
  const std::vector<float> item(kFeatures, 0.25f);
  const std::vector<BadRequest> cases = {
      {"unknown input name", [](auto& r) { r.mutable_inputs(0)->set_name("inputs"); }, {"inputs"}},
      {"missing input",
       [](auto& r) {
         r.clear_inputs();
         r.clear_raw_input_contents();
       },
       {"input"}},
      {"repeated input",
       [](auto& r) {
         *r.add_inputs() = r.inputs(0);
         r.add_raw_input_contents(r.raw_input_contents(0));
       },
       {"input"}},
      {"INT32 datatype",
       [](auto& r) {
         auto* in = r.mutable_inputs(0);
         in->set_datatype("INT32");
         r.clear_raw_input_contents();
         for (int i = 0; i < 2 * kFeatures; ++i) in->mutable_contents()->add_int_contents(1);
       },
       {"input", "INT32"}},
      {"FP64 datatype",
       [](auto& r) {
         auto* in = r.mutable_inputs(0);
         in->set_datatype("FP64");
         r.clear_raw_input_contents();
         for (int i = 0; i < 2 * kFeatures; ++i) in->mutable_contents()->add_fp64_contents(1);
       },
       {"input", "FP64"}},
      {"INT64 into a float input",
       [](auto& r) {
         auto* in = r.mutable_inputs(0);
         in->set_datatype("INT64");
         r.clear_raw_input_contents();
         for (int i = 0; i < 2 * kFeatures; ++i) in->mutable_contents()->add_int64_contents(1);
       },
       {"input", "INT64"}},
      {"unknown datatype",
       [](auto& r) { r.mutable_inputs(0)->set_datatype("FLOAT"); },
       {"input", "FLOAT"}},
      {"shape rank",
       [](auto& r) {
         auto* in = r.mutable_inputs(0);
         in->clear_shape();
         for (int64_t d : {2, 4, 8}) in->add_shape(d);
       },
       {"input"}},
      {"flat shape without a batch dimension",
       [](auto& r) {
         auto* in = r.mutable_inputs(0);
         in->clear_shape();
         in->add_shape(2 * kFeatures);
       },
       {"input"}},
      {"fixed dimension",
       [&](auto& r) {
         r = testing::FloatRequest("m", "input", {2, kFeatures - 1},
                                   std::vector<float>(2 * (kFeatures - 1), 0.5f));
       },
       {"input", "32"}},
      {"negative dimension", [](auto& r) { r.mutable_inputs(0)->set_shape(0, -2); }, {"input"}},
      {"batch of 0",
       [](auto& r) {
         r = testing::FloatRequest("m", "input", {0, kFeatures}, {});
       },
       {"input"}},
      {"batch over max_batch_size",
       [](auto& r) {
         r = testing::FloatRequest("m", "input", {kMaxBatch + 1, kFeatures},
                                   std::vector<float>((kMaxBatch + 1) * kFeatures, 0.5f));
       },
       {"input", "8"}},
      {"raw byte size",
       [](auto& r) {
         std::string& raw = *r.mutable_raw_input_contents(0);
         raw.resize(raw.size() - 4);
       },
       {"input", "256"}},
      {"FP32 bytes declared BF16",
       [](auto& r) { r.mutable_inputs(0)->set_datatype("BF16"); },
       {"input", "128"}},
      {"typed contents count",
       [&](auto& r) {
         r = testing::FloatRequest("m", "input", {2, kFeatures},
                                   std::vector<float>(2 * kFeatures, 0.5f), "FP32", false);
         r.mutable_inputs(0)->mutable_contents()->mutable_fp32_contents()->RemoveLast();
       },
       {"input", "64"}},
      {"typed contents of another type",
       [&](auto& r) {
         auto* in = r.mutable_inputs(0);
         r.clear_raw_input_contents();
         for (int i = 0; i < 2 * kFeatures; ++i) in->mutable_contents()->add_int64_contents(1);
       },
       {"input"}},
      {"BF16 in typed contents",
       [&](auto& r) {
         r = testing::FloatRequest("m", "input", {2, kFeatures},
                                   std::vector<float>(2 * kFeatures, 0.5f), "FP32", false);
         r.mutable_inputs(0)->set_datatype("BF16");
       },
       {"input"}},
      {"raw and typed contents mixed",
       [](auto& r) {
         for (int i = 0; i < 2 * kFeatures; ++i) {
           r.mutable_inputs(0)->mutable_contents()->add_fp32_contents(1);
         }
       },
       {"input"}},
      {"more raw contents than inputs",
       [](auto& r) { r.add_raw_input_contents(r.raw_input_contents(0)); },
       {"raw_input_contents"}},
      {"no contents at all", [](auto& r) { r.clear_raw_input_contents(); }, {"input"}},
      {"unknown output",
       [](auto& r) { r.add_outputs()->set_name("probabilities"); },
       {"probabilities"}},
      {"bad output datatype parameter",
       [](auto& r) {
         auto* out = r.add_outputs();
         out->set_name("logits");
         (*out->mutable_parameters())["datatype"].set_string_param("INT8");
       },
       {"logits", "INT8"}},
      {"output datatype parameter of the wrong type",
       [](auto& r) {
         auto* out = r.add_outputs();
         out->set_name("logits");
         (*out->mutable_parameters())["datatype"].set_int64_param(32);
       },
       {"logits", "datatype"}},
      {"bad output_datatype request parameter",
       [](auto& r) { (*r.mutable_parameters())["output_datatype"].set_string_param("FP64"); },
       {"output_datatype", "FP64"}},
  };

  for (const BadRequest& c : cases) {
    inference::ModelInferRequest request = Good();
    c.mutate(request);
    const grpc::Status status = Infer(request);
    EXPECT_EQ(status.error_code(), grpc::INVALID_ARGUMENT)
        << c.what << ": " << status.error_code() << " " << status.error_message();
    for (const std::string& part : c.message_parts) {
      EXPECT_THAT(status.error_message(), HasSubstr(part)) << c.what;
    }
  }

  // Names that do not resolve.
  inference::ModelInferRequest unknown_model = Good();
  unknown_model.set_model_name("nosuch");
  EXPECT_THAT(Infer(unknown_model), GrpcStatusIs(grpc::NOT_FOUND, HasSubstr("nosuch")));
  inference::ModelInferRequest unknown_version = Good();
  unknown_version.set_model_version("9");
  EXPECT_THAT(Infer(unknown_version), GrpcStatusIs(grpc::NOT_FOUND, HasSubstr("9")));
  inference::ModelInferRequest no_model = Good();
  no_model.clear_model_name();
  EXPECT_THAT(Infer(no_model), GrpcStatusIs(grpc::INVALID_ARGUMENT, HasSubstr("model_name")));

  // After all of that, the daemon still serves, and the exact limit is fine.
  inference::ModelInferResponse response;
  grpc::Status ok = client_->Infer(Good(), &response);
  ASSERT_TRUE(ok.ok()) << ok.error_message();
  EXPECT_THAT(response.outputs(0).shape(), ElementsAre(2, 4));
  ok = client_->Infer(testing::FloatRequest("m", "input", {kMaxBatch, kFeatures},
                                            std::vector<float>(kMaxBatch * kFeatures, 0.5f)),
                      &response);
  EXPECT_TRUE(ok.ok()) << ok.error_message();
  EXPECT_THAT(response.outputs(0).shape(), ElementsAre(kMaxBatch, 4));

  // Every refusal was counted under its status.
  auto metrics = daemon_->ScrapeMetrics();
  ASSERT_OK(metrics);
  EXPECT_EQ(testing::FindSample(*metrics, "mantissa_inference_requests_total",
                                {"model=\"m\"", "status=\"INVALID_ARGUMENT\""}),
            static_cast<double>(cases.size()));
  EXPECT_EQ(testing::FindSample(*metrics, "mantissa_inference_requests_total",
                                {"model=\"m\"", "status=\"NOT_FOUND\""}),
            1.0);  // the unknown version
  EXPECT_EQ(testing::FindSample(*metrics, "mantissa_inference_requests_total",
                                {"model=\"m\"", "status=\"OK\""}),
            2.0);
  // Names not in the repository get no series of their own.
  EXPECT_EQ(metrics->find("nosuch"), std::string::npos);
}

TEST_F(InferenceProtocolTest, FloatInputsOfEveryWidthAndOutputsAsAsked) {
  const std::vector<float> x = testing::PseudoRandomFloats(3 * kFeatures, 9);
  std::vector<std::vector<float>> results;
  for (const char* datatype : {"FP32", "BF16", "FP16"}) {
    inference::ModelInferRequest request =
        testing::FloatRequest("m", "input", {3, kFeatures}, x, datatype);
    inference::ModelInferResponse response;
    grpc::Status s = client_->Infer(request, &response);
    ASSERT_TRUE(s.ok()) << datatype << ": " << s.error_message();
    EXPECT_EQ(response.outputs(0).datatype(), "BF16") << datatype;
    ASSERT_EQ(response.raw_output_contents_size(), 1);
    EXPECT_EQ(response.raw_output_contents(0).size(), 3u * 4 * 2);
    auto values = OutputFloats(response);
    ASSERT_OK(values);
    results.push_back(*values);
  }
  // FP32 and BF16 inputs reach the bf16 model identically; FP16's 11 bits
  // round differently, so only closely.
  EXPECT_EQ(results[0], results[1]);
  for (size_t i = 0; i < results[0].size(); ++i) {
    EXPECT_NEAR(results[2][i], results[0][i], 0.05 + 0.02 * std::fabs(results[0][i]));
  }

  // FP32 outputs: per output, or for the whole request.
  inference::ModelInferRequest per_output = testing::FloatRequest("m", "input", {3, kFeatures}, x);
  testing::RequestFp32Output(&per_output, "logits");
  inference::ModelInferRequest whole = testing::FloatRequest("m", "input", {3, kFeatures}, x);
  (*whole.mutable_parameters())["output_datatype"].set_string_param("FP32");
  for (const auto* request : {&per_output, &whole}) {
    inference::ModelInferResponse response;
    ASSERT_TRUE(client_->Infer(*request, &response).ok());
    ASSERT_EQ(response.outputs_size(), 1);
    EXPECT_EQ(response.outputs(0).datatype(), "FP32");
    EXPECT_EQ(response.raw_output_contents(0).size(), 3u * 4 * 4);
    auto values = OutputFloats(response);
    ASSERT_OK(values);
    EXPECT_EQ(*values, results[0]);  // bf16 values widened exactly
  }

  // The request id comes back, as the protocol asks.
  inference::ModelInferRequest with_id = testing::FloatRequest("m", "input", {3, kFeatures}, x);
  with_id.set_id("req-42");
  inference::ModelInferResponse response;
  ASSERT_TRUE(client_->Infer(with_id, &response).ok());
  EXPECT_EQ(response.id(), "req-42");
  EXPECT_EQ(response.model_name(), "m");
  EXPECT_EQ(response.model_version(), "1");
}

}  // namespace
}  // namespace mantissa
