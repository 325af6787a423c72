#include "server/metrics/metrics_http_server.h"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>

#include "server/metrics/metrics.h"
#include "tests/testing/status_matchers.h"

namespace mantissa {
namespace {

using ::mantissa::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;

std::unique_ptr<httplib::Client> ClientFor(int port) {
  auto client = std::make_unique<httplib::Client>("127.0.0.1", port);
  client->set_connection_timeout(std::chrono::seconds(5));
  client->set_read_timeout(std::chrono::seconds(10));
  return client;
}

std::unique_ptr<MetricsHttpServer> StartServer(const Metrics& metrics) {
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> server =
      MetricsHttpServer::Create({"127.0.0.1:0", metrics.registry()});
  EXPECT_OK(server);
  return server.ok() ? std::move(*server) : nullptr;
}

// A listening IPv4 socket on 127.0.0.1 that, unlike httplib's, does not set
// SO_REUSEPORT, so nobody else can bind its port. Closed on destruction.
class OccupiedPort {
 public:
  OccupiedPort() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (fd_ < 0 || bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        listen(fd_, 1) != 0) {
      return;
    }
    socklen_t len = sizeof(addr);
    if (getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
      port_ = ntohs(addr.sin_port);
    }
  }
  ~OccupiedPort() {
    if (fd_ >= 0) close(fd_);
  }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

TEST(MetricsHttpServerTest, ServesRegistryOnPickedPort) {
  Metrics metrics;
  metrics.SetJobsRunning(1);
  metrics.JobSubmitted("32-true");
  std::unique_ptr<MetricsHttpServer> server = StartServer(metrics);
  ASSERT_NE(server, nullptr);
  ASSERT_GT(server->port(), 0);

  auto client = ClientFor(server->port());
  httplib::Result res = client->Get("/metrics");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
  EXPECT_THAT(res->get_header_value("Content-Type"), StartsWith("text/plain; version=0.0.4"));
  EXPECT_THAT(res->body, HasSubstr("# TYPE mantissa_jobs_running gauge\n"));
  EXPECT_THAT(res->body, HasSubstr("\nmantissa_jobs_running 1\n"));
  EXPECT_THAT(res->body, HasSubstr("mantissa_jobs_submitted_total{precision=\"32-true\"} 1\n"));
}

TEST(MetricsHttpServerTest, EachScrapeSeesCurrentValues) {
  Metrics metrics;
  std::unique_ptr<MetricsHttpServer> server = StartServer(metrics);
  ASSERT_NE(server, nullptr);
  auto client = ClientFor(server->port());

  httplib::Result first = client->Get("/metrics");
  ASSERT_TRUE(first) << httplib::to_string(first.error());
  EXPECT_THAT(first->body, HasSubstr("\nmantissa_jobs_queued 0\n"));

  metrics.SetJobsQueued(4);
  metrics.StartJob("abc", "mlp", "32-true")->ObserveStep(0.01);
  httplib::Result second = client->Get("/metrics");
  ASSERT_TRUE(second) << httplib::to_string(second.error());
  EXPECT_THAT(second->body, HasSubstr("\nmantissa_jobs_queued 4\n"));
  EXPECT_THAT(second->body, HasSubstr("mantissa_train_steps_total{job=\"abc\",model=\"mlp\","
                                      "precision=\"32-true\"} 1\n"));
}

TEST(MetricsHttpServerTest, BeforeScrapeRunsAtEachScrape) {
  Metrics metrics;
  int64_t used = 1;
  metrics.SetDeviceMemoryReader("cpu", [&used]() -> absl::StatusOr<DeviceMemory> {
    return DeviceMemory{used++, 100};
  });
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> server = MetricsHttpServer::Create(
      {.address = "127.0.0.1:0", .registry = metrics.registry(), .before_scrape = [&metrics] {
         metrics.RefreshDeviceMemory();
       }});
  ASSERT_OK(server);
  auto client = ClientFor((*server)->port());
  for (const char* expected : {"mantissa_device_memory_used_bytes{device=\"cpu\"} 1\n",
                               "mantissa_device_memory_used_bytes{device=\"cpu\"} 2\n"}) {
    httplib::Result res = client->Get("/metrics");
    ASSERT_TRUE(res) << httplib::to_string(res.error());
    EXPECT_THAT(res->body, HasSubstr(expected));
    EXPECT_THAT(res->body, HasSubstr("mantissa_device_memory_total_bytes{device=\"cpu\"} 100\n"));
  }
}

TEST(MetricsHttpServerTest, RootPointsToMetrics) {
  Metrics metrics;
  std::unique_ptr<MetricsHttpServer> server = StartServer(metrics);
  ASSERT_NE(server, nullptr);
  httplib::Result res = ClientFor(server->port())->Get("/");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
  EXPECT_THAT(res->body, HasSubstr("/metrics"));
}

TEST(MetricsHttpServerTest, UnknownPathIsNotFound) {
  Metrics metrics;
  std::unique_ptr<MetricsHttpServer> server = StartServer(metrics);
  ASSERT_NE(server, nullptr);
  httplib::Result res = ClientFor(server->port())->Get("/nope");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 404);
}

TEST(MetricsHttpServerTest, TwoServersGetDifferentPorts) {
  Metrics metrics;
  std::unique_ptr<MetricsHttpServer> a = StartServer(metrics);
  std::unique_ptr<MetricsHttpServer> b = StartServer(metrics);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_NE(a->port(), b->port());
}

TEST(MetricsHttpServerTest, StopsServingWhenDestroyed) {
  Metrics metrics;
  std::unique_ptr<MetricsHttpServer> server = StartServer(metrics);
  ASSERT_NE(server, nullptr);
  const int port = server->port();
  httplib::Result before = ClientFor(port)->Get("/metrics");
  ASSERT_TRUE(before) << httplib::to_string(before.error());
  server.reset();
  httplib::Result after = ClientFor(port)->Get("/metrics");
  EXPECT_FALSE(after);
}

TEST(MetricsHttpServerTest, AddressWithoutPortIsInvalid) {
  Metrics metrics;
  EXPECT_THAT(MetricsHttpServer::Create({"127.0.0.1", metrics.registry()}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("--metrics_address"), HasSubstr("127.0.0.1"))));
}

