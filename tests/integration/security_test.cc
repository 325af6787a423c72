// Transport security and access control through the real daemon and CLI:
// bearer tokens and roles on every service, job visibility per principal,
// queue caps, /metrics over HTTPS with tokens, TLS and mTLS with certificates
// made here by the openssl CLI, certificate reload, the plaintext probe
// listener, and the refusal of plaintext on non-loopback addresses.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "inference/grpc_service.grpc.pb.h"
#include "mantissa/v1/serving.grpc.pb.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/daemon_test.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/temp_dir.h"

namespace mantissa {
namespace {

using ::mantissa::testing::CommandResult;
using ::mantissa::testing::DaemonProcess;
using ::mantissa::testing::RunCli;
using ::mantissa::testing::RunCommand;
using ::mantissa::testing::SubmitOutcome;
using ::mantissa::testing::TempDir;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kAdminToken[] = "admin-token-0123456789";
constexpr char kAliceToken[] = "alice-token-0123456789";
constexpr char kBobToken[] = "bob-token-0123456789";
constexpr char kCarolToken[] = "carol-token-0123456789";
constexpr char kServeToken[] = "serve-token-0123456789";
constexpr char kReadToken[] = "read-token-0123456789";
constexpr char kMetricsToken[] = "metrics-token-0123456789";

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
}

std::string Sha256Hex(const std::string& text, const TempDir& dir) {
  const std::string path = dir.File("digest-input");
  WriteFile(path, text);
  CommandResult r = RunCommand({"/usr/bin/sha256sum", path});
  return r.out.substr(0, 64);
}

std::string TokenLine(const std::string& token, const std::string& principal,
                      const std::string& role, const TempDir& dir) {
  return absl::StrCat(Sha256Hex(token, dir), " ", principal, " ", role, "\n");
}

// A CA and certificates signed by it, made with the openssl CLI.
class CertificateMaker {
 public:
  CertificateMaker(const TempDir& dir, std::string ca_name)
      : dir_(dir), ca_name_(std::move(ca_name)) {
    Run({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", ca_key(), "-out", ca_cert(), "-days", "2", "-subj", "/CN=" + ca_name_,
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext",
         "keyUsage=critical,keyCertSign,cRLSign"});
  }

  std::string ca_cert() const { return dir_.File(ca_name_ + ".pem"); }
  std::string ca_key() const { return dir_.File(ca_name_ + ".key"); }

  // Writes <name>.pem and <name>.key; `server` adds the loopback SANs.
  void Issue(const std::string& name, const std::string& common_name, bool server) {
    const std::string ext = dir_.File(name + ".ext");
    WriteFile(ext, server ? "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                            "extendedKeyUsage=serverAuth\n"
                          : "extendedKeyUsage=clientAuth\n");
    Run({"req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
         dir_.File(name + ".key"), "-out", dir_.File(name + ".csr"), "-subj",
         "/CN=" + common_name});
    Run({"x509", "-req", "-in", dir_.File(name + ".csr"), "-CA", ca_cert(), "-CAkey", ca_key(),
         "-CAcreateserial", "-out", dir_.File(name + ".pem"), "-days", "2", "-extfile", ext});
  }

 private:
  void Run(std::vector<std::string> args) {
    args.insert(args.begin(), "/usr/bin/openssl");
    CommandResult r = RunCommand(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }

  const TempDir& dir_;
  const std::string ca_name_;
};

grpc::Status ListJobs(const std::shared_ptr<grpc::Channel>& channel, v1::ListJobsResponse* out) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  return v1::TrainingService::NewStub(channel)->ListJobs(&context, v1::ListJobsRequest(), out);
}

grpc::Status ListModels(const std::shared_ptr<grpc::Channel>& channel) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::ListModelsResponse response;
  return v1::ModelService::NewStub(channel)->ListModels(&context, v1::ListModelsRequest(),
                                                        &response);
}

grpc::Status RepositoryIndex(const std::shared_ptr<grpc::Channel>& channel) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  inference::RepositoryIndexResponse response;
  return inference::GRPCInferenceService::NewStub(channel)->RepositoryIndex(
      &context, inference::RepositoryIndexRequest(), &response);
}

