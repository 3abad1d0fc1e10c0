// The build's foundations, end to end: generated eplb.v1 gRPC stubs served over loopback on an
// ephemeral port, and a prometheus-cpp /metrics endpoint scraped over loopback.
#include <memory>
#include <string>

#include "common/http_get.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/registry.h"
#include "proto/eplb.grpc.pb.h"

namespace eplb {
namespace {

using ::testing::HasSubstr;

// Answers GetPlacement with a fixed two-layer map (this test checks the wire, not the logic).
class PlacementEcho final : public v1::EplbAdminService::Service {
 public:
  grpc::Status GetPlacement(grpc::ServerContext*, const v1::GetPlacementRequest*,
                            v1::Placement* out) override {
    out->set_version(7);
    for (int layer = 0; layer < 2; ++layer) {
      v1::LayerMap* m = out->add_layers();
      m->set_layer(layer);
      for (int p = 0; p < 10; ++p) m->add_physical_to_logical(p % 8);
    }
    out->add_dead_ranks(3);
    return grpc::Status::OK;
  }
};

TEST(ToolchainTest, GrpcOverLoopbackOnAnEphemeralPort) {
  PlacementEcho service;
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  ASSERT_GT(port, 0);
  auto stub = v1::EplbAdminService::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  v1::Placement placement;
  grpc::Status s = stub->GetPlacement(&ctx, v1::GetPlacementRequest(), &placement);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(placement.version(), 7u);
  ASSERT_EQ(placement.layers_size(), 2);
  EXPECT_EQ(placement.layers(1).physical_to_logical(9), 1);
  EXPECT_EQ(placement.dead_ranks(0), 3);
  // An unimplemented RPC is an error status, not a crash.
  grpc::ClientContext ctx2;
  v1::GetStatusResponse status;
  EXPECT_EQ(stub->GetStatus(&ctx2, v1::GetStatusRequest(), &status).error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
  server->Shutdown();
}

TEST(ToolchainTest, PrometheusMetricsOverLoopback) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto& family = prometheus::BuildCounter()
                     .Name("eplb_toolchain_requests_total")
                     .Help("Requests seen by the toolchain test.")
                     .Register(*registry);
  family.Add({{"method", "GetPlacement"}}).Increment(3);
  prometheus::Exposer exposer("127.0.0.1:0");
  exposer.RegisterCollectable(registry);
  const int port = exposer.GetListeningPorts().at(0);
  auto body = HttpGet("127.0.0.1", port, "/metrics");
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_THAT(*body, HasSubstr("eplb_toolchain_requests_total{method=\"GetPlacement\"} 3"));
  EXPECT_FALSE(HttpGet("127.0.0.1", port, "/nope").ok());
}

}  // namespace
}  // namespace eplb
