// eplb_worker: the worker daemon (CPU backend). Hosts the workers of one or more nodes in this
// process (their ranks share an in-process fabric for weight moves), connects each to the
// controller, and optionally drives them with synthetic drifting routing (the simulator).
//
//   eplb_worker --controller 127.0.0.1:50051 --nodes 2 --ep_size 8 --num_logical 64
//       --num_redundant 16 --num_layers 8 --traffic --duration 60s
//
// Prints one line per node when registered; exits cleanly on SIGTERM/SIGINT or after --duration.
#include <csignal>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/stop_signals.h"
#include "core/formats.h"
#include "prometheus/exposer.h"
#include "prometheus/registry.h"
#include "worker/controller_client.h"
#include "worker/runtime.h"
#include "worker/synthetic_traffic.h"

ABSL_FLAG(std::string, controller, "127.0.0.1:50051", "controller gRPC address");
ABSL_FLAG(int, nodes, 1, "nodes hosted by this process (one worker each)");
ABSL_FLAG(int, first_node, 0, "index of the first hosted node");
ABSL_FLAG(int, num_logical, 64, "E");
ABSL_FLAG(int, num_redundant, 16, "R");
ABSL_FLAG(int, ep_size, 8, "W (all ranks of the cluster)");
ABSL_FLAG(int, num_shared, 1, "S");
ABSL_FLAG(int, num_nodes, 1, "N: nodes in the cluster (W % N == 0)");
ABSL_FLAG(int, num_layers, 8, "MoE layers");
ABSL_FLAG(int64_t, row_bytes, 4096, "weight bytes per expert row (CPU backend)");
ABSL_FLAG(absl::Duration, report_interval, absl::Milliseconds(500), "load report interval");
ABSL_FLAG(bool, traffic, false, "drive the workers with synthetic routing");
ABSL_FLAG(int, tokens_per_step, 512, "synthetic tokens per layer and step");
ABSL_FLAG(int, top_k, 4, "synthetic top-k");
ABSL_FLAG(double, zipf, 1.2, "synthetic skew");
ABSL_FLAG(absl::Duration, step_interval, absl::Milliseconds(20), "synthetic step period");
ABSL_FLAG(absl::Duration, drift_every, absl::Seconds(10), "hot experts move this often (0: never)");
ABSL_FLAG(absl::Duration, duration, absl::ZeroDuration(), "exit after this long (0: run on)");
ABSL_FLAG(uint64_t, seed, 1, "synthetic traffic seed");
ABSL_FLAG(int, num_groups, 1, "synthetic traffic: expert groups");
ABSL_FLAG(double, group_locality, 0, "synthetic traffic: share of tokens routed inside one group");
ABSL_FLAG(double, burst_probability, 0, "synthetic traffic: per-step chance of a burst");
ABSL_FLAG(double, burst_factor, 4, "synthetic traffic: how much a burst multiplies an expert");
ABSL_FLAG(int, burst_steps, 50, "synthetic traffic: steps a burst lasts");
ABSL_FLAG(std::string, metrics, "", "Prometheus /metrics address (empty: off; port 0: any)");
ABSL_FLAG(std::string, replay, "",
          "replay a load file ({\"logical_count\": [T][layers][E]}, SGLang's format): step t's "
          "counts drive the traffic for --replay_step (cycling); replaces the Zipf model");
ABSL_FLAG(std::string, fabric_dir, "",
          "directory of shared-memory expert stores (e.g. under /dev/shm): daemons of one "
          "machine given the same directory move weights between each other's ranks");