grpc::Status GetCapabilities(const std::shared_ptr<grpc::Channel>& channel) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::GetCapabilitiesResponse response;
  return v1::TrainingService::NewStub(channel)->GetCapabilities(
      &context, v1::GetCapabilitiesRequest(), &response);
}

grpc::Status GetJob(const std::shared_ptr<grpc::Channel>& channel, const std::string& id,
                    v1::Job* job = nullptr) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::GetJobRequest request;
  request.set_job_id(id);
  v1::GetJobResponse response;
  grpc::Status status = v1::TrainingService::NewStub(channel)->GetJob(&context, request, &response);
  if (job != nullptr) *job = response.job();
  return status;
}

grpc::Status CancelJob(const std::shared_ptr<grpc::Channel>& channel, const std::string& id) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::CancelJobRequest request;
  request.set_job_id(id);
  v1::CancelJobResponse response;
  return v1::TrainingService::NewStub(channel)->CancelJob(&context, request, &response);
}

grpc::Status HealthCheck(const std::shared_ptr<grpc::Channel>& channel,
                         grpc::health::v1::HealthCheckResponse* response) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  return grpc::health::v1::Health::NewStub(channel)->Check(
      &context, grpc::health::v1::HealthCheckRequest(), response);
}

// GET /metrics: the HTTP status code ("000" when no answer came).
std::string MetricsStatus(int port, const std::string& token, const std::string& ca = "") {
  std::vector<std::string> argv = {"/usr/bin/curl", "-s",         "-o", "/dev/null", "-w",
                                   "%{http_code}",  "--max-time", "10"};
  if (!token.empty())
    argv.insert(argv.end(), {"-H", absl::StrCat("Authorization: Bearer ", token)});
  if (!ca.empty()) argv.insert(argv.end(), {"--cacert", ca});
  argv.push_back(absl::StrCat(ca.empty() ? "http" : "https", "://127.0.0.1:", port, "/metrics"));
  return RunCommand(argv).out;
}

// A long job, so that it is still queued or running while the test looks.
v1::JobSpec LongJob() { return testing::SyntheticMlpSpec(100000); }

// ---------------------------------------------------------------------------
// Tokens and roles, on one plaintext loopback daemon.

class SecurityTokensTest : public testing::SharedDaemonTest {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::make_unique<TempDir>();
    std::string tokens = "# principals of the test daemon\n\n";
    absl::StrAppend(&tokens, TokenLine(kAdminToken, "root", "admin", *dir_),
                    TokenLine(kAliceToken, "alice", "train", *dir_),
                    TokenLine(kBobToken, "bob", "train", *dir_),
                    TokenLine(kCarolToken, "carol", "train", *dir_),
                    TokenLine(kServeToken, "frontend", "serve", *dir_),
                    TokenLine(kReadToken, "auditor", "read", *dir_), "  ",
                    TokenLine(kMetricsToken, "prometheus", "metrics", *dir_));
    WriteFile(dir_->File("tokens"), tokens);
    WriteFile(dir_->File("alice.token"), absl::StrCat(kAliceToken, "\n"));
    StartSuiteDaemon({.state_dir = dir_->path(),
                      .extra_flags = {"--auth_tokens_file=" + dir_->File("tokens"),
                                      "--max_queued_jobs_per_principal=2"},
                      .token = kAdminToken});
  }

  static std::shared_ptr<grpc::Channel> As(const std::string& token) {
    return daemon_->NewChannel(token);
  }

  static SubmitOutcome SubmitAs(const std::string& token, const v1::JobSpec& spec) {
    return testing::Submit(*v1::TrainingService::NewStub(As(token)), spec);
  }
};

