// The real controller and real worker runtimes over loopback gRPC: two workers of four ranks
// each (CPU backend, peers through an in-process fabric) record skewed load, report it, and the
// controller's rollout moves their weights and switches their maps; a row that fails its
// integrity check, or a peer lost mid-move, NACKs and leaves the old map in force everywhere.
#include <sys/stat.h>

#include <memory>
#include <string>
#include <vector>

#include "core/dispatch.h"
#include "eplb_controller/controller.h"
#include "eplb_controller/controller_service.h"
#include "eplb_controller/loopback_controller.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "worker/controller_client.h"
#include "worker/runtime.h"

namespace eplb {
namespace {

constexpr int kE = 16, kR = 16, kW = 8, kLayers = 2;  // L = 4

class WorkerControllerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Controller::Options o;
    o.layout = {kE, kR, kW, 1, 2};
    o.num_layers = kLayers;
    o.policy.min_interval = absl::ZeroDuration();
    o.rollout_timeout = absl::Seconds(10);
    auto lc = LoopbackController::Start(o);
    ASSERT_TRUE(lc.ok()) << lc.status();
    loopback_ = *std::move(lc);
    controller_ = loopback_->controller();
    target_ = loopback_->target();
  }

  void TearDown() override { clients_.clear(); }

  // separate_fabrics: the two workers stand for two processes, reaching each other's rows only
  // through shared files in one directory.
  void AddWorkers(CheckpointReader second_reader = SyntheticCheckpoint,
                  bool separate_fabrics = false,
                  absl::Duration report_interval = absl::ZeroDuration()) {
    if (separate_fabrics) {
      const std::string dir = ::testing::TempDir() + "/fabric-" +
                              ::testing::UnitTest::GetInstance()->current_test_info()->name();
      mkdir(dir.c_str(), 0755);
      fabric_.SetSharedDirectory(dir);
      fabric2_.SetSharedDirectory(dir);
    }
    for (int w = 0; w < 2; ++w) {
      WorkerOptions o;
      o.worker_id = "node-" + std::to_string(w);
      o.ranks = {4 * w, 4 * w + 1, 4 * w + 2, 4 * w + 3};
      o.node = w;
      o.layout = {kE, kR, kW, 1, 2};
      o.num_layers = kLayers;
      if (w == 1) o.checkpoint = second_reader;
      auto rt = WorkerRuntime::Create(o, separate_fabrics && w == 1 ? &fabric2_ : &fabric_);
      ASSERT_TRUE(rt.ok()) << rt.status();
      runtimes_.push_back(*std::move(rt));
      ControllerClientOptions co{target_};
      co.report_interval = report_interval;
      clients_.push_back(std::make_unique<ControllerClient>(runtimes_.back().get(), co));
      ASSERT_TRUE(clients_.back()->Start().ok());
      EXPECT_EQ(runtimes_.back()->applied_version(), 1u);
    }
    absl::SleepFor(absl::Milliseconds(200));  // streams attach
  }

  // Tokens received by each worker: rank 0's first row gets most of them.
  void RecordSkewAndReport() {
    for (int w = 0; w < 2; ++w) {
      for (int layer = 0; layer < kLayers; ++layer) {
        std::vector<int64_t> ids;
        for (int r : runtimes_[w]->options().ranks) {
          for (int row = 0; row < 4; ++row) {
            const int n = (r == 0 && row == 0) ? 400 : 10;
            for (int i = 0; i < n; ++i) ids.push_back(r * 4 + row);
          }
        }
        ids.push_back(-1);  // padding is skipped
        runtimes_[w]->RecordReceived(layer, ids);
      }
      ASSERT_TRUE(clients_[w]->ReportNow(0, 10).ok());
    }
  }

  CpuFabric fabric_{kW};
  CpuFabric fabric2_{kW};
  std::unique_ptr<LoopbackController> loopback_;
  Controller* controller_ = nullptr;
  std::string target_;
  std::vector<std::unique_ptr<WorkerRuntime>> runtimes_;
  std::vector<std::unique_ptr<ControllerClient>> clients_;
};

TEST_F(WorkerControllerTest, RolloutMovesWeightsAndSwitchesMapsOnEveryWorker) {
  AddWorkers();
  RecordSkewAndReport();
  const RebalanceRecord r = controller_->Step();
  ASSERT_EQ(r.result, "committed") << r.reason;
  for (auto& rt : runtimes_) {
    EXPECT_EQ(rt->applied_version(), 2u);
    EXPECT_EQ(rt->map()->physical_to_logical(), controller_->map()->physical_to_logical());
    EXPECT_THAT(rt->Inconsistencies(), ::testing::IsEmpty());
    const ExpertLayout& layout = rt->layout();
    for (int rank : rt->options().ranks) {
      EXPECT_EQ(rt->DispatchRow(rank, 0),
                *BuildStaticDispatchRow(layout, *controller_->map(), 0, rank));
    }
  }
  // The hot expert got more replicas.
  const int32_t hot = 0;  // physical 0 held logical 0 under the identity map
  EXPECT_GT(controller_->map()->ReplicaCount(0, LogicalId(hot)), 2);
}

