// Load benchmark of the controller over loopback gRPC: N workers (one rank each) report every
// --report_ms for --seconds, then one full rollout handshake (PREPARE + COMMIT to every worker).
// Prints report latency p50/p99, the process CPU time per second of wall time (controller and
// fake workers share the process, so this is an upper bound for the controller), and the
// rollout time. Figures: docs/BENCHMARKS.md.
//
//   bazel run -c opt //tests/integration:controller_load_benchmark -- --workers 256 --report_ms 100
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/time/clock.h"
#include "eplb_controller/controller.h"
#include "eplb_controller/controller_service.h"
#include "grpcpp/grpcpp.h"
#include "prometheus/registry.h"
#include "proto/eplb.grpc.pb.h"

ABSL_FLAG(int, workers, 256, "fake workers, one rank each (W)");
ABSL_FLAG(int, layers, 58, "MoE layers");
ABSL_FLAG(int, report_ms, 100, "report interval per worker");
ABSL_FLAG(int, seconds, 10, "how long to report");
ABSL_FLAG(int, reporter_threads, 8, "client threads sending the reports");

namespace eplb {
namespace {

double CpuSeconds() {
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_utime.tv_usec * 1e-6 + u.ru_stime.tv_sec +
         u.ru_stime.tv_usec * 1e-6;
}

int Main() {
  const int w = absl::GetFlag(FLAGS_workers);
  const int layers = absl::GetFlag(FLAGS_layers);
  const int e = 256, r = w * ((e + w - 1) / w + 1) - e;  // L = ceil(E / W) + 1 rows per rank
  Controller::Options o;
  o.layout = {e, r, w, 1, 1};
  o.num_layers = layers;
  o.policy.min_interval = absl::ZeroDuration();
  o.rollout_timeout = absl::Seconds(30);
  auto registry = std::make_shared<prometheus::Registry>();
  auto c = Controller::Create(o, registry);
  if (!c.ok()) {
    std::fprintf(stderr, "%s\n", c.status().ToString().c_str());
    return 1;
  }
  Controller& controller = **c;
  const int l_rows = controller.layout().routed_slots_per_rank();
  WorkerService ws(&controller);
  grpc::ServerBuilder b;
  int port = 0;
  b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  b.RegisterService(&ws);
  auto server = b.BuildAndStart();
  const std::string target = "127.0.0.1:" + std::to_string(port);
  auto channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  auto stub = v1::EplbWorkerService::NewStub(channel);

  struct Fake {
    std::string id, session;
    std::unique_ptr<grpc::ClientContext> ctx;
    std::unique_ptr<grpc::ClientReaderWriter<v1::PlacementAnswer, v1::PlacementUpdate>> stream;
    std::thread reader;
  };
  std::vector<Fake> fakes(w);
  for (int i = 0; i < w; ++i) {
    Fake& f = fakes[i];
    f.id = "w" + std::to_string(i);
    v1::RegisterRequest req;
    req.set_worker_id(f.id);
    req.add_ranks(i);
    req.mutable_layout()->set_num_logical(e);
    req.mutable_layout()->set_num_redundant(r);
    req.mutable_layout()->set_ep_size(w);
    req.mutable_layout()->set_num_shared(1);
    req.mutable_layout()->set_num_layers(layers);
    v1::RegisterResponse resp;
    grpc::ClientContext ctx;
    if (!stub->Register(&ctx, req, &resp).ok()) return 1;
    f.session = resp.session_id();
    f.ctx = std::make_unique<grpc::ClientContext>();
    f.stream = stub->StreamPlacements(f.ctx.get());
    v1::PlacementAnswer hello;
    hello.set_worker_id(f.id);
    hello.set_session_id(f.session);
    f.stream->Write(hello);
    f.reader = std::thread([&f] {
      v1::PlacementUpdate u;
      while (f.stream->Read(&u)) {
        if (u.phase() == v1::PlacementUpdate::ABORT) continue;
        v1::PlacementAnswer a;
        a.set_worker_id(f.id);
        a.set_session_id(f.session);
        a.set_version(u.version());
        a.set_nonce(u.nonce());
        a.set_ack(true);
        f.stream->Write(a);
      }
    });
  }
  absl::SleepFor(absl::Milliseconds(500));

  // Reports: each worker every report_ms, spread over the reporter threads.
  const int threads = absl::GetFlag(FLAGS_reporter_threads);
  const absl::Duration period = absl::Milliseconds(absl::GetFlag(FLAGS_report_ms));
  const absl::Time end = absl::Now() + absl::Seconds(absl::GetFlag(FLAGS_seconds));
  std::vector<std::vector<double>> latencies(threads);
  std::atomic<int> errors{0};
  const double cpu0 = CpuSeconds();
  const absl::Time wall0 = absl::Now();
  std::vector<std::thread> reporters;
  for (int t = 0; t < threads; ++t) {
    reporters.emplace_back([&, t] {
      int64_t step = 0;
      for (absl::Time next = absl::Now(); next < end; next += period) {
        for (int i = t; i < w; i += threads) {
          v1::LoadReport rep;
          rep.set_worker_id(fakes[i].id);
          rep.set_session_id(fakes[i].session);
          rep.set_map_version(controller.version());
          rep.set_first_step(step);
          rep.set_last_step(step + 9);
          v1::RankLoad* rl = rep.add_ranks();
          rl->set_rank(i);
          for (int k = 0; k < layers * l_rows; ++k)
            rl->add_counts((i * 7 + k) % 97 + (i == 0) * 5000);
          grpc::ClientContext ctx;
          v1::LoadReportAck ack;
          const absl::Time t0 = absl::Now();
          if (!stub->ReportLoad(&ctx, rep, &ack).ok()) ++errors;
          latencies[t].push_back(absl::ToDoubleMicroseconds(absl::Now() - t0));
        }
        step += 10;
        absl::SleepFor(next + period - absl::Now());
      }
    });
  }
  for (auto& t : reporters) t.join();
  const double wall = absl::ToDoubleSeconds(absl::Now() - wall0);
  const double cpu = CpuSeconds() - cpu0;
  std::vector<double> all;
  for (auto& v : latencies) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  const double p50 = all.empty() ? 0 : all[all.size() / 2];
  const double p99 = all.empty() ? 0 : all[all.size() * 99 / 100];

  // One full rollout handshake to every worker.
  const absl::Time r0 = absl::Now();
  const RebalanceRecord rec = controller.TriggerRebalance("benchmark", /*force=*/true);
  const double rollout_ms = absl::ToDoubleMilliseconds(absl::Now() - r0);

  std::printf(
      "workers=%d layers=%d L=%d report every %d ms for %.1f s: %zu reports (%.0f/s), "
      "%d errors\n",
      w, layers, l_rows, absl::GetFlag(FLAGS_report_ms), wall, all.size(), all.size() / wall,
      errors.load());
  std::printf(
      "report latency p50 %.0f us, p99 %.0f us; process CPU %.2f cores (controller + "
      "fake workers + gRPC clients)\n",
      p50, p99, cpu / wall);
  std::printf(
      "rollout: %s, version %llu, plan %.1f ms, whole handshake (plan + PREPARE + COMMIT "
      "to %d workers) %.1f ms\n",
      rec.result.c_str(), static_cast<unsigned long long>(rec.version), rec.plan_seconds * 1e3, w,
      rollout_ms);
  for (auto& f : fakes) f.ctx->TryCancel();
  for (auto& f : fakes) f.reader.join();
  server->Shutdown(std::chrono::system_clock::now());
  return 0;
}

}  // namespace
}  // namespace eplb

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return eplb::Main();
}