TEST_F(SecurityTokensTest, EveryServiceRefusesCallsWithoutAToken) {
  v1::ListJobsResponse jobs;
  grpc::Status status = ListJobs(As(""), &jobs);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("bearer token"));
  EXPECT_EQ(ListModels(As("")).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(RepositoryIndex(As("")).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(SubmitAs("", testing::SyntheticMlpSpec(1)).status.error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(SecurityTokensTest, EveryServiceRefusesAWrongToken) {
  v1::ListJobsResponse jobs;
  EXPECT_EQ(ListJobs(As("not-a-token"), &jobs).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(ListModels(As("not-a-token")).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  grpc::Status status = RepositoryIndex(As("not-a-token"));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(status.error_message(), HasSubstr("not valid"));
}

TEST_F(SecurityTokensTest, HealthAndLivenessStayOpen) {
  grpc::health::v1::HealthCheckResponse health;
  EXPECT_TRUE(HealthCheck(As(""), &health).ok());
  grpc::ClientContext context;
  inference::ServerLiveResponse live;
  EXPECT_TRUE(inference::GRPCInferenceService::NewStub(As(""))
                  ->ServerLive(&context, inference::ServerLiveRequest(), &live)
                  .ok());
  EXPECT_TRUE(live.live());
}

TEST_F(SecurityTokensTest, ARoleThatMayNotIsDeniedNamingRoleAndCall) {
  // TrainingService: serve may not submit.
  SubmitOutcome submitted = SubmitAs(kServeToken, testing::SyntheticMlpSpec(1));
  EXPECT_EQ(submitted.status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(submitted.status.error_message(), HasSubstr("role serve"));
  EXPECT_THAT(submitted.status.error_message(), HasSubstr("SubmitJob"));
  // read may read but not submit.
  v1::ListJobsResponse jobs;
  EXPECT_TRUE(ListJobs(As(kReadToken), &jobs).ok());
  EXPECT_EQ(SubmitAs(kReadToken, testing::SyntheticMlpSpec(1)).status.error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  // ModelService: train may not list models; registering TorchScript is admin only.
  grpc::Status status = ListModels(As(kAliceToken));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(status.error_message(), HasSubstr("ListModels"));
  {
    grpc::ClientContext context;
    v1::RegisterModelRequest request;
    request.set_name("m");
    request.set_torchscript_path("/nonexistent.pt");
    v1::RegisterModelResponse response;
    status =
        v1::ModelService::NewStub(As(kServeToken))->RegisterModel(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_THAT(status.error_message(), HasSubstr("admin"));
  }
  // GRPCInferenceService: train may not infer; serve may not load.
  {
    grpc::ClientContext context;
    inference::ModelInferRequest request;
    request.set_model_name("m");
    inference::ModelInferResponse response;
    status = inference::GRPCInferenceService::NewStub(As(kAliceToken))
                 ->ModelInfer(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_THAT(status.error_message(), HasSubstr("ModelInfer"));
  }
  {
    grpc::ClientContext context;
    inference::RepositoryModelLoadRequest request;
    request.set_model_name("m");
    inference::RepositoryModelLoadResponse response;
    status = inference::GRPCInferenceService::NewStub(As(kServeToken))
                 ->RepositoryModelLoad(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  EXPECT_TRUE(RepositoryIndex(As(kServeToken)).ok());
  // metrics reaches nothing over gRPC.
  EXPECT_EQ(GetCapabilities(As(kMetricsToken)).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(GetCapabilities(As(kAliceToken)).ok());
}

TEST_F(SecurityTokensTest, TrainingTorchScriptNeedsTheAdminRole) {
  v1::JobSpec spec = testing::SyntheticMlpSpec(1);
  spec.set_model("torchscript");
  (*spec.mutable_model_options())["path"] = "/nonexistent.pt";
  SubmitOutcome submitted = SubmitAs(kAliceToken, spec);
  EXPECT_EQ(submitted.status.error_code(), grpc::StatusCode::PERMISSION_DENIED)
      << submitted.status.error_message();
  EXPECT_THAT(submitted.status.error_message(), HasSubstr("role train"));
  EXPECT_THAT(submitted.status.error_message(), HasSubstr("torchscript"));
  // An admin gets past the role check to the spec's own validation (the
  // file is outside --torchscript_root).
  submitted = SubmitAs(kAdminToken, spec);
  EXPECT_FALSE(submitted.status.ok());
  EXPECT_THAT(submitted.status.error_message(), Not(HasSubstr("role")));
  EXPECT_THAT(submitted.status.error_message(), HasSubstr("model_options[path]"));
}

TEST_F(SecurityTokensTest, TrainPrincipalsSeeAndCancelOnlyTheirOwnJobs) {
  SubmitOutcome alice = SubmitAs(kAliceToken, LongJob());
  ASSERT_TRUE(alice.status.ok()) << alice.status.error_message();
  EXPECT_EQ(alice.job.principal(), "alice");
  const std::string id = alice.job.id();

  // bob: another's job reads as missing, everywhere.
  grpc::Status status = GetJob(As(kBobToken), id);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(status.error_message(), HasSubstr("no job"));
  EXPECT_EQ(CancelJob(As(kBobToken), id).error_code(), grpc::StatusCode::NOT_FOUND);
  {
    grpc::ClientContext context;
    v1::WatchJobRequest request;
    request.set_job_id(id);
    auto reader = v1::TrainingService::NewStub(As(kBobToken))->WatchJob(&context, request);
    v1::JobEvent event;
    EXPECT_FALSE(reader->Read(&event));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext context;
    v1::ExportModelRequest request;
    request.set_job_id(id);
    request.set_name("stolen");
    v1::ExportModelResponse response;
    EXPECT_EQ(v1::ModelService::NewStub(As(kBobToken))
                  ->ExportModel(&context, request, &response)
                  .error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  v1::JobSpec resume;
  resume.set_resume_from(id);
  EXPECT_EQ(SubmitAs(kBobToken, resume).status.error_code(), grpc::StatusCode::NOT_FOUND);
  v1::ListJobsResponse bobs;
  ASSERT_TRUE(ListJobs(As(kBobToken), &bobs).ok());
  for (const v1::Job& job : bobs.jobs()) EXPECT_NE(job.id(), id);

  // alice and the read and admin roles see it, with its principal.
  v1::ListJobsResponse alices;
  ASSERT_TRUE(ListJobs(As(kAliceToken), &alices).ok());
  ASSERT_GE(alices.jobs_size(), 1);
  for (const v1::Job& job : alices.jobs()) EXPECT_EQ(job.principal(), "alice");
  v1::Job seen;
  ASSERT_TRUE(GetJob(As(kReadToken), id, &seen).ok());
  EXPECT_EQ(seen.principal(), "alice");

  // The CLI shows the principal, with the token from a file.
  CommandResult get =
      RunCli({daemon_->server_flag(), "--token-file", dir_->File("alice.token"), "get", id});
  EXPECT_EQ(get.exit_code, 0) << get.err;
  EXPECT_THAT(get.out, ::testing::HasSubstr("Principal:      alice"));
  CommandResult anonymous = RunCli({daemon_->server_flag(), "get", id});
  EXPECT_NE(anonymous.exit_code, 0);
  EXPECT_THAT(anonymous.err, HasSubstr("UNAUTHENTICATED"));
  CommandResult env = RunCommand({"/usr/bin/env", absl::StrCat("MANTISSA_TOKEN=", kBobToken),
                                  MANTISSA_CLI_BIN, daemon_->server_flag(), "get", id});
  EXPECT_NE(env.exit_code, 0);
  EXPECT_THAT(env.err, HasSubstr("NOT_FOUND"));

  // admin may cancel anyone's job.
  EXPECT_TRUE(CancelJob(As(kAdminToken), id).ok());
  auto ended =
      testing::WaitForJob(*v1::TrainingService::NewStub(As(kAdminToken)), id, testing::IsTerminal);
  ASSERT_OK(ended);
  EXPECT_EQ(ended->state(), v1::CANCELLED);
}

TEST_F(SecurityTokensTest, TrainPrincipalsAddVersionsOnlyToTheirOwnModels) {
  const auto train = [](const std::string& token) {
    SubmitOutcome submitted = SubmitAs(token, testing::SyntheticMlpSpec(2));
    EXPECT_TRUE(submitted.status.ok()) << submitted.status.error_message();
    auto job = testing::WaitForJob(*v1::TrainingService::NewStub(As(token)), submitted.job.id(),
                                   testing::IsTerminal);
    EXPECT_TRUE(job.ok() && job->state() == v1::SUCCEEDED);
    return submitted.job.id();
  };
  const auto export_as = [](const std::string& token, const std::string& job_id) {
    grpc::ClientContext context;
    v1::ExportModelRequest request;
    request.set_job_id(job_id);
    request.set_name("alices-model");
    request.set_precision("bf16-true");
    v1::ExportModelResponse response;
    return v1::ModelService::NewStub(As(token))->ExportModel(&context, request, &response);
  };
  const std::string alices = train(kAliceToken);
  const std::string bobs = train(kBobToken);
  grpc::Status status = export_as(kAliceToken, alices);
  ASSERT_TRUE(status.ok()) << status.error_message();
  // bob may not put his weights behind alice's model name.
  status = export_as(kBobToken, bobs);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("alices-model"));
  // alice may add a version; an admin may add anyone's.
  status = export_as(kAliceToken, alices);
  EXPECT_TRUE(status.ok()) << status.error_message();
  status = export_as(kAdminToken, bobs);
  EXPECT_TRUE(status.ok()) << status.error_message();
  // Now a version is bob's: alice may no longer add one either.
  EXPECT_EQ(export_as(kAliceToken, alices).error_code(), grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(SecurityTokensTest, QueuedJobsPerPrincipalAreCapped) {
  std::vector<std::string> accepted;
  grpc::Status refused;
  // One may run; two more may wait; the next is refused.
  for (int i = 0; i < 4 && refused.ok(); ++i) {
    SubmitOutcome outcome = SubmitAs(kCarolToken, LongJob());
    if (outcome.status.ok()) {
      accepted.push_back(outcome.job.id());
    } else {
      refused = outcome.status;
    }
  }
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(), HasSubstr("--max_queued_jobs_per_principal"));
  EXPECT_GE(accepted.size(), 2u);
  // Another principal is not held up by carol's queue.
  SubmitOutcome alice = SubmitAs(kAliceToken, LongJob());
  EXPECT_TRUE(alice.status.ok()) << alice.status.error_message();
  accepted.push_back(alice.job.id());
  for (const std::string& id : accepted) CancelJob(As(kAdminToken), id);
}

TEST_F(SecurityTokensTest, MetricsNeedAMetricsOrAdminToken) {
  const int port = daemon_->metrics_port();
  EXPECT_EQ(MetricsStatus(port, ""), "401");
  EXPECT_EQ(MetricsStatus(port, "not-a-token"), "401");
  EXPECT_EQ(MetricsStatus(port, kServeToken), "403");
  EXPECT_EQ(MetricsStatus(port, kMetricsToken), "200");
  EXPECT_EQ(MetricsStatus(port, kAdminToken), "200");
  auto text = daemon_->ScrapeMetrics();  // the admin token of the Options
  ASSERT_OK(text);
  EXPECT_THAT(*text, HasSubstr("mantissa_jobs_queued"));
}

// ---------------------------------------------------------------------------
// TLS, mTLS and certificate reload, on one daemon.

class SecurityTlsTest : public testing::SharedDaemonTest {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::make_unique<TempDir>();
    ca_ = std::make_unique<CertificateMaker>(*dir_, "ca");
    ca_->Issue("server", "localhost", /*server=*/true);
    ca_->Issue("client", "client-one", /*server=*/false);
    WriteFile(dir_->File("tokens"),
              absl::StrCat("cert:client-one ops admin\n",
                           TokenLine(kMetricsToken, "prometheus", "metrics", *dir_)));
    StartSuiteDaemon(
        {.state_dir = dir_->path(),
         .extra_flags = {"--tls_cert_file=" + dir_->File("server.pem"),
                         "--tls_key_file=" + dir_->File("server.key"),
                         "--tls_client_ca_file=" + ca_->ca_cert(), "--tls_refresh_seconds=1",
                         "--auth_tokens_file=" + dir_->File("tokens"),
                         "--health_address=127.0.0.1:0"},
         .tls_ca_file = ca_->ca_cert(),
         .tls_cert_file = dir_->File("client.pem"),
         .tls_key_file = dir_->File("client.key")});
  }

  static void TearDownTestSuite() {
    ca_.reset();
    SharedDaemonTest::TearDownTestSuite();
  }

  // A TLS channel trusting `ca`, with the client certificate if `with_cert`.
  static std::shared_ptr<grpc::Channel> TlsChannel(const std::string& ca, bool with_cert) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ReadAll(ca);
    if (with_cert) {
      ssl.pem_cert_chain = ReadAll(dir_->File("client.pem"));
      ssl.pem_private_key = ReadAll(dir_->File("client.key"));
    }
    return grpc::CreateChannel(daemon_->grpc_address(), grpc::SslCredentials(ssl));
  }

  static std::string ReadAll(const std::string& path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }

  static inline std::unique_ptr<CertificateMaker> ca_;
};

TEST_F(SecurityTlsTest, AVerifiedClientCertificateNamesThePrincipal) {
  SubmitOutcome submitted = testing::Submit(*daemon_->NewStub(), testing::SyntheticMlpSpec(1));
  ASSERT_TRUE(submitted.status.ok()) << submitted.status.error_message();
  EXPECT_EQ(submitted.job.principal(), "ops");
}

TEST_F(SecurityTlsTest, WithoutAClientCertificateTheHandshakeIsRefused) {
  grpc::Status status = GetCapabilities(TlsChannel(ca_->ca_cert(), /*with_cert=*/false));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
}

TEST_F(SecurityTlsTest, PlaintextClientsAreRefused) {
  grpc::Status status = GetCapabilities(
      grpc::CreateChannel(daemon_->grpc_address(), grpc::InsecureChannelCredentials()));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
}

TEST_F(SecurityTlsTest, TheCliConnectsWithTheTlsFlags) {
  CommandResult r = RunCli({daemon_->server_flag(), "--tls-ca-file", ca_->ca_cert(),
                            "--tls-cert-file", dir_->File("client.pem"), "--tls-key-file",
                            dir_->File("client.key"), "capabilities"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  CommandResult env = RunCommand({"/usr/bin/env", "MANTISSA_TLS_CA_FILE=" + ca_->ca_cert(),
                                  "MANTISSA_TLS_CERT_FILE=" + dir_->File("client.pem"),
                                  "MANTISSA_TLS_KEY_FILE=" + dir_->File("client.key"),
                                  MANTISSA_CLI_BIN, daemon_->server_flag(), "capabilities"});
  EXPECT_EQ(env.exit_code, 0) << env.err;
  CommandResult no_cert =
      RunCli({daemon_->server_flag(), "--tls-ca-file", ca_->ca_cert(), "capabilities"});
  EXPECT_NE(no_cert.exit_code, 0);
}

TEST_F(SecurityTlsTest, MetricsAreServedOverHttpsWithAToken) {
  const int port = daemon_->metrics_port();
  EXPECT_EQ(MetricsStatus(port, kMetricsToken, ca_->ca_cert()), "200");
  EXPECT_EQ(MetricsStatus(port, "", ca_->ca_cert()), "401");
  EXPECT_NE(MetricsStatus(port, kMetricsToken), "200");  // plain HTTP
}

// REST is held to gRPC's mTLS: no client certificate, no handshake; a
// verified certificate's CN names the principal (ops, an admin) as on gRPC.
TEST_F(SecurityTlsTest, RestNeedsAClientCertificateWhoseCnNamesThePrincipal) {
  ASSERT_GT(daemon_->http_port(), 0);
  auto status = [](bool with_cert) {
    std::vector<std::string> argv = {
        "/usr/bin/curl", "-s",         "-o", "/dev/null", "-w",
        "%{http_code}",  "--max-time", "10", "--cacert",  ca_->ca_cert()};
    if (with_cert) {
      argv.insert(argv.end(),
                  {"--cert", dir_->File("client.pem"), "--key", dir_->File("client.key")});
    }
    argv.push_back(daemon_->http_url() + "/v2");
    return RunCommand(argv).out;
  };
  EXPECT_EQ(status(/*with_cert=*/true), "200");
  EXPECT_EQ(status(/*with_cert=*/false), "000");
}

TEST_F(SecurityTlsTest, ProbesUseThePlaintextHealthListener) {
  ASSERT_GT(daemon_->health_port(), 0);
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", daemon_->health_port()),
                                     grpc::InsecureChannelCredentials());
  grpc::health::v1::HealthCheckResponse health;
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (absl::Now() < deadline) {
    if (HealthCheck(channel, &health).ok() &&
        health.status() == grpc::health::v1::HealthCheckResponse::SERVING) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(health.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  // It serves health only.
  EXPECT_EQ(GetCapabilities(channel).error_code(), grpc::StatusCode::UNIMPLEMENTED);
}

// Last in the suite: it replaces the daemon's certificate.
TEST_F(SecurityTlsTest, AReplacedCertificateIsServedWithoutARestart) {
  CertificateMaker other(*dir_, "other-ca");
  other.Issue("server2", "localhost", /*server=*/true);
  // Replace the files the daemon watches, key first then certificate.
  std::filesystem::copy_file(dir_->File("server2.key"), dir_->File("server.key"),
                             std::filesystem::copy_options::overwrite_existing);
  std::filesystem::copy_file(dir_->File("server2.pem"), dir_->File("server.pem"),
                             std::filesystem::copy_options::overwrite_existing);
  grpc::Status status;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (absl::Now() < deadline) {
    // A fresh channel each time: new connections see the new certificate.
    status = GetCapabilities(TlsChannel(other.ca_cert(), /*with_cert=*/true));
    if (status.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(GetCapabilities(TlsChannel(ca_->ca_cert(), /*with_cert=*/true)).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  // /metrics reads the files at each handshake.
  EXPECT_EQ(MetricsStatus(daemon_->metrics_port(), kMetricsToken, other.ca_cert()), "200");
}

// ---------------------------------------------------------------------------
// Plaintext only on loopback. Only start-up is tested: no traffic leaves
// loopback.

TEST(SecurityBindTest, ANonLoopbackPlaintextAddressNeedsAllowInsecure) {
  TempDir refused_dir;
  auto refused = DaemonProcess::Start(
      {.state_dir = refused_dir.path(), .extra_flags = {"--grpc_address=0.0.0.0:0"}});
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("--allow_insecure"));

  TempDir metrics_dir;
  auto metrics = DaemonProcess::Start(
      {.state_dir = metrics_dir.path(), .extra_flags = {"--metrics_address=0.0.0.0:0"}});
  ASSERT_FALSE(metrics.ok());
  EXPECT_THAT(std::string(metrics.status().message()), HasSubstr("--metrics_address"));

  TempDir allowed_dir;
  auto allowed =
      DaemonProcess::Start({.state_dir = allowed_dir.path(),
                            .extra_flags = {"--grpc_address=0.0.0.0:0", "--allow_insecure"}});
  ASSERT_OK(allowed);
  EXPECT_THAT((*allowed)->Log(), HasSubstr("PLAINTEXT"));
}

TEST(SecurityBindTest, AMalformedTokensFileFailsStartUpNamingTheLine) {
  TempDir dir;
  WriteFile(dir.File("tokens"), "# ok\n" + std::string(64, 'a') + " root admin\nbroken line\n");
  auto daemon = DaemonProcess::Start(
      {.state_dir = dir.path(), .extra_flags = {"--auth_tokens_file=" + dir.File("tokens")}});
  ASSERT_FALSE(daemon.ok());
  EXPECT_THAT(std::string(daemon.status().message()), HasSubstr("line 3"));
}

}  // namespace
}  // namespace mantissa
