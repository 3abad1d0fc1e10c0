// The controller over real gRPC on loopback (port 0), with in-process fake workers that register,
// report skewed load and answer the placement stream: rollouts ACKed by all, a NACK aborting the
// version for everyone, a worker lost mid-rollout excluded from the next plan, a restart keeping
// version and map, malformed reports rejected without a state change, and the metrics of it all
// on a real /metrics endpoint.
#include <sys/stat.h>

#include <atomic>
#include <cstdio>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/http_get.h"
#include "common/mutex.h"
#include "eplb_controller/controller.h"
#include "eplb_controller/controller_service.h"
#include "eplb_controller/eplbctl.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "prometheus/exposer.h"
#include "prometheus/registry.h"
#include "proto/eplb.grpc.pb.h"

namespace eplb {
namespace {

using ::testing::HasSubstr;

// E=16, R=8, W=8 (L=3), S=1, 2 layers; 4 workers of 2 ranks each.
constexpr int kE = 16, kR = 8, kW = 8, kLayers = 2, kL = 3;

enum class Behaviour { kAck, kNack, kDropOnPrepare };

// A worker's registration for this test's layout.
v1::RegisterRequest Registration(const std::string& id, const std::vector<int>& ranks,
                                 uint64_t applied = 0) {
  v1::RegisterRequest req;
  req.set_worker_id(id);
  for (int r : ranks) req.add_ranks(r);
  v1::LayoutFingerprint* f = req.mutable_layout();
  f->set_num_logical(kE);
  f->set_num_redundant(kR);
  f->set_ep_size(kW);
  f->set_num_shared(1);
  f->set_num_layers(kLayers);
  req.set_applied_version(applied);
  return req;
}

class FakeWorker {
 public:
  FakeWorker(const std::string& target, std::string id, std::vector<int> ranks, Behaviour b)
      : id_(std::move(id)), ranks_(std::move(ranks)), behaviour_(b) {
    stub_ = v1::EplbWorkerService::NewStub(
        grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  }
  ~FakeWorker() { Stop(); }

  grpc::Status Register(uint64_t applied = 0) {
    const v1::RegisterRequest req = Registration(id_, ranks_, applied);
    grpc::ClientContext ctx;
    grpc::Status s = stub_->Register(&ctx, req, &resp_);
    if (s.ok()) session_ = resp_.session_id();
    return s;
  }

  void StartStream() {
    ctx_ = std::make_unique<grpc::ClientContext>();
    stream_ = stub_->StreamPlacements(ctx_.get());
    v1::PlacementAnswer hello;
    hello.set_worker_id(id_);
    hello.set_session_id(session_);
    hello.set_ack(true);
    stream_->Write(hello);
    reader_ = std::thread([this] {
      v1::PlacementUpdate u;
      while (stream_->Read(&u)) {
        {
          MutexLock lock(&mu_);
          phases_.push_back(u.phase());
          if (u.phase() == v1::PlacementUpdate::PREPARE) prepared_ = u;
          if (u.phase() == v1::PlacementUpdate::COMMIT) applied_ = u.version();
        }
        if (u.phase() == v1::PlacementUpdate::ABORT) continue;
        if (u.phase() == v1::PlacementUpdate::PREPARE && behaviour_ == Behaviour::kDropOnPrepare) {
          ctx_->TryCancel();
          break;
        }
        v1::PlacementAnswer a;
        a.set_worker_id(id_);
        a.set_session_id(session_);
        a.set_version(u.version());
        a.set_nonce(u.nonce());
        a.set_ack(!(behaviour_ == Behaviour::kNack && u.phase() == v1::PlacementUpdate::PREPARE));
        if (!a.ack()) a.set_error_message("fingerprint mismatch on rows 3,4");
        stream_->Write(a);
      }
    });
  }

  void Stop() {
    if (ctx_ != nullptr) ctx_->TryCancel();
    if (reader_.joinable()) reader_.join();
  }

  // Every count on the worker's ranks goes to row 0 of each rank (skewed load).
  grpc::Status Report(uint64_t version, int64_t hot, int64_t first_step = 0,
                      std::vector<int64_t>* override_counts = nullptr, int rank_override = -1) {
    v1::LoadReport r;
    r.set_worker_id(id_);
    r.set_session_id(session_);
    r.set_map_version(version);
    r.set_first_step(first_step);
    r.set_last_step(first_step + 10);
    for (int rank : ranks_) {
      v1::RankLoad* rl = r.add_ranks();
      rl->set_rank(rank_override >= 0 ? rank_override : rank);
      if (override_counts != nullptr) {
        for (int64_t c : *override_counts) rl->add_counts(c);
        continue;
      }
      for (int l = 0; l < kLayers; ++l) {
        for (int j = 0; j < kL; ++j) rl->add_counts(j == 0 ? hot * (rank == 0 ? 20 : 1) : 1);
      }
    }
    grpc::ClientContext ctx;
    v1::LoadReportAck ack;
    return stub_->ReportLoad(&ctx, r, &ack);
  }

  std::vector<v1::PlacementUpdate::Phase> phases() {
    MutexLock lock(&mu_);
    return phases_;
  }
  uint64_t applied() {
    MutexLock lock(&mu_);
    return applied_;
  }
  v1::PlacementUpdate prepared() {
    MutexLock lock(&mu_);
    return prepared_;
  }
  const v1::RegisterResponse& registration() const { return resp_; }
  void set_session(const std::string& s) { session_ = s; }

 private:
  std::string id_;
  std::vector<int> ranks_;
  Behaviour behaviour_;
  std::unique_ptr<v1::EplbWorkerService::Stub> stub_;
  v1::RegisterResponse resp_;
  std::string session_;
  std::unique_ptr<grpc::ClientContext> ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::PlacementAnswer, v1::PlacementUpdate>> stream_;
  std::thread reader_;
  Mutex mu_;
  std::vector<v1::PlacementUpdate::Phase> phases_ ABSL_GUARDED_BY(mu_);
  uint64_t applied_ ABSL_GUARDED_BY(mu_) = 0;
  v1::PlacementUpdate prepared_ ABSL_GUARDED_BY(mu_);
};

class ControllerIntegrationTest : public ::testing::Test {
 protected:
  void Start(absl::Duration timeout = absl::Seconds(5)) {
    Controller::Options o;
    o.layout = {kE, kR, kW, 1, 1};
    o.num_layers = kLayers;
    o.bytes_per_expert = 1000;
    if (state_dir_.empty()) {
      // One state directory per test (a restart within the test reuses it).
      state_dir_ = ::testing::TempDir() + "/" +
                   ::testing::UnitTest::GetInstance()->current_test_info()->name();
      mkdir(state_dir_.c_str(), 0755);
      std::remove((state_dir_ + "/state.json").c_str());
    }
    o.state_dir = state_dir_;
    o.policy.min_interval = absl::ZeroDuration();
    o.policy.trigger_balancedness = 0.95;
    o.rollout_timeout = timeout;
    registry_ = std::make_shared<prometheus::Registry>();
    auto c = Controller::Create(o, registry_);
    ASSERT_TRUE(c.ok()) << c.status();
    controller_ = *std::move(c);
    worker_service_ = std::make_unique<WorkerService>(controller_.get());
    admin_service_ = std::make_unique<AdminService>(controller_.get());
    grpc::ServerBuilder b;
    int port = 0;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    b.RegisterService(worker_service_.get());
    b.RegisterService(admin_service_.get());
    server_ = b.BuildAndStart();
    ASSERT_GT(port, 0);
    target_ = "127.0.0.1:" + std::to_string(port);
  }