TEST(MetricsHttpServerTest, BadPortIsInvalid) {
  Metrics metrics;
  EXPECT_THAT(MetricsHttpServer::Create({"127.0.0.1:70000", metrics.registry()}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--metrics_address")));
}

TEST(MetricsHttpServerTest, MissingRegistryIsInvalid) {
  EXPECT_THAT(MetricsHttpServer::Create({"127.0.0.1:0", nullptr}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("registry")));
}

TEST(MetricsHttpServerTest, PortInUseIsUnavailable) {
  OccupiedPort occupied;
  ASSERT_GT(occupied.port(), 0);
  Metrics metrics;
  const std::string address = "127.0.0.1:" + std::to_string(occupied.port());
  EXPECT_THAT(MetricsHttpServer::Create({address, metrics.registry()}),
              StatusIs(absl::StatusCode::kUnavailable,
                       AllOf(HasSubstr("--metrics_address"), HasSubstr(address))));
}

// cpp-httplib's default socket options set SO_REUSEPORT, which would let a
// second mantissad with the same --metrics_address bind a live server's port
// and split its scrapes. The server must refuse instead.
TEST(MetricsHttpServerTest, PortServedByAnotherServerIsUnavailable) {
  Metrics metrics;
  std::unique_ptr<MetricsHttpServer> first = StartServer(metrics);
  ASSERT_NE(first, nullptr);
  const std::string address = "127.0.0.1:" + std::to_string(first->port());
  EXPECT_THAT(MetricsHttpServer::Create({address, metrics.registry()}),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr(address)));
}

}  // namespace
}  // namespace mantissa
