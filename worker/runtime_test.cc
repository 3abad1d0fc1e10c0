// WorkerRuntime with a collective backend: PREPARE and COMMIT run only at a step boundary where
// every rank holds the same update, so no rank enters a weight-move collective alone and all
// switch maps at one boundary. The backend here is the CPU one declared collective, and the
// "all-reduce" is a two-thread exchange.
#include "worker/runtime.h"

#include <condition_variable>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/cpu_backend.h"

namespace eplb {
namespace {

constexpr int kLayers = 2;
const LayoutConfig kLayout = {8, 4, 4, 1, 2};  // E=8, R=4, W=4, S=1, 2 nodes: L=3

class CollectiveCpu : public WeightBackend {
 public:
  explicit CollectiveCpu(std::unique_ptr<CpuWeightBackend> cpu) : cpu_(std::move(cpu)) {}
  int64_t row_bytes() const override { return cpu_->row_bytes(); }
  bool collective() const override { return true; }
  absl::Status Load(const PlacementMap& m) override { return cpu_->Load(m); }
  absl::Status Stage(const MovePlan& plan, const PlacementMap& next,
                     const std::vector<int>& dead) override {
    ++stages;
    return cpu_->Stage(plan, next, dead);
  }
  absl::StatusOr<int64_t> Commit() override { return cpu_->Commit(); }
  void Abort() override { cpu_->Abort(); }
  int64_t staged_bytes_received() const override { return cpu_->staged_bytes_received(); }
  std::vector<std::string> Inconsistencies(const PlacementMap& m) override {
    return cpu_->Inconsistencies(m);
  }
  int stages = 0;

 private:
  std::unique_ptr<CpuWeightBackend> cpu_;
};

// Element-wise minimum across two threads (what NCCL's all-reduce does across ranks).
class TwoRankAllMin {
 public:
  std::vector<int64_t> Exchange(int who, const std::vector<int64_t>& v) {
    std::unique_lock<std::mutex> l(mu_);
    const int gen = gen_;
    in_[who] = v;
    if (++arrived_ == 2) {
      out_ = in_[0];
      for (size_t i = 0; i < out_.size(); ++i) out_[i] = std::min(out_[i], in_[1][i]);
      arrived_ = 0;
      ++gen_;
      cv_.notify_all();
    } else {
      cv_.wait(l, [&] { return gen_ != gen; });
    }
    return out_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<int64_t> in_[2], out_;
  int arrived_ = 0, gen_ = 0;
};

v1::Placement ToProto(const PlacementMap& m, uint64_t version) {
  v1::Placement p;
  p.set_version(version);
  for (int l = 0; l < m.num_layers(); ++l) {
    v1::LayerMap* lm = p.add_layers();
    lm->set_layer(l);
    for (int32_t e : m.physical_to_logical(l)) lm->add_physical_to_logical(e);
  }
  return p;
}

class CollectiveRuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto layout = ExpertLayout::Create(kLayout);
    ASSERT_TRUE(layout.ok());
    layout_ = std::make_unique<ExpertLayout>(*layout);
    std::mt19937_64 rng(testing::FreshSeed());
    maps_.push_back(testing::RandomPlacement(*layout_, kLayers, rng));
    maps_.push_back(testing::RandomPlacement(*layout_, kLayers, rng));
    maps_.push_back(testing::RandomPlacement(*layout_, kLayers, rng));
    for (int w = 0; w < 2; ++w) {
      WorkerOptions o;
      o.worker_id = "w" + std::to_string(w);
      o.ranks = {2 * w, 2 * w + 1};
      o.node = w;
      o.layout = kLayout;
      o.num_layers = kLayers;
      auto cpu =
          CpuWeightBackend::Create(*layout_, kLayers, o.ranks, o.tensors, o.checkpoint, &fabric_);
      ASSERT_TRUE(cpu.ok()) << cpu.status();
      auto backend = std::make_unique<CollectiveCpu>(*std::move(cpu));
      backends_.push_back(backend.get());
      auto rt = WorkerRuntime::Create(o, std::move(backend));
      ASSERT_TRUE(rt.ok()) << rt.status();
      ASSERT_TRUE((*rt)->Resync(ToProto(maps_[0], 1)).ok());
      runtimes_.push_back(*std::move(rt));
    }
  }

  v1::PlacementUpdate Update(v1::PlacementUpdate::Phase phase, uint64_t version, int map) {
    v1::PlacementUpdate u;
    u.set_phase(phase);
    u.set_version(version);
    u.set_base_version(version - 1);
    u.set_nonce("n" + std::to_string(version));
    if (phase == v1::PlacementUpdate::PREPARE)
      *u.mutable_placement() = ToProto(maps_[map], version);
    return u;
  }

  // Both ranks reach a step boundary; returns what each ran.
  std::vector<std::string> Boundary() {
    std::vector<std::string> ran(2);
    std::vector<std::thread> threads;
    for (int w = 0; w < 2; ++w) {
      threads.emplace_back([&, w] {
        auto r = runtimes_[w]->StepBoundary(
            [&, w](const std::vector<int64_t>& v) -> absl::StatusOr<std::vector<int64_t>> {
              return exchange_.Exchange(w, v);
            });
        ran[w] = r.ok() ? *r : r.status().ToString();
      });
    }
    for (auto& t : threads) t.join();
    return ran;
  }