ABSL_FLAG(absl::Duration, replay_step, absl::Seconds(2), "how long each replayed step lasts");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int w = absl::GetFlag(FLAGS_ep_size);
  const int cluster_nodes = absl::GetFlag(FLAGS_num_nodes);
  const int hosted = absl::GetFlag(FLAGS_nodes);
  if (cluster_nodes <= 0 || w % cluster_nodes != 0 || hosted < 1 ||
      absl::GetFlag(FLAGS_first_node) + hosted > cluster_nodes) {
    std::fprintf(stderr,
                 "eplb_worker: --nodes %d from --first_node %d must fit in --num_nodes %d, "
                 "which must divide --ep_size %d\n",
                 hosted, absl::GetFlag(FLAGS_first_node), cluster_nodes, w);
    return 2;
  }
  const eplb::LayoutConfig layout{absl::GetFlag(FLAGS_num_logical),
                                  absl::GetFlag(FLAGS_num_redundant), w,
                                  absl::GetFlag(FLAGS_num_shared), cluster_nodes};
  eplb::CpuFabric fabric(w);
  if (!absl::GetFlag(FLAGS_fabric_dir).empty())
    fabric.SetSharedDirectory(absl::GetFlag(FLAGS_fabric_dir));
  auto registry = std::make_shared<prometheus::Registry>();
  std::unique_ptr<prometheus::Exposer> exposer;
  if (!absl::GetFlag(FLAGS_metrics).empty()) {
    exposer = std::make_unique<prometheus::Exposer>(absl::GetFlag(FLAGS_metrics));
    exposer->RegisterCollectable(registry);
    std::printf("metrics on port %d\n", exposer->GetListeningPorts().at(0));
  }
  std::vector<std::unique_ptr<eplb::WorkerRuntime>> runtimes;
  std::vector<std::unique_ptr<eplb::ControllerClient>> clients;
  std::vector<eplb::WorkerRuntime*> ptrs;
  const int per_node = w / cluster_nodes;
  for (int n = absl::GetFlag(FLAGS_first_node); n < absl::GetFlag(FLAGS_first_node) + hosted; ++n) {
    eplb::WorkerOptions o;
    o.worker_id = "node-" + std::to_string(n);
    for (int r = n * per_node; r < (n + 1) * per_node; ++r) o.ranks.push_back(r);
    o.node = n;
    o.layout = layout;
    o.num_layers = absl::GetFlag(FLAGS_num_layers);
    o.registry = registry;
    o.tensors = {{"w13", absl::GetFlag(FLAGS_row_bytes) * 2 / 3},
                 {"w2", absl::GetFlag(FLAGS_row_bytes) - absl::GetFlag(FLAGS_row_bytes) * 2 / 3}};
    auto rt = eplb::WorkerRuntime::Create(o, &fabric);
    if (!rt.ok()) {
      std::fprintf(stderr, "eplb_worker: %s\n", rt.status().ToString().c_str());
      return 2;
    }
    runtimes.push_back(*std::move(rt));
    ptrs.push_back(runtimes.back().get());
    clients.push_back(std::make_unique<eplb::ControllerClient>(
        runtimes.back().get(),
        eplb::ControllerClientOptions{absl::GetFlag(FLAGS_controller),
                                      absl::GetFlag(FLAGS_report_interval)}));
    if (absl::Status s = clients.back()->Start(); !s.ok()) {
      std::fprintf(stderr, "eplb_worker: node %d cannot register with %s: %s\n", n,
                   absl::GetFlag(FLAGS_controller).c_str(), s.ToString().c_str());
      return 1;
    }
    std::printf("node %d registered: ranks %d..%d, map version %llu\n", n, n * per_node,
                (n + 1) * per_node - 1,
                static_cast<unsigned long long>(runtimes.back()->applied_version()));
    std::fflush(stdout);
  }
  absl::Notification& stop = *eplb::InstallStopSignals();
  const absl::Time end = absl::GetFlag(FLAGS_duration) > absl::ZeroDuration()
                             ? absl::Now() + absl::GetFlag(FLAGS_duration)
                             : absl::InfiniteFuture();
  if (absl::GetFlag(FLAGS_traffic)) {
    eplb::SyntheticTraffic traffic(
        runtimes.front()->layout(), absl::GetFlag(FLAGS_num_layers),
        {absl::GetFlag(FLAGS_tokens_per_step), absl::GetFlag(FLAGS_top_k),
         absl::GetFlag(FLAGS_zipf), 0.25, absl::GetFlag(FLAGS_seed),
         absl::GetFlag(FLAGS_num_groups), absl::GetFlag(FLAGS_group_locality),
         absl::GetFlag(FLAGS_burst_probability), absl::GetFlag(FLAGS_burst_factor),
         absl::GetFlag(FLAGS_burst_steps)});
    absl::Time next_drift = absl::Now() + absl::GetFlag(FLAGS_drift_every);
    std::vector<eplb::LoadMatrix> replay;
    if (!absl::GetFlag(FLAGS_replay).empty()) {
      auto text = eplb::ReadFileToString(absl::GetFlag(FLAGS_replay));
      auto steps = text.ok() ? eplb::ParseLoadStepsJson(*text)
                             : absl::StatusOr<std::vector<eplb::LoadMatrix>>(text.status());
      if (!steps.ok()) {
        std::fprintf(stderr, "eplb_worker: --replay %s: %s\n", absl::GetFlag(FLAGS_replay).c_str(),
                     steps.status().ToString().c_str());
        return 2;
      }
      const auto& s0 = steps->front();
      if (static_cast<int>(s0.size()) != absl::GetFlag(FLAGS_num_layers) ||
          static_cast<int>(s0[0].size()) != absl::GetFlag(FLAGS_num_logical)) {
        std::fprintf(stderr,
                     "eplb_worker: --replay has shape [%zu][%zu] per step; expected "
                     "[--num_layers=%d][--num_logical=%d]\n",
                     s0.size(), s0[0].size(), absl::GetFlag(FLAGS_num_layers),
                     absl::GetFlag(FLAGS_num_logical));
        return 2;
      }
      replay = *std::move(steps);
      traffic.SetWeights(replay[0]);
    }
    const absl::Time start = absl::Now();
    size_t replay_index = 0;
    while (!stop.WaitForNotificationWithTimeout(absl::GetFlag(FLAGS_step_interval)) &&
           absl::Now() < end) {
      traffic.Step(ptrs);
      if (!replay.empty()) {
        const size_t i =
            static_cast<size_t>((absl::Now() - start) / absl::GetFlag(FLAGS_replay_step)) %
            replay.size();
        if (i != replay_index) {
          replay_index = i;
          traffic.SetWeights(replay[i]);
        }
      } else if (absl::GetFlag(FLAGS_drift_every) > absl::ZeroDuration() &&
                 absl::Now() >= next_drift) {
        traffic.Drift();
        next_drift = absl::Now() + absl::GetFlag(FLAGS_drift_every);
      }
    }
  } else {
    stop.WaitForNotificationWithDeadline(end);
  }
  for (auto& c : clients) c->Stop();
  std::printf("eplb_worker: stopped; map version %llu\n",
              static_cast<unsigned long long>(runtimes.front()->applied_version()));
  return 0;
}
