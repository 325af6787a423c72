// The KServe v2 REST endpoints of the real daemon, driven by curl: every
// endpoint, every error status, Triton's binary extension, and REST and
// gRPC answering the same request with the same bytes. One daemon serves the
// whole suite (a second one, with tokens, checks 401 and 403).

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "tests/testing/daemon_test.h"
#include "tests/testing/inference_client.h"
#include "tests/testing/subprocess.h"

namespace mantissa {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr int kFeatures = 32;  // the synthetic dataset's default
constexpr int kMaxBatch = 8;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

struct HttpReply {
  int status = 0;
  std::string body;
  std::string headers;
};

// `curl -X method url [args...]`: the status, body and response headers.
HttpReply Curl(const testing::TempDir& dir, const std::string& method, const std::string& url,
               std::vector<std::string> args = {}) {
  std::vector<std::string> argv = {
      "/usr/bin/curl",  "-sS", "--max-time",        "30", "-X",          method, "-o",
      dir.File("body"), "-D",  dir.File("headers"), "-w", "%{http_code}"};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back(url);
  testing::CommandResult r = testing::RunCommand(argv);
  HttpReply reply;
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(absl::SimpleAtoi(absl::StripAsciiWhitespace(r.out), &reply.status)) << r.out;
  reply.body = ReadFile(dir.File("body"));
  reply.headers = ReadFile(dir.File("headers"));
  return reply;
}

// The numbers of the first flat JSON array after `after`.
std::vector<double> JsonNumbers(const std::string& body, const std::string& after) {
  std::vector<double> numbers;
  const size_t start = body.find(after);
  if (start == std::string::npos) return numbers;
  const size_t open = body.find('[', start + after.size());
  const size_t close = body.find(']', open);
  for (absl::string_view part :
       absl::StrSplit(absl::string_view(body).substr(open + 1, close - open - 1), ',')) {
    double v = 0;
    if (absl::SimpleAtod(part, &v)) numbers.push_back(v);
  }
  return numbers;
}

class RestTest : public testing::SharedDaemonTest {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::make_unique<testing::TempDir>();
    StartSuiteDaemon({.state_dir = dir_->path()});
    if (daemon_ == nullptr) return;
    client_ = std::make_unique<testing::InferenceClient>(daemon_->grpc_address());
    auto stub = daemon_->NewStub();
    testing::SubmitOutcome submitted = testing::Submit(*stub, testing::SyntheticMlpSpec(20));
    ASSERT_TRUE(submitted.status.ok()) << submitted.status.error_message();
    auto job = testing::WaitForJob(*stub, submitted.job.id(), testing::IsTerminal);
    ASSERT_TRUE(job.ok() && job->state() == v1::SUCCEEDED) << daemon_->Log();
    grpc::Status exported = client_->Export(job->id(), "m", "bf16-true", nullptr, kMaxBatch);
    ASSERT_TRUE(exported.ok()) << exported.error_message();
    inference::ModelMetadataResponse metadata;
    ASSERT_TRUE(client_->ModelMetadata("m", &metadata).ok());
    output_ = metadata.outputs(0).name();
  }
  static void TearDownTestSuite() {
    client_.reset();
    SharedDaemonTest::TearDownTestSuite();
  }

  std::string Url(const std::string& path) const { return daemon_->http_url() + path; }
  HttpReply Get(const std::string& path) { return Curl(files_, "GET", Url(path)); }
  HttpReply Post(const std::string& path, const std::string& json) {
    return Curl(files_, "POST", Url(path), {"-H", "Content-Type: application/json", "-d", json});
  }

  // Two items of pseudo-random features.
  static std::vector<float> Items() { return testing::PseudoRandomFloats(2 * kFeatures, 5); }
  static std::string JsonData(const std::vector<float>& values) {
    std::string data;
    for (float v : values)
      absl::StrAppend(&data, data.empty() ? "" : ",", absl::StrFormat("%.9g", v));
    return data;
  }
  static std::string InferJson(const std::string& shape, const std::string& data,
                               const std::string& extra = "") {
    return absl::StrCat(R"({"id":"r1","inputs":[{"name":"input","datatype":"FP32","shape":)", shape,
                        R"(,"data":[)", data, "]}]", extra, "}");
  }