TEST_F(WorkerControllerTest, WorkersInSeparateFabricsMoveWeightsThroughSharedFiles) {
  AddWorkers(SyntheticCheckpoint, /*separate_fabrics=*/true);
  RecordSkewAndReport();
  const RebalanceRecord r = controller_->Step();
  ASSERT_EQ(r.result, "committed") << r.reason;
  for (auto& rt : runtimes_) {
    EXPECT_EQ(rt->applied_version(), 2u);
    EXPECT_THAT(rt->Inconsistencies(), ::testing::IsEmpty());
  }
}

TEST_F(WorkerControllerTest, AStagedRowFailingItsIntegrityCheckNacksAndNothingChanges) {
  AddWorkers();
  RecordSkewAndReport();
  // Silent corruption of rank 0's and rank 4's live weights: whatever is copied from them fails
  // the receiver's fingerprint check.
  for (int rank : {0, 4}) {
    MutexLock data(fabric_.data_mutex());
    HostExpertStore* store = fabric_.stores()[rank];
    std::vector<uint8_t> junk(store->row_bytes(), 0x5A);
    for (int layer = 0; layer < kLayers; ++layer) {
      for (int row = 0; row < 4; ++row) store->WriteRow(layer, row, junk.data());
    }
  }
  const RebalanceRecord r = controller_->Step();
  EXPECT_EQ(r.result, "aborted");
  EXPECT_THAT(r.reason, ::testing::HasSubstr("NACK from node-"));
  EXPECT_THAT(r.reason, ::testing::HasSubstr("do not match"));
  for (auto& rt : runtimes_) EXPECT_EQ(rt->applied_version(), 1u);
}

TEST_F(WorkerControllerTest, APeerLostMidMoveNacksAndTheOldMapStays) {
  AddWorkers();
  RecordSkewAndReport();
  for (int rank = 0; rank < 4; ++rank) fabric_.SetAlive(rank, false);  // node 0's weights gone
  const RebalanceRecord r = controller_->Step();
  EXPECT_EQ(r.result, "aborted");
  EXPECT_THAT(r.reason, ::testing::HasSubstr("is gone"));
  for (auto& rt : runtimes_) {
    EXPECT_EQ(rt->applied_version(), 1u);
    EXPECT_THAT(rt->Inconsistencies(), ::testing::IsEmpty());
  }
}

TEST_F(WorkerControllerTest, BackgroundReportsStreamTheRecordedLoad) {
  AddWorkers(SyntheticCheckpoint, false, absl::Milliseconds(20));
  EXPECT_DOUBLE_EQ(controller_->Status().balancedness(), 1.0);  // nothing reported yet
  for (int i = 0; i < 10; ++i) {
    for (int layer = 0; layer < kLayers; ++layer) {
      runtimes_[0]->RecordReceived(layer, std::vector<int64_t>(500, 0));  // rank 0, row 0
      runtimes_[1]->RecordReceived(layer, std::vector<int64_t>(10, 17));
    }
    absl::SleepFor(absl::Milliseconds(30));
  }
  // The stream carried them: rank 0 is hot in the controller's window.
  double b = 1.0;
  for (int i = 0; i < 100 && b > 0.5; ++i) {
    absl::SleepFor(absl::Milliseconds(20));
    b = controller_->Status().balancedness();
  }
  EXPECT_LT(b, 0.5);
  EXPECT_EQ(clients_[0]->rejected_reports(), 0);
  EXPECT_EQ(clients_[1]->rejected_reports(), 0);
  EXPECT_EQ(runtimes_[0]->PendingCounts()[0][0], 0) << "reports drain the counters";
}

TEST_F(WorkerControllerTest, ReportsCarryExactlyTheRecordedCounts) {
  AddWorkers();
  runtimes_[0]->RecordReceived(1, std::vector<int64_t>{0, 0, 5, 31, -1, 99});
  const v1::LoadReport rep = runtimes_[0]->TakeReport("s", 0, 1);
  ASSERT_EQ(rep.ranks_size(), 4);
  EXPECT_EQ(rep.map_version(), 1u);
  // Layer 1, rank 0 row 0: two; rank 1 row 1 (physical 5): one; physical 31 is rank 7's.
  EXPECT_EQ(rep.ranks(0).counts(1 * 4 + 0), 2);
  EXPECT_EQ(rep.ranks(1).counts(1 * 4 + 1), 1);
  int64_t total = 0;
  for (const auto& rl : rep.ranks()) {
    for (int64_t c : rl.counts()) total += c;
  }
  EXPECT_EQ(total, 3);
  EXPECT_EQ(runtimes_[0]->TakeReport("s", 1, 2).ranks(0).counts(4), 0);  // drained
}

}  // namespace
}  // namespace eplb
