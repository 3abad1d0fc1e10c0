// eplb_controller: the EPLB control-plane service.
//
//   eplb_controller --listen 0.0.0.0:50051 --metrics 0.0.0.0:9464 --state_dir /var/lib/eplb
//     --num_logical 256 --num_redundant 32 --ep_size 32 --num_shared 1 --num_nodes 4
//     --num_layers 58 --num_groups 8 --bytes_per_expert 44040192
//
// Serves the worker and admin gRPC services, Prometheus /metrics, and GET /healthz on the
// metrics port; runs the rebalance policy every --interval (0: only when an operator triggers);
// exits cleanly on SIGTERM/SIGINT. Prints "listening on port N" once serving.
#include <csignal>
#include <cstdio>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/stop_signals.h"
#include "eplb_controller/controller.h"
#include "eplb_controller/controller_service.h"
#include "grpcpp/grpcpp.h"
#include "prometheus/exposer.h"
#include "prometheus/registry.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:50051", "gRPC address (port 0: any free port)");
ABSL_FLAG(std::string, metrics, "127.0.0.1:9464", "Prometheus /metrics address (empty: off)");
ABSL_FLAG(std::string, state_dir, "", "directory for the durable state (empty: none)");
ABSL_FLAG(int, num_logical, 64, "E: routed experts per MoE layer");
ABSL_FLAG(int, num_redundant, 16, "R: redundant replicas");
ABSL_FLAG(int, ep_size, 8, "W: expert-parallel ranks");
ABSL_FLAG(int, num_shared, 1, "S: fused shared experts per rank");
ABSL_FLAG(int, num_nodes, 1, "N: nodes");
ABSL_FLAG(int, num_layers, 8, "MoE layers");
ABSL_FLAG(int, num_groups, 1, "G: expert groups");
ABSL_FLAG(int64_t, bytes_per_expert, 0, "weight bytes of one routed expert");
ABSL_FLAG(absl::Duration, interval, absl::Seconds(10), "policy evaluation interval (0: off)");
ABSL_FLAG(absl::Duration, min_rebalance_interval, absl::Seconds(30), "min time between rollouts");
ABSL_FLAG(double, trigger_balancedness, 0.95, "rebalance below this observed balancedness");
ABSL_FLAG(double, min_gain, 0.02, "minimum predicted balancedness gain to roll out");
ABSL_FLAG(std::string, algorithm, "incremental", "incremental, balanced or deepseek");
ABSL_FLAG(absl::Duration, window, absl::Seconds(60), "load window (0: exponential decay)");
ABSL_FLAG(absl::Duration, rollout_timeout, absl::Seconds(30), "per-phase answer deadline");
ABSL_FLAG(absl::Duration, report_interval, absl::Seconds(1), "worker report interval");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  eplb::Controller::Options o;
  o.layout = {absl::GetFlag(FLAGS_num_logical), absl::GetFlag(FLAGS_num_redundant),
              absl::GetFlag(FLAGS_ep_size), absl::GetFlag(FLAGS_num_shared),
              absl::GetFlag(FLAGS_num_nodes)};
  o.num_layers = absl::GetFlag(FLAGS_num_layers);
  o.num_groups = absl::GetFlag(FLAGS_num_groups);
  o.bytes_per_expert = absl::GetFlag(FLAGS_bytes_per_expert);
  o.state_dir = absl::GetFlag(FLAGS_state_dir);
  o.aggregation.window = absl::GetFlag(FLAGS_window);
  o.rollout_timeout = absl::GetFlag(FLAGS_rollout_timeout);
  o.report_interval = absl::GetFlag(FLAGS_report_interval);
  o.policy.min_interval = absl::GetFlag(FLAGS_min_rebalance_interval);
  o.policy.trigger_balancedness = absl::GetFlag(FLAGS_trigger_balancedness);
  o.policy.min_balancedness_gain = absl::GetFlag(FLAGS_min_gain);
  o.policy.algorithm = absl::GetFlag(FLAGS_algorithm);
  auto registry = std::make_shared<prometheus::Registry>();
  auto controller = eplb::Controller::Create(o, registry);
  if (!controller.ok()) {
    std::fprintf(stderr, "eplb_controller: %s\n", controller.status().ToString().c_str());
    return 2;
  }
  std::unique_ptr<prometheus::Exposer> exposer;
  if (!absl::GetFlag(FLAGS_metrics).empty()) {
    exposer = std::make_unique<prometheus::Exposer>(absl::GetFlag(FLAGS_metrics));
    exposer->RegisterCollectable(registry);
    // Liveness: an empty collection served with 200 at /healthz while the process runs.
    static auto health = std::make_shared<prometheus::Registry>();
    exposer->RegisterCollectable(health, "/healthz");
    std::printf("metrics on port %d\n", exposer->GetListeningPorts().at(0));
  }
  eplb::WorkerService worker_service(controller->get());
  eplb::AdminService admin_service(controller->get());
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(absl::GetFlag(FLAGS_listen), grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&worker_service);
  builder.RegisterService(&admin_service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr, "eplb_controller: cannot listen on %s\n",
                 absl::GetFlag(FLAGS_listen).c_str());
    return 1;
  }
  std::printf("listening on port %d\n", port);
  std::fflush(stdout);
  absl::Notification& stop = *eplb::InstallStopSignals();
  const absl::Duration interval = absl::GetFlag(FLAGS_interval);
  while (!stop.WaitForNotificationWithTimeout(interval > absl::ZeroDuration() ? interval
                                                                              : absl::Hours(1))) {
    if (interval > absl::ZeroDuration()) (*controller)->Step();
  }
  server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  std::printf("eplb_controller: stopped at version %llu\n",
              static_cast<unsigned long long>((*controller)->version()));
  return 0;
}