  testing::TempDir files_;
  static inline std::unique_ptr<testing::InferenceClient> client_;
  static inline std::string output_;
};

TEST_F(RestTest, HealthMetadataReadinessIndexAndStatistics) {
  EXPECT_EQ(Get("/v2/health/live").body, R"({"live":true})");
  HttpReply ready = Get("/v2/health/ready");
  EXPECT_EQ(ready.status, 200);
  EXPECT_EQ(ready.body, R"({"ready":true})");
  EXPECT_THAT(ready.headers, HasSubstr("application/json"));

  HttpReply server = Get("/v2");
  EXPECT_EQ(server.status, 200);
  EXPECT_THAT(server.body, StartsWith(R"({"name":"mantissad","version":")"));
  EXPECT_THAT(server.body, HasSubstr("\"model_repository\""));

  for (const std::string path : {"/v2/models/m", "/v2/models/m/versions/1"}) {
    HttpReply model = Get(path);
    EXPECT_EQ(model.status, 200) << path << ": " << model.body;
    EXPECT_THAT(model.body, StartsWith(R"({"name":"m","versions":["1"],)"));
    EXPECT_THAT(model.body, HasSubstr(R"("inputs":[{"name":"input","datatype":)"));
    EXPECT_THAT(model.body, HasSubstr(absl::StrCat(R"("shape":[-1,)", kFeatures, "]")));
  }
  EXPECT_EQ(Get("/v2/models/m/ready").body, R"({"name":"m","ready":true})");
  EXPECT_EQ(Get("/v2/models/m/versions/1/ready").status, 200);

  HttpReply index = Post("/v2/repository/index", "{}");
  EXPECT_EQ(index.status, 200);
  EXPECT_THAT(index.body, HasSubstr(R"({"name":"m","version":"1","state":"READY")"));
  EXPECT_EQ(Post("/v2/repository/index", R"({"ready":true})").status, 200);

  // A request first, so the statistics have something to count.
  ASSERT_EQ(Post("/v2/models/m/infer", InferJson("[2,32]", JsonData(Items()))).status, 200);
  for (const std::string path : {"/v2/models/stats", "/v2/models/m/stats"}) {
    HttpReply stats = Get(path);
    EXPECT_EQ(stats.status, 200) << path << ": " << stats.body;
    EXPECT_THAT(stats.body, StartsWith(R"({"model_stats":[{"name":"m","version":"1",)"));
    EXPECT_THAT(stats.body, HasSubstr(R"("inference_stats":{"success":{"count":)"));
    EXPECT_THAT(stats.body, HasSubstr(R"("batch_stats":[)"));
  }
}

TEST_F(RestTest, ErrorsCarryTheGrpcStatusAsHttpStatus) {
  struct Case {
    std::string what;
    HttpReply reply;
    int status;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"malformed JSON", Post("/v2/models/m/infer", R"({"inputs":[)"), 400, "not valid JSON"},
      {"wrong shape",
       Post("/v2/models/m/infer",
            InferJson("[2,31]", JsonData(std::vector<float>(2 * (kFeatures - 1), 1.0f)))),
       400, R"(input \"input\": shape [2,31] does not match)"},
      {"data count", Post("/v2/models/m/infer", InferJson("[2,32]", "1,2,3")), 400, "3 elements"},
      {"over max batch",
       Post("/v2/models/m/infer",
            InferJson("[9,32]", JsonData(std::vector<float>(9 * kFeatures, 1.0f)))),
       400, R"(input \"input\": batch size 9)"},
      {"unknown output",
       Post("/v2/models/m/infer",
            InferJson("[2,32]", JsonData(Items()), R"(,"outputs":[{"name":"nope"}])")),
       400, R"(unknown output \"nope\")"},
      {"unknown model", Post("/v2/models/zz/infer", InferJson("[2,32]", JsonData(Items()))), 404,
       "zz"},
      {"unknown model metadata", Get("/v2/models/zz"), 404, "zz"},
      {"unknown model statistics", Get("/v2/models/zz/stats"), 404, "zz"},
      {"unknown route", Get("/v2/nothing/here"), 404, "no endpoint /v2/nothing/here"},
      {"wrong method", Get("/v2/models/m/infer"), 405, "GET is not allowed"},
      {"wrong method on a read", Curl(files_, "DELETE", Url("/v2/models/m")), 405, "use GET"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(c.reply.status, c.status) << c.what << ": " << c.reply.body;
    EXPECT_THAT(c.reply.body, StartsWith(R"({"error":")")) << c.what;
    EXPECT_THAT(c.reply.body, HasSubstr(c.message)) << c.what;
  }
  EXPECT_THAT(Get("/v2/models/m/infer").headers, HasSubstr("Allow: POST"));

  // Over the body limit (gRPC's 4 MiB receive limit): refused before parsing.
  WriteFile(files_.File("big.json"), std::string(5 << 20, ' '));
  HttpReply big = Curl(files_, "POST", Url("/v2/models/m/infer"),
                       {"--data-binary", "@" + files_.File("big.json")});
  EXPECT_EQ(big.status, 413);
  EXPECT_THAT(big.body, HasSubstr("exceeds the limit of 4194304 bytes"));
}

TEST_F(RestTest, UnloadedModelsAre503UntilLoadedAgain) {
  HttpReply unloaded = Post("/v2/repository/models/m/unload", "");
  ASSERT_EQ(unloaded.status, 200) << unloaded.body;
  HttpReply infer = Post("/v2/models/m/infer", InferJson("[2,32]", JsonData(Items())));
  EXPECT_EQ(infer.status, 503) << infer.body;
  EXPECT_THAT(infer.body, HasSubstr("unloaded"));
  EXPECT_EQ(Get("/v2/models/m/ready").status, 503);
  EXPECT_EQ(Post("/v2/repository/models/zz/load", "").status, 404);

  HttpReply loaded = Post("/v2/repository/models/m/load", "");
  ASSERT_EQ(loaded.status, 200) << loaded.body;
  EXPECT_EQ(Post("/v2/models/m/infer", InferJson("[2,32]", JsonData(Items()))).status, 200);
}

TEST_F(RestTest, JsonBinaryAndGrpcGiveTheSameOutputs) {
  const std::vector<float> items = Items();
  inference::ModelInferRequest grpc_request =
      testing::FloatRequest("m", "input", {2, kFeatures}, items);
  inference::ModelInferResponse grpc_response;
  ASSERT_TRUE(client_->Infer(grpc_request, &grpc_response).ok());
  ASSERT_EQ(grpc_response.raw_output_contents_size(), 1);
  const std::string& grpc_bytes = grpc_response.raw_output_contents(0);
  auto grpc_values = testing::OutputFloats(grpc_response, 0);
  ASSERT_TRUE(grpc_values.ok());

  // JSON in, JSON out: the same values (BF16 outputs written as numbers).
  HttpReply json = Post("/v2/models/m/infer", InferJson("[2,32]", JsonData(items)));
  ASSERT_EQ(json.status, 200) << json.body;
  EXPECT_THAT(json.body, StartsWith(R"({"model_name":"m","model_version":"1","id":"r1",)"));
  const std::vector<double> json_values = JsonNumbers(json.body, "\"data\":");
  ASSERT_EQ(json_values.size(), grpc_values->size());
  for (size_t i = 0; i < json_values.size(); ++i) {
    EXPECT_EQ(static_cast<float>(json_values[i]), (*grpc_values)[i]) << i;
  }

  // Binary in (built here), binary out: the very bytes gRPC returned.
  const std::string header =
      absl::StrCat(R"({"inputs":[{"name":"input","datatype":"FP32","shape":[2,32],)",
                   R"("parameters":{"binary_data_size":)", items.size() * sizeof(float), "}}],",
                   R"("outputs":[{"name":")", output_, R"(","parameters":{"binary_data":true}}]})");
  std::string body = header;
  body.append(reinterpret_cast<const char*>(items.data()), items.size() * sizeof(float));
  WriteFile(files_.File("request.bin"), body);
  HttpReply binary = Curl(files_, "POST", Url("/v2/models/m/infer"),
                          {"-H", absl::StrCat("Inference-Header-Content-Length: ", header.size()),
                           "-H", "Content-Type: application/octet-stream", "--data-binary",
                           "@" + files_.File("request.bin")});
  ASSERT_EQ(binary.status, 200) << binary.body;
  const std::string json_part_header = "Inference-Header-Content-Length: ";
  const size_t at = binary.headers.find(json_part_header);
  ASSERT_NE(at, std::string::npos) << binary.headers;
  size_t json_length = 0;
  ASSERT_TRUE(absl::SimpleAtoi(absl::StripAsciiWhitespace(binary.headers.substr(
                                   at + json_part_header.size(),
                                   binary.headers.find('\n', at) - at - json_part_header.size())),
                               &json_length));
  ASSERT_LE(json_length, binary.body.size());
  EXPECT_THAT(
      binary.body.substr(0, json_length),
      HasSubstr(absl::StrCat(R"("parameters":{"binary_data_size":)", grpc_bytes.size(), "}")));
  EXPECT_EQ(binary.body.substr(json_length), grpc_bytes);

  // The request parameter asks the same for every output.
  HttpReply all_binary =
      Post("/v2/models/m/infer",
           InferJson("[2,32]", JsonData(items), R"(,"parameters":{"binary_data_output":true})"));
  ASSERT_EQ(all_binary.status, 200);
  EXPECT_EQ(all_binary.body.substr(all_binary.body.size() - grpc_bytes.size()), grpc_bytes);
}

// Also: readiness drops while the daemon drains, and REST stops cleanly.
TEST(RestAuthTest, TokensAreCheckedAsForGrpc) {
  testing::TempDir dir;
  auto sha256 = [&dir](const std::string& token) {
    WriteFile(dir.File("t"), token);
    testing::CommandResult r = testing::RunCommand({"/usr/bin/sha256sum", dir.File("t")});
    return r.out.substr(0, 64);
  };
  WriteFile(dir.File("tokens"), absl::StrCat(sha256("reader"), " ann read\n", sha256("scraper"),
                                             " prometheus metrics\n"));
  auto daemon = testing::DaemonProcess::Start(
      {.state_dir = dir.path(),
       .extra_flags = {"--auth_tokens_file=" + dir.File("tokens"), "--drain_seconds=2"}});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  const std::string url = (*daemon)->http_url();
  auto bearer = [](const std::string& token) {
    return std::vector<std::string>{"-H", "Authorization: Bearer " + token};
  };
  EXPECT_EQ(Curl(dir, "GET", url + "/v2/health/live").status, 200);  // probes stay open
  HttpReply anonymous = Curl(dir, "GET", url + "/v2");
  EXPECT_EQ(anonymous.status, 401);
  EXPECT_THAT(anonymous.headers, HasSubstr("WWW-Authenticate: Bearer"));
  EXPECT_EQ(Curl(dir, "GET", url + "/v2", bearer("wrong")).status, 401);
  EXPECT_EQ(Curl(dir, "GET", url + "/v2", bearer("reader")).status, 200);
  HttpReply scraper = Curl(dir, "GET", url + "/v2", bearer("scraper"));
  EXPECT_EQ(scraper.status, 403);
  EXPECT_THAT(scraper.body, HasSubstr("GET /v2"));
  HttpReply load = Curl(dir, "POST", url + "/v2/repository/models/m/load",
                        {"-d", "", bearer("reader")[0], bearer("reader")[1]});
  EXPECT_EQ(load.status, 403) << load.body;

  (*daemon)->SendSignal(SIGTERM);
  HttpReply ready;
  const absl::Time deadline = absl::Now() + absl::Seconds(2);
  do {
    ready = Curl(dir, "GET", url + "/v2/health/ready");
  } while (ready.status == 200 && absl::Now() < deadline);
  EXPECT_EQ(ready.status, 503);
  EXPECT_EQ(ready.body, R"({"ready":false})");
  EXPECT_EQ(Curl(dir, "GET", url + "/v2/health/live").status, 200);
  EXPECT_EQ((*daemon)->WaitForExit(absl::Seconds(30)), 0) << (*daemon)->Log();
}

}  // namespace
}  // namespace mantissa