  void StopServer() {
    workers_.clear();
    if (server_) server_->Shutdown(std::chrono::system_clock::now());
    server_.reset();
    controller_.reset();
  }

  void TearDown() override { StopServer(); }

  void AddWorkers(std::vector<Behaviour> behaviours) {
    for (size_t i = 0; i < behaviours.size(); ++i) {
      auto w = std::make_unique<FakeWorker>(
          target_, "worker-" + std::to_string(i),
          std::vector<int>{static_cast<int>(2 * i), static_cast<int>(2 * i + 1)}, behaviours[i]);
      ASSERT_TRUE(w->Register().ok());
      w->StartStream();
      workers_.push_back(std::move(w));
    }
    // Wait until every stream is attached (the hello is processed asynchronously).
    for (int i = 0; i < 200; ++i) {
      absl::SleepFor(absl::Milliseconds(5));
      if (controller_->Status().workers_size() == static_cast<int>(workers_.size())) break;
    }
    absl::SleepFor(absl::Milliseconds(50));
  }

  void ReportSkew() {
    for (auto& w : workers_) ASSERT_TRUE(w->Report(controller_->version(), 1000).ok());
  }

  std::string Metrics() {
    prometheus::Exposer exposer("127.0.0.1:0");
    exposer.RegisterCollectable(registry_);
    auto body = HttpGet("127.0.0.1", exposer.GetListeningPorts().at(0), "/metrics");
    EXPECT_TRUE(body.ok()) << body.status();
    return body.ok() ? *body : "";
  }

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<Controller> controller_;
  std::unique_ptr<WorkerService> worker_service_;
  std::unique_ptr<AdminService> admin_service_;
  std::unique_ptr<grpc::Server> server_;
  std::string target_;
  std::string state_dir_;
  std::vector<std::unique_ptr<FakeWorker>> workers_;
};

TEST_F(ControllerIntegrationTest, SkewedLoadRollsOutAndEveryWorkerAcks) {
  Start();
  AddWorkers({Behaviour::kAck, Behaviour::kAck, Behaviour::kAck, Behaviour::kAck});
  ReportSkew();
  const RebalanceRecord r = controller_->Step();
  EXPECT_EQ(r.result, "committed") << r.reason;
  EXPECT_EQ(controller_->version(), 2u);
  EXPECT_GT(r.predicted_balancedness, r.balancedness_before);
  EXPECT_GT(r.experts_moved, 0);
  for (auto& w : workers_) {
    EXPECT_EQ(w->applied(), 2u);
    EXPECT_THAT(w->phases(),
                ::testing::ElementsAre(v1::PlacementUpdate::PREPARE, v1::PlacementUpdate::COMMIT));
    EXPECT_GT(w->prepared().placement().layers_size(), 0);
  }
  // The policy does not roll out again when the new map is in force and nothing changed.
  for (auto& w : workers_) ASSERT_TRUE(w->Report(2, 1000).ok());
  const std::string m = Metrics();
  EXPECT_THAT(m, HasSubstr("eplb_controller_rebalances_total{result=\"committed\"} 1"));
  EXPECT_THAT(m, HasSubstr("eplb_controller_map_version 2"));
  EXPECT_THAT(m, HasSubstr("eplb_controller_workers{state=\"live\"} 4"));
  EXPECT_THAT(m, HasSubstr("eplb_controller_load_reports_total{result=\"accepted\"} 8"));
  EXPECT_THAT(m, HasSubstr("eplb_controller_experts_moved_total"));
  EXPECT_THAT(m, HasSubstr("eplb_controller_plan_compute_seconds_count 1"));
  EXPECT_THAT(m, HasSubstr("eplb_controller_balancedness"));
  EXPECT_THAT(m, HasSubstr("eplb_controller_predicted_balancedness"));
  EXPECT_THAT(m, HasSubstr("eplb_controller_nacks_total 0"));
}

TEST_F(ControllerIntegrationTest, LayerPacingRollsOutOneLayerPerVersion) {
  Start();
  ControllerPolicy p = controller_->policy();
  p.layers_per_rollout = 1;
  controller_->SetPolicy(p);
  AddWorkers({Behaviour::kAck, Behaviour::kAck, Behaviour::kAck, Behaviour::kAck});
  ReportSkew();  // both layers skewed: both change
  const RebalanceRecord r = controller_->Step();
  ASSERT_EQ(r.result, "committed") << r.reason;
  EXPECT_THAT(r.reason, HasSubstr("2 of 2 rollouts of <= 1 layers committed"));
  EXPECT_EQ(controller_->version(), 3u);  // 1 -> 2 (one layer) -> 3 (the other)
  for (auto& w : workers_) {
    EXPECT_EQ(w->applied(), 3u);
    EXPECT_THAT(w->phases(),
                ::testing::ElementsAre(v1::PlacementUpdate::PREPARE, v1::PlacementUpdate::COMMIT,
                                       v1::PlacementUpdate::PREPARE, v1::PlacementUpdate::COMMIT));
    EXPECT_EQ(w->prepared().placement().layers_size(), 1);  // the last PREPARE: one layer
    EXPECT_EQ(w->prepared().base_version(), 2u);
  }
  // The controller serves the whole plan at the end.
  EXPECT_EQ(controller_->CurrentPlacement().layers_size(), kLayers);
  EXPECT_THAT(Metrics(), HasSubstr("eplb_controller_map_version 3"));
}

TEST_F(ControllerIntegrationTest, SkippedEvaluationsDoNotCrowdOutRollouts) {
  Start();
  AddWorkers({Behaviour::kAck, Behaviour::kAck, Behaviour::kAck, Behaviour::kAck});
  ReportSkew();
  ASSERT_EQ(controller_->Step().result, "committed");
  for (int i = 0; i < 30; ++i) EXPECT_EQ(controller_->Step().result, "skipped");
  const v1::GetStatusResponse st = controller_->Status();
  int committed = 0, skipped = 0;
  for (const auto& r : st.recent()) {
    committed += r.result() == "committed";
    skipped += r.result() == "skipped";
  }
  EXPECT_EQ(committed, 1);
  EXPECT_EQ(skipped, 1);  // the latest one only
  ASSERT_EQ(st.recent_size(), 2);
  EXPECT_EQ(st.recent(0).result(), "committed");  // oldest first
  EXPECT_THAT(Metrics(), HasSubstr("eplb_controller_rebalances_total{result=\"skipped\"} 30"));
}

TEST_F(ControllerIntegrationTest, OneNackAbortsTheVersionForEveryone) {
  Start();
  AddWorkers({Behaviour::kAck, Behaviour::kNack, Behaviour::kAck, Behaviour::kAck});
  ReportSkew();
  const RebalanceRecord r = controller_->Step();
  EXPECT_EQ(r.result, "aborted");
  EXPECT_THAT(r.reason, HasSubstr("NACK from worker-1"));
  EXPECT_EQ(controller_->version(), 1u);
  for (auto& w : workers_) {
    EXPECT_EQ(w->applied(), 0u);
    absl::SleepFor(absl::Milliseconds(20));
    EXPECT_THAT(w->phases(),
                ::testing::ElementsAre(v1::PlacementUpdate::PREPARE, v1::PlacementUpdate::ABORT));
  }
  const std::string m = Metrics();
  EXPECT_THAT(m, HasSubstr("eplb_controller_nacks_total 1"));
  EXPECT_THAT(m, HasSubstr("eplb_controller_rebalances_total{result=\"aborted\"} 1"));
}

TEST_F(ControllerIntegrationTest, WorkerLostMidRolloutIsExcludedFromTheNextPlan) {
  Start();
  AddWorkers({Behaviour::kAck, Behaviour::kAck, Behaviour::kAck, Behaviour::kDropOnPrepare});
  ReportSkew();
  const RebalanceRecord r = controller_->Step();
  EXPECT_EQ(r.result, "aborted");
  EXPECT_THAT(controller_->Status().dead_ranks(), ::testing::ElementsAre(6, 7));
  // The next plan avoids ranks 6 and 7: every expert keeps a replica on the live ranks.
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(workers_[i]->Report(1, 1000).ok());
  const RebalanceRecord r2 = controller_->TriggerRebalance("after loss", /*force=*/true);
  ASSERT_EQ(r2.result, "committed") << r2.reason;
  const v1::PlacementUpdate p = workers_[0]->prepared();
  EXPECT_THAT(p.placement().dead_ranks(), ::testing::ElementsAre(6, 7));
  const auto map = controller_->map();
  for (int l = 0; l < kLayers; ++l) {
    std::vector<int> live(kE, 0);
    for (int p2 = 0; p2 < kE + kR; ++p2) {
      if (p2 / kL < 6) ++live[map->physical_to_logical(l)[p2]];
    }
    for (int e = 0; e < kE; ++e) EXPECT_GE(live[e], 1) << "layer " << l << " expert " << e;
  }
  EXPECT_THAT(Metrics(), HasSubstr("eplb_controller_workers{state=\"dead\"} 1"));
}

TEST_F(ControllerIntegrationTest, RestartKeepsVersionAndMapAndWorkersResyncWithoutRollout) {
  Start();
  AddWorkers({Behaviour::kAck, Behaviour::kAck, Behaviour::kAck, Behaviour::kAck});
  ReportSkew();
  ASSERT_EQ(controller_->Step().result, "committed");
  const auto before = controller_->map()->physical_to_logical();
  StopServer();
  Start();
  EXPECT_EQ(controller_->version(), 2u);
  EXPECT_EQ(controller_->map()->physical_to_logical(), before);
  FakeWorker w(target_, "worker-0", {0, 1}, Behaviour::kAck);
  ASSERT_TRUE(w.Register(/*applied=*/2).ok());
  EXPECT_EQ(w.registration().current_version(), 2u);
  EXPECT_EQ(w.registration().resync().layers_size(), 0);  // already in sync
  FakeWorker stale(target_, "worker-1", {2, 3}, Behaviour::kAck);
  ASSERT_TRUE(stale.Register(/*applied=*/1).ok());
  EXPECT_EQ(stale.registration().resync().layers_size(), kLayers);
  EXPECT_EQ(stale.registration().resync().version(), 2u);
}

TEST_F(ControllerIntegrationTest, MalformedReportsAreRejectedWithoutStateChange) {
  Start();
  AddWorkers({Behaviour::kAck});
  ASSERT_TRUE(workers_[0]->Report(1, 7).ok());
  const v1::GetStatusResponse before = controller_->Status();
  FakeWorker stranger(target_, "nobody", {4}, Behaviour::kAck);
  EXPECT_EQ(stranger.Report(1, 1).error_code(), grpc::StatusCode::NOT_FOUND);
  std::vector<int64_t> short_counts = {1, 2};
  EXPECT_EQ(workers_[0]->Report(1, 1, 0, &short_counts).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  std::vector<int64_t> negative(kLayers * kL, 1);
  negative[2] = -5;
  EXPECT_EQ(workers_[0]->Report(1, 1, 0, &negative).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(workers_[0]->Report(99, 1).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(workers_[0]->Report(1, 1, 0, nullptr, /*rank_override=*/5).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  workers_[0]->set_session("worker-0/stale");
  EXPECT_EQ(workers_[0]->Report(1, 1).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  const v1::GetStatusResponse after = controller_->Status();
  EXPECT_EQ(after.balancedness(), before.balancedness());
  EXPECT_EQ(after.version(), before.version());
  const std::string m = Metrics();
  EXPECT_THAT(m, HasSubstr("eplb_controller_load_reports_total{result=\"rejected\"} 6"));
  EXPECT_THAT(m, HasSubstr("eplb_controller_load_reports_total{result=\"accepted\"} 1"));
}

TEST_F(ControllerIntegrationTest, RegistrationChecksLayoutAndRanks) {
  Start();
  auto stub = v1::EplbWorkerService::NewStub(
      grpc::CreateChannel(target_, grpc::InsecureChannelCredentials()));
  v1::RegisterRequest req;
  req.set_worker_id("w");
  req.add_ranks(0);
  req.mutable_layout()->set_num_logical(kE);
  req.mutable_layout()->set_num_redundant(kR + 8);
  req.mutable_layout()->set_ep_size(kW);
  req.mutable_layout()->set_num_shared(1);
  req.mutable_layout()->set_num_layers(kLayers);
  v1::RegisterResponse resp;
  grpc::ClientContext c1;
  grpc::Status s = stub->Register(&c1, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("R=16"));
  req.mutable_layout()->set_num_redundant(kR);
  req.set_ranks(0, kW);
  grpc::ClientContext c2;
  EXPECT_EQ(stub->Register(&c2, req, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

// A sink that ACKs at once, and one whose Send blocks until Cancel (a worker that keeps its
// connection but stops reading, once the flow-control window is full): the fake controls the
// failure, which a real socket would only show after megabytes.
class AckingSink : public UpdateSink {
 public:
  AckingSink(Controller* c, std::string id, std::string session)
      : c_(c), id_(std::move(id)), session_(std::move(session)) {}
  bool Send(const v1::PlacementUpdate& u) override {
    if (u.phase() == v1::PlacementUpdate::ABORT) return true;
    v1::PlacementAnswer a;
    a.set_worker_id(id_);
    a.set_session_id(session_);
    a.set_version(u.version());
    a.set_nonce(u.nonce());
    a.set_ack(true);
    c_->OnAnswer(a);
    return true;
  }

 private:
  Controller* c_;
  std::string id_, session_;
};

class StuckSink : public UpdateSink {
 public:
  bool Send(const v1::PlacementUpdate&) override {
    MutexLock l(&mu_);
    ++sends_;
    mu_.Await([this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return cancelled_; });
    return false;
  }
  void Cancel() override {
    MutexLock l(&mu_);
    cancelled_ = true;
  }
  bool cancelled() {
    MutexLock l(&mu_);
    return cancelled_;
  }

 private:
  Mutex mu_;
  int sends_ ABSL_GUARDED_BY(mu_) = 0;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

TEST(ControllerRolloutTest, AWriteThatNeverReturnsCannotHoldARolloutPastItsDeadline) {
  Controller::Options o;
  o.layout = {kE, kR, kW, 1, 1};
  o.num_layers = kLayers;
  o.policy.min_interval = absl::ZeroDuration();
  o.rollout_timeout = absl::Milliseconds(300);
  auto c = Controller::Create(o, std::make_shared<prometheus::Registry>());
  ASSERT_TRUE(c.ok()) << c.status();
  Controller& ctl = **c;
  std::vector<std::shared_ptr<UpdateSink>> sinks;
  auto stuck = std::make_shared<StuckSink>();
  for (int i = 0; i < 4; ++i) {
    const v1::RegisterRequest req = Registration("w" + std::to_string(i), {2 * i, 2 * i + 1});
    auto r = ctl.Register(req);
    ASSERT_TRUE(r.ok()) << r.status();
    std::shared_ptr<UpdateSink> sink =
        i == 2 ? std::shared_ptr<UpdateSink>(stuck)
               : std::make_shared<AckingSink>(&ctl, req.worker_id(), r->session_id());
    ASSERT_TRUE(ctl.Attach(req.worker_id(), r->session_id(), sink).ok());
    sinks.push_back(sink);
    v1::LoadReport rep;  // skewed: rank 0's first row is hot
    rep.set_worker_id(req.worker_id());
    rep.set_session_id(r->session_id());
    rep.set_map_version(1);
    rep.set_last_step(10);
    for (int rank : req.ranks()) {
      v1::RankLoad* rl = rep.add_ranks();
      rl->set_rank(rank);
      for (int l = 0; l < kLayers; ++l) {
        for (int j = 0; j < kL; ++j) rl->add_counts(rank == 0 && j == 0 ? 20000 : 10);
      }
    }
    ASSERT_TRUE(ctl.ReportLoad(rep).ok());
  }
  const absl::Time t0 = absl::Now();
  const RebalanceRecord rec = ctl.TriggerRebalance("stuck", /*force=*/true);
  const absl::Duration took = absl::Now() - t0;
  EXPECT_EQ(rec.result, "aborted");
  EXPECT_THAT(rec.reason, HasSubstr("no answer within"));
  EXPECT_TRUE(stuck->cancelled());
  EXPECT_LT(took, absl::Seconds(3)) << "the rollout waited on the stuck write";
  EXPECT_EQ(ctl.version(), 1u);
  EXPECT_THAT(ctl.Status().dead_ranks(), ::testing::ElementsAre(4, 5));
}

TEST_F(ControllerIntegrationTest, EplbctlOperatorCommandsSteerTheLiveController) {
  Start();
  AddWorkers({Behaviour::kAck, Behaviour::kAck, Behaviour::kAck, Behaviour::kAck});
  auto run = [&](std::vector<std::string> args, std::string* out_text = nullptr) {
    args.insert(args.begin() + 1, {"--controller", target_});
    std::ostringstream out, err;
    const int rc = RunEplbctl(args, out, err);
    if (out_text != nullptr) *out_text = out.str() + err.str();
    return rc;
  };
  std::string text;
  ASSERT_EQ(run({"placement"}, &text), 0) << text;
  EXPECT_THAT(text, HasSubstr("\"version\":1"));
  EXPECT_THAT(text, HasSubstr("\"physical_to_logical_map\":[["));
  // Pause: the policy step skips; resume: it runs again.
  ASSERT_EQ(run({"pause"}, &text), 0) << text;
  EXPECT_THAT(text, HasSubstr("\"paused\":true"));
  ReportSkew();
  EXPECT_THAT(controller_->Step().reason, HasSubstr("paused"));
  ASSERT_EQ(run({"resume"}, &text), 0) << text;
  EXPECT_FALSE(controller_->policy().paused);
  // Policy fields change one by one; the rest stay.
  const double trigger = controller_->policy().trigger_balancedness;
  ASSERT_EQ(run({"policy", "--layers-per-rollout", "1", "--algorithm", "balanced"}, &text), 0)
      << text;
  EXPECT_THAT(text, HasSubstr("\"layers_per_rollout\":1"));
  EXPECT_EQ(controller_->policy().layers_per_rollout, 1);
  EXPECT_EQ(controller_->policy().algorithm, "balanced");
  EXPECT_EQ(controller_->policy().trigger_balancedness, trigger);
  EXPECT_EQ(run({"policy", "--algorithm", "magic"}, &text), 2);
  EXPECT_THAT(text, HasSubstr("algorithm magic is unknown"));
  EXPECT_EQ(controller_->policy().algorithm, "balanced");
  // Trigger: a forced rollout, paced by the new policy (two layers, one per version).
  ASSERT_EQ(run({"trigger", "--reason", "test", "--force"}, &text), 0) << text;
  EXPECT_THAT(text, HasSubstr("committed"));
  EXPECT_EQ(controller_->version(), 3u);
  // Ranks: out of range refused; 7 marked dead.
  EXPECT_EQ(run({"rank", "--rank", "99", "--dead"}, &text), 2);
  EXPECT_THAT(text, HasSubstr("99"));
  EXPECT_EQ(run({"rank", "--rank", "7"}, &text), 2);
  EXPECT_THAT(text, HasSubstr("exactly one of --dead and --alive"));
  ASSERT_EQ(run({"rank", "--rank", "7", "--dead"}, &text), 0) << text;
  EXPECT_THAT(controller_->Status().dead_ranks(), ::testing::ElementsAre(7));
  ASSERT_EQ(run({"rank", "--rank", "7", "--alive"}, &text), 0) << text;
  EXPECT_THAT(controller_->Status().dead_ranks(), ::testing::IsEmpty());
}

TEST_F(ControllerIntegrationTest, EplbctlStatusShowsTheLiveController) {
  Start();
  AddWorkers({Behaviour::kAck, Behaviour::kAck, Behaviour::kAck, Behaviour::kAck});
  ReportSkew();
  ASSERT_EQ(controller_->Step().result, "committed");
  std::ostringstream out, err;
  ASSERT_EQ(RunEplbctl({"status", "--controller", target_, "--json"}, out, err), 0) << err.str();
  EXPECT_THAT(out.str(), HasSubstr("\"version\":2"));
  EXPECT_THAT(out.str(), HasSubstr("\"worker_id\":\"worker-3\""));
  EXPECT_THAT(out.str(), HasSubstr("\"result\":\"committed\""));
  std::ostringstream text, err2;
  ASSERT_EQ(RunEplbctl({"status", "--controller", target_}, text, err2), 0);
  EXPECT_THAT(text.str(), HasSubstr("version 2"));
  EXPECT_THAT(text.str(), HasSubstr("workers (4)"));
  EXPECT_THAT(text.str(), HasSubstr("v2 committed"));
  std::ostringstream none, err3;
  EXPECT_EQ(RunEplbctl({"status", "--controller", "127.0.0.1:1", "--timeout", "0.5"}, none, err3),
            1);
  EXPECT_TRUE(none.str().empty());
  EXPECT_THAT(err3.str(), HasSubstr("did not answer"));
}

}  // namespace
}  // namespace eplb
