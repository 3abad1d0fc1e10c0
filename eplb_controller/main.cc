// eplb_controller: the EPLB control-plane service.
//
//   eplb_controller --listen 0.0.0.0:50051 --metrics 0.0.0.0:9464 --state_dir /var/lib/eplb
//     --num_logical 256 --num_redundant 32 --ep_size 32 --num_shared 1 --num_nodes 4
//     --num_layers 58 --num_groups 8 --bytes_per_expert 44040192
//
//   eplb_controller --config /etc/eplb/controller.textproto   (proto/controller_config.proto;
//                                                               its fields override the flags)
//
// Serves the worker and admin gRPC services, Prometheus /metrics, and GET /healthz on the
// metrics port; runs the rebalance policy every --interval (0: only when an operator triggers);
// exits cleanly on SIGTERM/SIGINT. Prints "listening on port N" once serving.
#include <csignal>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/stop_signals.h"
#include "eplb_controller/controller.h"
#include "eplb_controller/controller_service.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"
#include "grpcpp/grpcpp.h"
#include "prometheus/exposer.h"
#include "prometheus/registry.h"
#include "proto/controller_config.pb.h"

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
ABSL_FLAG(double, hysteresis, 0.01, "after a rebalance, trigger only below trigger - this");
ABSL_FLAG(int64_t, max_moves, -1, "replicas moved per rebalance (< 0: unlimited)");
ABSL_FLAG(int, layers_per_rollout, 0,
          "changed layers per rollout version (0: all at once); bounds workers' staging");
ABSL_FLAG(bool, check_config, false,
          "validate the flags and --config (layout included), print the effective settings as "
          "one line, and exit (0: valid, 2: not)");
ABSL_FLAG(std::string, config, "",
          "text-proto ControllerConfig (proto/controller_config.proto); its fields override "
          "the flags of the same name");

namespace {

// Keeps the first text-format error as "line:column: message".
class ConfigErrors : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    if (first.empty()) first = absl::StrCat(line + 1, ":", column + 1, ": ", message);
  }
  std::string first;
};

struct Settings {
  std::string listen, metrics;
  absl::Duration interval;
  eplb::Controller::Options options;
};

absl::Duration Seconds(double s) { return absl::Milliseconds(static_cast<int64_t>(s * 1000)); }