  // Collects answers; they come from both ranks' boundary threads. Read after Boundary().
  WorkerRuntime::AnswerFn Keep() {
    return [this](const v1::PlacementAnswer& a) {
      std::lock_guard<std::mutex> l(answers_mu_);
      answers_.push_back(a);
    };
  }

  std::mutex answers_mu_;
  std::vector<v1::PlacementAnswer> answers_;
  std::unique_ptr<ExpertLayout> layout_;
  std::vector<PlacementMap> maps_;
  CpuFabric fabric_{4};
  std::vector<CollectiveCpu*> backends_;
  std::vector<std::unique_ptr<WorkerRuntime>> runtimes_;
  TwoRankAllMin exchange_;
};

TEST_F(CollectiveRuntimeTest, StagesAndSwitchesOnlyWhenEveryRankHoldsTheUpdate) {
  std::vector<v1::PlacementAnswer>& answers = answers_;
  const WorkerRuntime::AnswerFn keep = Keep();
  runtimes_[0]->Submit(Update(v1::PlacementUpdate::PREPARE, 2, 1), keep);
  EXPECT_THAT(answers, ::testing::IsEmpty()) << "a collective PREPARE waits for the boundary";
  EXPECT_THAT(Boundary(), ::testing::ElementsAre("", ""));  // rank 1 does not have it yet
  EXPECT_EQ(backends_[0]->stages, 0);
  runtimes_[1]->Submit(Update(v1::PlacementUpdate::PREPARE, 2, 1), keep);
  EXPECT_THAT(Boundary(), ::testing::ElementsAre("prepare", "prepare"));
  ASSERT_EQ(answers.size(), 2u);
  EXPECT_TRUE(answers[0].ack() && answers[1].ack()) << answers[0].error_message();
  EXPECT_EQ(runtimes_[0]->applied_version(), 1u) << "staging keeps the old map in force";

  runtimes_[0]->Submit(Update(v1::PlacementUpdate::COMMIT, 2, 1), keep);
  EXPECT_THAT(Boundary(), ::testing::ElementsAre("", ""));
  EXPECT_EQ(runtimes_[0]->applied_version(), 1u) << "no rank switches alone";
  runtimes_[1]->Submit(Update(v1::PlacementUpdate::COMMIT, 2, 1), keep);
  EXPECT_THAT(Boundary(), ::testing::ElementsAre("commit", "commit"));
  for (auto& rt : runtimes_) {
    EXPECT_EQ(rt->applied_version(), 2u);
    EXPECT_EQ(rt->map()->physical_to_logical(), maps_[1].physical_to_logical());
    EXPECT_THAT(rt->Inconsistencies(), ::testing::IsEmpty());
  }
  EXPECT_EQ(answers.size(), 4u);
}

TEST_F(CollectiveRuntimeTest, AnAbortOnOneRankBeforeTheBoundaryStagesNothing) {
  const WorkerRuntime::AnswerFn keep = Keep();
  for (auto& rt : runtimes_) rt->Submit(Update(v1::PlacementUpdate::PREPARE, 2, 1), keep);
  runtimes_[0]->Submit(Update(v1::PlacementUpdate::ABORT, 2, 1), keep);
  EXPECT_THAT(Boundary(), ::testing::ElementsAre("", ""));
  EXPECT_EQ(backends_[0]->stages + backends_[1]->stages, 0);
  // The next version goes through once both hold it (rank 1 replaces its stale one).
  for (auto& rt : runtimes_) {
    v1::PlacementUpdate u = Update(v1::PlacementUpdate::PREPARE, 3, 2);
    u.set_base_version(1);
    rt->Submit(u, keep);
  }
  EXPECT_THAT(Boundary(), ::testing::ElementsAre("prepare", "prepare"));
  for (auto& rt : runtimes_) rt->Submit(Update(v1::PlacementUpdate::COMMIT, 3, 2), keep);
  EXPECT_THAT(Boundary(), ::testing::ElementsAre("commit", "commit"));
  EXPECT_EQ(runtimes_[1]->applied_version(), 3u);
  EXPECT_THAT(runtimes_[1]->Inconsistencies(), ::testing::IsEmpty());
}

TEST_F(CollectiveRuntimeTest, InvalidUpdatesAreNackedAtOnceAndNeverWait) {
  std::vector<v1::PlacementAnswer>& answers = answers_;
  const WorkerRuntime::AnswerFn keep = Keep();
  v1::PlacementUpdate stale = Update(v1::PlacementUpdate::PREPARE, 5, 1);  // based on 4
  runtimes_[0]->Submit(stale, keep);
  runtimes_[0]->Submit(Update(v1::PlacementUpdate::COMMIT, 7, 1), keep);  // never staged
  ASSERT_EQ(answers.size(), 2u);
  EXPECT_FALSE(answers[0].ack());
  EXPECT_THAT(answers[0].error_message(), ::testing::HasSubstr("based on version 4"));
  EXPECT_FALSE(answers[1].ack());
  EXPECT_THAT(answers[1].error_message(), ::testing::HasSubstr("was not staged"));
  EXPECT_THAT(Boundary(), ::testing::ElementsAre("", ""));
}

// Updates may carry a layer in the sparse form (changed physical ids and their experts),
// applied to the base version's layer.
TEST(SparseUpdateTest, ChangedSlotsApplyToTheBaseMapAndBadOnesAreRejected) {
  auto layout = ExpertLayout::Create(kLayout);
  ASSERT_TRUE(layout.ok());
  std::mt19937_64 rng(testing::FreshSeed());
  const PlacementMap a = testing::RandomPlacement(*layout, kLayers, rng);
  const PlacementMap b = testing::RandomPlacement(*layout, kLayers, rng);
  CpuFabric fabric(4);
  WorkerOptions o;
  o.worker_id = "all";
  o.ranks = {0, 1, 2, 3};
  o.layout = kLayout;
  o.num_layers = kLayers;
  auto rt = WorkerRuntime::Create(o, &fabric);
  ASSERT_TRUE(rt.ok()) << rt.status();
  v1::Placement sparse_resync;
  sparse_resync.set_version(1);
  v1::LayerMap* bad = sparse_resync.add_layers();
  bad->add_changed_physical(0);
  bad->add_changed_logical(0);
  EXPECT_THAT(std::string((*rt)->Resync(sparse_resync).message()),
              ::testing::HasSubstr("no base map"));
  ASSERT_TRUE((*rt)->Resync(ToProto(a, 1)).ok());
  auto update = [&](auto fill) {
    v1::PlacementUpdate u;
    u.set_phase(v1::PlacementUpdate::PREPARE);
    u.set_version(2);
    u.set_base_version(1);
    u.set_nonce("n");
    u.mutable_placement()->set_version(2);
    for (int l = 0; l < kLayers; ++l) fill(l, u.mutable_placement()->add_layers());
    return u;
  };
  // Mismatched pairs and an id out of range are NACKed; the map stays.
  v1::PlacementAnswer ans = (*rt)->OnUpdate(update([](int l, v1::LayerMap* lm) {
    lm->set_layer(l);
    lm->add_changed_physical(1);
  }));
  EXPECT_FALSE(ans.ack());
  EXPECT_THAT(ans.error_message(), ::testing::HasSubstr("1 changed ids for 0 experts"));
  ans = (*rt)->OnUpdate(update([&](int l, v1::LayerMap* lm) {
    lm->set_layer(l);
    lm->add_changed_physical(layout->num_physical());
    lm->add_changed_logical(0);
  }));
  EXPECT_FALSE(ans.ack());
  EXPECT_THAT(ans.error_message(), ::testing::HasSubstr("is out of range"));
  EXPECT_EQ((*rt)->map()->physical_to_logical(), a.physical_to_logical());
  // The real thing: only the differences from a to b.
  ans = (*rt)->OnUpdate(update([&](int l, v1::LayerMap* lm) {
    lm->set_layer(l);
    for (int p = 0; p < layout->num_physical(); ++p) {
      if (a.physical_to_logical(l)[p] != b.physical_to_logical(l)[p]) {
        lm->add_changed_physical(p);
        lm->add_changed_logical(b.physical_to_logical(l)[p]);
      }
    }
  }));
  ASSERT_TRUE(ans.ack()) << ans.error_message();
  v1::PlacementUpdate commit;
  commit.set_phase(v1::PlacementUpdate::COMMIT);
  commit.set_version(2);
  ASSERT_TRUE((*rt)->OnUpdate(commit).ack());
  EXPECT_EQ((*rt)->map()->physical_to_logical(), b.physical_to_logical());
  EXPECT_THAT((*rt)->Inconsistencies(), ::testing::IsEmpty());
}

TEST(AdoptTest, AMapOfAnotherShapeIsRefusedAndTheIdentityMapIsServed) {
  CpuFabric fabric(4);
  WorkerOptions o;
  o.worker_id = "all";
  o.ranks = {0, 1, 2, 3};
  o.layout = kLayout;
  o.num_layers = kLayers;
  auto rt = WorkerRuntime::Create(o, &fabric);
  ASSERT_TRUE(rt.ok()) << rt.status();
  const absl::Status bad = (*rt)->Adopt(PlacementMap::Identity(kLayers + 1, 8, 12), 1);
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.message()), ::testing::HasSubstr("3 layers"));
  EXPECT_EQ((*rt)->applied_version(), 0u);
  ASSERT_TRUE((*rt)->Adopt(PlacementMap::Identity(kLayers, 8, 12), 1).ok());
  EXPECT_EQ((*rt)->applied_version(), 1u);
  EXPECT_THAT((*rt)->Inconsistencies(), ::testing::IsEmpty());
}

}  // namespace
}  // namespace eplb
