// The end-to-end proof on the CPU backend (runs in CI): 4 ranks in 2 worker runtimes, a real MoE
// layer forward every step (router, dispatch, slot remap, Waterfill, per-rank expert FFNs from
// the worker stores, combine with routing and shared-expert weights), live rebalancing by the
// real controller over loopback gRPC with drifting skew, weights moved by the CPU mover. After
// every commit the outputs equal the non-EP reference bit for bit, the recorded load equals the
// router's choices, and a planted logical-count slot bug is caught loudly.
#include <memory>
#include <string>
#include <vector>

#include "eplb_controller/controller.h"
#include "eplb_controller/controller_service.h"
#include "eplb_controller/loopback_controller.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "tests/e2e/moe_cpu_harness.h"
#include "worker/controller_client.h"
#include "worker/runtime.h"

namespace eplb {
namespace e2e {
namespace {

constexpr int kE = 8, kR = 8, kW = 4, kLayers = 2, kTokens = 48;  // P = 16, L = 4, S = 1

class MoeCpuE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Controller::Options o;
    o.layout = {kE, kR, kW, 1, 2};
    o.num_layers = kLayers;
    o.policy.min_interval = absl::ZeroDuration();
    o.policy.trigger_balancedness = 0.999;  // rebalance whenever the skew moved
    o.policy.min_balancedness_gain = 0.01;
    o.aggregation.window = absl::ZeroDuration();
    o.aggregation.half_life = absl::Milliseconds(1);  // only the latest reports count
    auto lc = LoopbackController::Start(o);
    ASSERT_TRUE(lc.ok()) << lc.status();
    loopback_ = *std::move(lc);
    controller_ = loopback_->controller();
    for (int w = 0; w < 2; ++w) {
      WorkerOptions wo;
      wo.worker_id = "node-" + std::to_string(w);
      wo.ranks = {2 * w, 2 * w + 1};
      wo.node = w;
      wo.layout = {kE, kR, kW, 1, 2};
      wo.num_layers = kLayers;
      wo.tensors = {{"w1_w2", ExpertRowBytes(shape_)}};
      wo.checkpoint = FfnCheckpoint(shape_);
      auto rt = WorkerRuntime::Create(wo, &fabric_);
      ASSERT_TRUE(rt.ok()) << rt.status();
      runtimes_.push_back(*std::move(rt));
      ptrs_.push_back(runtimes_.back().get());
      clients_.push_back(std::make_unique<ControllerClient>(
          runtimes_.back().get(), ControllerClientOptions{loopback_->target()}));
      ASSERT_TRUE(clients_.back()->Start().ok());
    }
    absl::SleepFor(absl::Milliseconds(200));
  }

  void TearDown() override { clients_.clear(); }

  MoeShape shape_;
  CpuFabric fabric_{kW};
  std::unique_ptr<LoopbackController> loopback_;
  Controller* controller_ = nullptr;
  std::vector<std::unique_ptr<WorkerRuntime>> runtimes_;
  std::vector<WorkerRuntime*> ptrs_;
  std::vector<std::unique_ptr<ControllerClient>> clients_;
};

TEST_F(MoeCpuE2eTest, OutputsMatchTheReferenceAcrossLiveRebalances) {
  int commits = 0;
  for (int step = 0; step < 60 && commits < 12; ++step) {
    const int hot = (step / 4) % kE;  // the hot expert drifts every 4 steps
    const StepResult r = RunStep(shape_, ptrs_, &fabric_, step, kTokens, hot, false);
    ASSERT_EQ(r.mismatches, 0) << "step " << step << " map v" << controller_->version()
                               << " max |diff| " << r.max_abs_diff;
    // The recorded load equals the router's choices (per layer, summed over ranks, as logical
    // counts under the map in force).
    const auto map = runtimes_[0]->map();
    std::vector<int64_t> recorded(kLayers * kE, 0);
    for (auto& rt : runtimes_) {
      const auto counts = rt->PendingCounts();
      for (size_t i = 0; i < rt->options().ranks.size(); ++i) {
        const int rank = rt->options().ranks[i];
        for (int layer = 0; layer < kLayers; ++layer) {
          for (int row = 0; row < 4; ++row) {
            const int e = map->physical_to_logical(layer)[rank * 4 + row];
            recorded[layer * kE + e] += counts[i][layer * 4 + row];
          }
        }
      }
    }
    ASSERT_EQ(recorded, r.logical_choices) << "step " << step;
    for (auto& c : clients_) ASSERT_TRUE(c->ReportNow(step, step).ok());
    const RebalanceRecord rec = controller_->Step();
    if (rec.result == "committed") {
      ++commits;
      for (auto& rt : runtimes_) {
        ASSERT_EQ(rt->applied_version(), controller_->version());
        ASSERT_THAT(rt->Inconsistencies(), ::testing::IsEmpty());
      }
    }
    ASSERT_NE(rec.result, "aborted") << rec.reason;
  }
  EXPECT_GE(commits, 10);
  // One more step under the final map.
  EXPECT_EQ(RunStep(shape_, ptrs_, &fabric_, 999, kTokens, 3, false).mismatches, 0);
}

TEST_F(MoeCpuE2eTest, ThePlantedLogicalCountBugIsCaught) {
  // Rebalance once so redundant replicas exist (R > 0 is when the two formulas differ).
  for (int step = 0; step < 6; ++step) {
    RunStep(shape_, ptrs_, &fabric_, step, kTokens, 1, false);
    for (auto& c : clients_) ASSERT_TRUE(c->ReportNow(step, step).ok());
    controller_->Step();
  }
  const StepResult good = RunStep(shape_, ptrs_, &fabric_, 100, kTokens, 1, false);
  EXPECT_EQ(good.mismatches, 0);
  const StepResult bad = RunStep(shape_, ptrs_, &fabric_, 100, kTokens, 1, true);
  EXPECT_GT(bad.mismatches, kTokens) << "the planted bug went unnoticed";
  EXPECT_GT(bad.max_abs_diff, 1e-3);
}

}  // namespace
}  // namespace e2e
}  // namespace eplb