// Flags first, then the config file's fields over them.
absl::StatusOr<Settings> LoadSettings() {
  Settings st;
  st.listen = absl::GetFlag(FLAGS_listen);
  st.metrics = absl::GetFlag(FLAGS_metrics);
  st.interval = absl::GetFlag(FLAGS_interval);
  eplb::Controller::Options& o = st.options;
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
  o.policy.hysteresis = absl::GetFlag(FLAGS_hysteresis);
  o.policy.algorithm = absl::GetFlag(FLAGS_algorithm);
  o.policy.max_moves = absl::GetFlag(FLAGS_max_moves);
  o.policy.layers_per_rollout = absl::GetFlag(FLAGS_layers_per_rollout);
  const std::string path = absl::GetFlag(FLAGS_config);
  if (!path.empty()) {
    std::ifstream f(path);
    if (!f) return absl::NotFoundError(absl::StrCat("cannot read --config ", path));
    std::stringstream text;
    text << f.rdbuf();
    eplb::v1::ControllerConfig c;
    ConfigErrors errors;
    google::protobuf::TextFormat::Parser parser;
    parser.RecordErrorsTo(&errors);
    if (!parser.ParseFromString(text.str(), &c)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", errors.first));
    }
    if (c.has_listen()) st.listen = c.listen();
    if (c.has_metrics()) st.metrics = c.metrics();
    if (c.has_state_dir()) o.state_dir = c.state_dir();
    if (c.has_num_logical()) o.layout.num_logical = c.num_logical();
    if (c.has_num_redundant()) o.layout.num_redundant = c.num_redundant();
    if (c.has_ep_size()) o.layout.ep_size = c.ep_size();
    if (c.has_num_shared()) o.layout.num_shared = c.num_shared();
    if (c.has_num_nodes()) o.layout.num_nodes = c.num_nodes();
    if (c.has_num_layers()) o.num_layers = c.num_layers();
    if (c.has_num_groups()) o.num_groups = c.num_groups();
    if (c.has_bytes_per_expert()) o.bytes_per_expert = c.bytes_per_expert();
    if (c.has_interval_seconds()) st.interval = Seconds(c.interval_seconds());
    if (c.has_min_rebalance_interval_seconds()) {
      o.policy.min_interval = Seconds(c.min_rebalance_interval_seconds());
    }
    if (c.has_trigger_balancedness()) o.policy.trigger_balancedness = c.trigger_balancedness();
    if (c.has_min_gain()) o.policy.min_balancedness_gain = c.min_gain();
    if (c.has_hysteresis()) o.policy.hysteresis = c.hysteresis();
    if (c.has_algorithm()) o.policy.algorithm = c.algorithm();
    if (c.has_max_moves()) o.policy.max_moves = c.max_moves();
    if (c.has_layers_per_rollout()) o.policy.layers_per_rollout = c.layers_per_rollout();
    if (c.has_window_seconds()) o.aggregation.window = Seconds(c.window_seconds());
    if (c.has_rollout_timeout_seconds()) o.rollout_timeout = Seconds(c.rollout_timeout_seconds());
    if (c.has_report_interval_seconds()) o.report_interval = Seconds(c.report_interval_seconds());
  }
  const eplb::ControllerPolicy& p = o.policy;
  if (p.algorithm != "incremental" && p.algorithm != "balanced" && p.algorithm != "deepseek") {
    return absl::InvalidArgumentError(absl::StrCat(
        "algorithm \"", p.algorithm, "\" is unknown; expected incremental, balanced or deepseek"));
  }
  if (p.trigger_balancedness < 0 || p.trigger_balancedness > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("trigger_balancedness ", p.trigger_balancedness, " is not in [0, 1]"));
  }
  if (p.min_balancedness_gain < 0 || p.hysteresis < 0 || p.layers_per_rollout < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_gain ", p.min_balancedness_gain, ", hysteresis ", p.hysteresis,
                     " and layers_per_rollout ", p.layers_per_rollout, " must be >= 0"));
  }
  return st;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  auto settings = LoadSettings();
  if (!settings.ok()) {
    std::fprintf(stderr, "eplb_controller: %s\n", std::string(settings.status().message()).c_str());
    return 2;
  }
  const eplb::Controller::Options& o = settings->options;
  if (absl::GetFlag(FLAGS_check_config)) {
    // The controller's own checks, without touching the state dir; and the planner's group
    // constraint, which it would otherwise meet only when planning.
    if (absl::Status s = eplb::Controller::ValidateOptions(o); !s.ok()) {
      std::fprintf(stderr, "eplb_controller: %s\n", std::string(s.message()).c_str());
      return 2;
    }
    if (o.num_groups < 1 || o.layout.num_logical % o.num_groups != 0) {
      std::fprintf(stderr, "eplb_controller: num_groups %d must divide num_logical %d\n",
                   o.num_groups, o.layout.num_logical);
      return 2;
    }
    std::printf(
        "config ok: listen=%s metrics=%s state_dir=%s E=%d R=%d W=%d S=%d N=%d layers=%d "
        "groups=%d bytes_per_expert=%lld interval=%s algorithm=%s layers_per_rollout=%d "
        "window=%s\n",
        settings->listen.c_str(), settings->metrics.c_str(), o.state_dir.c_str(),
        o.layout.num_logical, o.layout.num_redundant, o.layout.ep_size, o.layout.num_shared,
        o.layout.num_nodes, o.num_layers, o.num_groups, static_cast<long long>(o.bytes_per_expert),
        absl::FormatDuration(settings->interval).c_str(), o.policy.algorithm.c_str(),
        o.policy.layers_per_rollout, absl::FormatDuration(o.aggregation.window).c_str());
    return 0;
  }
  auto registry = std::make_shared<prometheus::Registry>();
  auto controller = eplb::Controller::Create(o, registry);
  if (!controller.ok()) {
    std::fprintf(stderr, "eplb_controller: %s\n", controller.status().ToString().c_str());
    return 2;
  }
  std::unique_ptr<prometheus::Exposer> exposer;
  if (!settings->metrics.empty()) {
    exposer = std::make_unique<prometheus::Exposer>(settings->metrics);
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
  builder.AddListeningPort(settings->listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&worker_service);
  builder.RegisterService(&admin_service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr, "eplb_controller: cannot listen on %s\n", settings->listen.c_str());
    return 1;
  }
  std::printf("listening on port %d\n", port);
  std::fflush(stdout);
  absl::Notification& stop = *eplb::InstallStopSignals();
  const absl::Duration interval = settings->interval;
  while (!stop.WaitForNotificationWithTimeout(interval > absl::ZeroDuration() ? interval
                                                                              : absl::Hours(1))) {
    if (interval > absl::ZeroDuration()) (*controller)->Step();
  }
  server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  std::printf("eplb_controller: stopped at version %llu\n",
              static_cast<unsigned long long>((*controller)->version()));
  return 0;
}
