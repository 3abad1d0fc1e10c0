// 8 in-process ranks over many random old/new maps (replicas, two replicas on one GPU, S = 0
// and 1, R = 0 and > 0): after a move every row holds exactly the expert the new map says (by
// fingerprint), shared rows are untouched, unchanged rows are never written; a peer that is gone
// mid-move leaves the old map fully in force.
#include "worker/cpu_mover.h"

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/move_plan.h"
#include "core/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/expert_store.h"

namespace eplb {
namespace {

struct Cluster {
  ExpertLayout layout;
  std::vector<std::unique_ptr<HostExpertStore>> stores;
  std::vector<HostExpertStore*> ptrs;
};

Cluster MakeCluster(const LayoutConfig& c, int layers, const PlacementMap& map) {
  Cluster cl{*ExpertLayout::Create(c), {}, {}};
  for (int r = 0; r < c.ep_size; ++r) {
    cl.stores.push_back(std::make_unique<HostExpertStore>(
        cl.layout, layers, r, std::vector<TensorSpec>{{"w13", 48}, {"w2", 24}, {"scale", 8}}));
    EXPECT_TRUE(cl.stores.back()->LoadCheckpoint(map, SyntheticCheckpoint).ok());
    cl.ptrs.push_back(cl.stores.back().get());
  }
  return cl;
}

TEST(CpuMoverTest, RowsHoldTheNewMapExactlyAndNothingElseIsWritten) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "EPLB_TEST_SEED=" << seed);
  std::mt19937_64 rng(seed);
  const int layers = 2;
  for (int trial = 0; trial < 60; ++trial) {
    LayoutConfig c;
    c.ep_size = 8;
    c.num_nodes = trial % 2 ? 2 : 1;
    c.num_shared = trial % 3 == 0 ? 0 : 1;
    c.num_logical = 8 * std::uniform_int_distribution<int>(1, 4)(rng);
    c.num_redundant = trial % 4 == 0 ? 0 : 8 * std::uniform_int_distribution<int>(1, 2)(rng);
    ExpertLayout layout = *ExpertLayout::Create(c);
    PlacementMap old_map = testing::RandomPlacement(layout, layers, rng);
    PlacementMap new_map = testing::RandomPlacement(layout, layers, rng);
    Cluster cl = MakeCluster(c, layers, old_map);
    auto plan = BuildMovePlan(layout, old_map, new_map, {});
    ASSERT_TRUE(plan.ok()) << plan.status();
    CpuMover mover(cl.ptrs);
    for (int layer = 0; layer < layers; ++layer) {
      ASSERT_TRUE(mover.Stage(*plan, layer, std::vector<bool>(8, true)).ok());
      mover.Commit();
    }
    const int l = layout.routed_slots_per_rank();
    for (int r = 0; r < 8; ++r) {
      for (int layer = 0; layer < layers; ++layer) {
        EXPECT_THAT(cl.stores[r]->MismatchedRows(layer, new_map, SyntheticCheckpoint),
                    ::testing::IsEmpty())
            << "rank " << r << " layer " << layer;
        for (int row = 0; row < l + c.num_shared; ++row) {
          const bool shared = row >= l;
          const bool changed = !shared && old_map.physical_to_logical(layer)[r * l + row] !=
                                              new_map.physical_to_logical(layer)[r * l + row];
          // One write at load; one more only where the expert changed.
          EXPECT_EQ(cl.stores[r]->writes(layer, row), changed ? 2 : 1)
              << "rank " << r << " layer " << layer << " row " << row;
        }
      }
    }
  }
}

TEST(CpuMoverTest, APeerGoneMidMoveLeavesTheOldMapInForce) {
  std::mt19937_64 rng(testing::FreshSeed());
  LayoutConfig c{16, 16, 8, 1, 2};
  ExpertLayout layout = *ExpertLayout::Create(c);
  PlacementMap old_map = testing::RandomPlacement(layout, 1, rng);
  PlacementMap new_map = testing::RandomPlacement(layout, 1, rng);
  Cluster cl = MakeCluster(c, 1, old_map);
  auto plan = BuildMovePlan(layout, old_map, new_map, {});
  ASSERT_TRUE(plan.ok());
  int gone = -1;
  for (const Transfer& t : plan->transfers) {
    if (t.kind == TransferKind::kPeer) gone = t.src_rank;
  }
  ASSERT_GE(gone, 0);
  std::vector<bool> alive(8, true);
  alive[gone] = false;
  CpuMover mover(cl.ptrs);
  absl::Status s = mover.Stage(*plan, 0, alive);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(s.message(), ::testing::HasSubstr("peer rank " + std::to_string(gone)));
  mover.Commit();  // nothing staged: nothing written
  for (int r = 0; r < 8; ++r) {
    EXPECT_THAT(cl.stores[r]->MismatchedRows(0, old_map, SyntheticCheckpoint),
                ::testing::IsEmpty());
    for (int row = 0; row < layout.slots_per_rank(); ++row)
      EXPECT_EQ(cl.stores[r]->writes(0, row), 1);
  }
}

