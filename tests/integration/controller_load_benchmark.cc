// Load benchmark of the controller over loopback gRPC, in two processes: the controller (its
// gRPC server, nothing else) in a child forked before gRPC starts, and N fake workers (one rank
// each, each with an open placement stream that ACKs) plus reporter threads in the parent.
// Workers report every --report_ms for --seconds; then an operator rollout (Admin
// TriggerRebalance) pushes PREPARE and COMMIT to all of them. Prints the achieved report rate,
// report latency p50/p99, the controller process's own CPU use (from /proc), reports per
// controller CPU-second, and the rollout time split into planning and handshake.
// Figures: docs/BENCHMARKS.md.
//
//   bazel run -c opt //tests/integration:controller_load_benchmark -- --workers 256 --report_ms 100
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
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
ABSL_FLAG(bool, stream, false,
          "report over one StreamLoad stream per worker instead of a ReportLoad call each");

namespace eplb {
namespace {

// utime + stime of a process, in seconds.
double ProcessCpuSeconds(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::istringstream in(text.substr(text.rfind(')') + 2));
  std::string field;
  double ticks = 0;
  for (int i = 3; i <= 15 && in >> field; ++i) {
    if (i == 14 || i == 15) ticks += std::stod(field);  // utime, stime
  }
  return ticks / sysconf(_SC_CLK_TCK);
}

Controller::Options BenchOptions(int w, int layers) {
  const int e = 256, r = w * ((e + w - 1) / w + 1) - e;  // L = ceil(E / W) + 1 rows per rank
  Controller::Options o;
  o.layout = {e, r, w, 1, 1};
  o.num_layers = layers;
  o.policy.min_interval = absl::ZeroDuration();
  o.rollout_timeout = absl::Seconds(30);
  return o;
}

// The child: the controller and its services only. Writes the port to `fd`, serves until killed.
int RunController(int fd) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto c = Controller::Create(
      BenchOptions(absl::GetFlag(FLAGS_workers), absl::GetFlag(FLAGS_layers)), registry);
  if (!c.ok()) {
    std::fprintf(stderr, "%s\n", c.status().ToString().c_str());
    return 1;
  }
  WorkerService ws(c->get());
  AdminService as(c->get());
  grpc::ServerBuilder b;
  int port = 0;
  b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  b.RegisterService(&ws);
  b.RegisterService(&as);
  auto server = b.BuildAndStart();
  if (write(fd, &port, sizeof(port)) != sizeof(port)) return 1;
  close(fd);
  pause();  // until SIGTERM
  return 0;
}

int Main() {
  const int w = absl::GetFlag(FLAGS_workers);
  const int layers = absl::GetFlag(FLAGS_layers);
  const Controller::Options bench = BenchOptions(w, layers);
  const int e = bench.layout.num_logical, r = bench.layout.num_redundant;
  const int l_rows = (e + r) / w;
  int fds[2];
  if (pipe(fds) != 0) return 1;
  const pid_t child = fork();  // before any gRPC object exists in this process
  if (child == 0) {
    close(fds[0]);
    _exit(RunController(fds[1]));
  }
  close(fds[1]);
  int port = 0;
  if (read(fds[0], &port, sizeof(port)) != sizeof(port)) {
    std::fprintf(stderr, "the controller process did not start\n");
    return 1;
  }
  const std::string target = "127.0.0.1:" + std::to_string(port);
  auto channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  auto stub = v1::EplbWorkerService::NewStub(channel);
  auto admin = v1::EplbAdminService::NewStub(channel);
  std::atomic<uint64_t> version{1};
  struct Fake {
    std::string id, session;
    std::unique_ptr<grpc::ClientContext> ctx;
    std::unique_ptr<grpc::ClientReaderWriter<v1::PlacementAnswer, v1::PlacementUpdate>> stream;
    std::thread reader;
    std::unique_ptr<grpc::ClientContext> load_ctx;
    std::unique_ptr<grpc::ClientReaderWriter<v1::LoadReport, v1::LoadReportAck>> load;
  };
  const bool streaming = absl::GetFlag(FLAGS_stream);
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
    if (streaming) {
      f.load_ctx = std::make_unique<grpc::ClientContext>();
      f.load = stub->StreamLoad(f.load_ctx.get());
    }
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
  const double cpu0 = ProcessCpuSeconds(child);
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
          rep.set_map_version(version.load());
          rep.set_first_step(step);
          rep.set_last_step(step + 9);
          v1::RankLoad* rl = rep.add_ranks();
          rl->set_rank(i);
          for (int k = 0; k < layers * l_rows; ++k)
            rl->add_counts((i * 7 + k) % 97 + (i == 0) * 5000);
          const absl::Time t0 = absl::Now();
          if (streaming) {
            if (!fakes[i].load->Write(rep)) ++errors;
          } else {
            grpc::ClientContext ctx;
            v1::LoadReportAck ack;
            if (!stub->ReportLoad(&ctx, rep, &ack).ok()) ++errors;
          }
          latencies[t].push_back(absl::ToDoubleMicroseconds(absl::Now() - t0));
        }
        step += 10;
        absl::SleepFor(next + period - absl::Now());
      }
    });
  }
  for (auto& t : reporters) t.join();
  if (streaming) {  // every report processed (the server reads to the end), rejections counted
    for (auto& f : fakes) {
      f.load->WritesDone();
      v1::LoadReportAck ack;
      while (f.load->Read(&ack)) errors += ack.rejected();
      if (!f.load->Finish().ok()) ++errors;
    }
  }
  const double wall = absl::ToDoubleSeconds(absl::Now() - wall0);
  const double cpu = ProcessCpuSeconds(child) - cpu0;
  std::vector<double> all;
  for (auto& v : latencies) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  const double p50 = all.empty() ? 0 : all[all.size() / 2];
  const double p99 = all.empty() ? 0 : all[all.size() * 99 / 100];

  // One full rollout to every worker, by the operator RPC; planning time from the status.
  const absl::Time r0 = absl::Now();
  v1::TriggerRebalanceRequest treq;
  treq.set_reason("benchmark");
  treq.set_force(true);
  v1::TriggerRebalanceResponse tresp;
  {
    grpc::ClientContext ctx;
    if (!admin->TriggerRebalance(&ctx, treq, &tresp).ok()) return 1;
  }
  const double rollout_ms = absl::ToDoubleMilliseconds(absl::Now() - r0);
  v1::GetStatusResponse st;
  {
    grpc::ClientContext ctx;
    if (!admin->GetStatus(&ctx, v1::GetStatusRequest(), &st).ok()) return 1;
  }
  const double plan_ms =
      st.recent_size() > 0 ? st.recent(st.recent_size() - 1).plan_seconds() * 1e3 : 0;

  std::printf(
      "workers=%d layers=%d L=%d report every %d ms for %.1f s: %zu reports (%.0f/s), "
      "%d errors\n",
      w, layers, l_rows, absl::GetFlag(FLAGS_report_ms), wall, all.size(), all.size() / wall,
      errors.load());
  std::printf(
      "report latency (%s) p50 %.0f us, p99 %.0f us; controller process CPU %.2f cores, %.0f "
      "reports "
      "per controller CPU-second\n",
      streaming ? "stream write" : "call", p50, p99, cpu / wall, cpu > 0 ? all.size() / cpu : 0.0);
  std::printf(
      "rollout: %s, version %llu, plan %.1f ms, handshake (PREPARE + COMMIT to %d workers, "
      "every ACK) %.1f ms\n",
      tresp.result().c_str(), static_cast<unsigned long long>(tresp.version()), plan_ms, w,
      rollout_ms - plan_ms);
  for (auto& f : fakes) f.ctx->TryCancel();
  for (auto& f : fakes) f.reader.join();
  kill(child, SIGTERM);
  waitpid(child, nullptr, 0);
  return 0;
}

}  // namespace
}  // namespace eplb

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return eplb::Main();
}