TEST(ExpertStoreTest, CheckpointLoadsSharedRowsAndBothReplicasOnOneGpu) {
  // E=4, R=4, W=2 (L=4), S=1: rank 0 holds expert 0 twice.
  ExpertLayout layout = *ExpertLayout::Create({4, 4, 2, 1, 1});
  auto map = PlacementMap::Create(4, 8, {{0, 1, 0, 2, 3, 1, 2, 3}});
  ASSERT_TRUE(map.ok());
  HostExpertStore store(layout, 1, 0, {{"w", 64}});
  ASSERT_TRUE(store.LoadCheckpoint(*map, SyntheticCheckpoint).ok());
  EXPECT_EQ(store.Fingerprint(0, 0), store.Fingerprint(0, 2));  // both replicas of expert 0
  EXPECT_NE(store.Fingerprint(0, 0), store.Fingerprint(0, 1));
  std::vector<uint8_t> shared(64);
  SyntheticCheckpoint(0, 4, shared.data(), 64);  // checkpoint id E + 0
  EXPECT_EQ(store.Fingerprint(0, 4), RowFingerprint(shared.data(), 64));
  EXPECT_THAT(store.MismatchedRows(0, *map, SyntheticCheckpoint), ::testing::IsEmpty());
  // A corrupted row is named.
  std::vector<uint8_t> junk(64, 7);
  store.WriteRow(0, 3, junk.data());
  EXPECT_THAT(store.MismatchedRows(0, *map, SyntheticCheckpoint), ::testing::ElementsAre(3));
}

TEST(CpuMoverTest, PeersInAnotherProcessAreReadThroughSharedFiles) {
  std::mt19937_64 rng(testing::FreshSeed());
  LayoutConfig c{16, 16, 8, 1, 1};  // one node: sources are any rank, not only same-node ones
  ExpertLayout layout = *ExpertLayout::Create(c);
  PlacementMap old_map = testing::RandomPlacement(layout, 1, rng);
  PlacementMap new_map = testing::RandomPlacement(layout, 1, rng);
  const std::string dir = ::testing::TempDir();
  const std::vector<TensorSpec> tensors = {{"w", 96}};
  // "Process A" owns ranks 0..3, "process B" ranks 4..7, each in its own shared files.
  std::vector<std::unique_ptr<HostExpertStore>> own;
  for (int r = 0; r < 8; ++r) {
    auto s =
        HostExpertStore::CreateShared(layout, 1, r, tensors, dir + "/x-rank-" + std::to_string(r));
    ASSERT_TRUE(s.ok()) << s.status();
    ASSERT_TRUE((*s)->LoadCheckpoint(old_map, SyntheticCheckpoint).ok());
    own.push_back(*std::move(s));
  }
  // B's view: its own stores for 4..7, read-only mappings of A's files for 0..3.
  std::vector<std::unique_ptr<HostExpertStore>> views;
  std::vector<HostExpertStore*> b(8);
  for (int r = 0; r < 4; ++r) {
    auto v = HostExpertStore::OpenPeer(layout, 1, r, tensors, dir + "/x-rank-" + std::to_string(r));
    ASSERT_TRUE(v.ok()) << v.status();
    b[r] = v->get();
    views.push_back(*std::move(v));
  }
  for (int r = 4; r < 8; ++r) b[r] = own[r].get();
  auto plan = BuildMovePlan(layout, old_map, new_map, {});
  ASSERT_TRUE(plan.ok());
  MovePlan mine;
  int from_a = 0;
  for (const Transfer& t : plan->transfers) {
    if (t.dst_rank < 4) continue;
    mine.transfers.push_back(t);
    from_a += t.kind == TransferKind::kPeer && t.src_rank < 4;
  }
  ASSERT_GT(from_a, 0) << "the random maps needed no row from process A; rerun";
  CpuMover mover(b);
  ASSERT_TRUE(mover.Stage(mine, 0, std::vector<bool>(8, true)).ok());
  mover.Commit();
  for (int r = 4; r < 8; ++r) {
    const auto bad = own[r]->MismatchedRows(0, new_map, SyntheticCheckpoint);
    EXPECT_THAT(bad, ::testing::IsEmpty()) << "rank " << r;
  }
  EXPECT_EQ(HostExpertStore::OpenPeer(layout, 1, 9, tensors, dir + "/nope").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace eplb
