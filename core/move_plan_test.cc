#include "core/move_plan.h"

#include <map>
#include <random>
#include <tuple>
#include <vector>

#include "core/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace eplb {
namespace {

// Applies a plan to rows holding expert ids: stage from the old rows (kLocal, kPeer), then the
// after-peer copies, then overwrite. Returns the rows after.
std::vector<int32_t> Simulate(const ExpertLayout& layout, const std::vector<int32_t>& before,
                              const std::vector<Transfer>& transfers, int layer) {
  const int l = layout.routed_slots_per_rank();
  std::vector<int32_t> staged = before;
  for (const Transfer& t : transfers) {
    if (t.layer != layer || t.kind == TransferKind::kAfterPeer) continue;
    staged[t.dst_rank * l + t.dst_row] = before[t.src_rank * l + t.src_row];
  }
  for (const Transfer& t : transfers) {
    if (t.layer != layer || t.kind != TransferKind::kAfterPeer) continue;
    staged[t.dst_rank * l + t.dst_row] = staged[t.src_rank * l + t.src_row];
  }
  return staged;
}

TEST(MovePlanTest, RandomMapsAreReproducedExactly) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "EPLB_TEST_SEED=" << seed);
  std::mt19937_64 rng(seed);
  for (int trial = 0; trial < 200; ++trial) {
    auto layout = ExpertLayout::Create(testing::RandomLayoutConfig(rng));
    ASSERT_TRUE(layout.ok());
    PlacementMap a = testing::RandomPlacement(*layout, 2, rng);
    PlacementMap b = testing::RandomPlacement(*layout, 2, rng);
    auto plan = BuildMovePlan(*layout, a, b, {});
    ASSERT_TRUE(plan.ok()) << plan.status();
    int64_t changed = 0;
    for (int layer = 0; layer < 2; ++layer) {
      EXPECT_EQ(Simulate(*layout, a.physical_to_logical(layer), plan->transfers, layer),
                b.physical_to_logical(layer));
      for (int p = 0; p < layout->num_physical(); ++p) {
        changed += a.physical_to_logical(layer)[p] != b.physical_to_logical(layer)[p];
      }
    }
    EXPECT_EQ(plan->rows_changed, changed);
    EXPECT_EQ(plan->rows_changed, plan->peer_transfers + plan->local_copies);
    // At most one peer transfer per (layer, rank, expert).
    std::map<std::tuple<int, int, int32_t>, int> peer;
    for (const Transfer& t : plan->transfers) {
      if (t.kind == TransferKind::kPeer) {
        const std::tuple<int, int, int32_t> key{t.layer, t.dst_rank, t.expert};
        EXPECT_EQ(++peer[key], 1);
        EXPECT_NE(t.src_rank, t.dst_rank);
        if (layout->num_nodes() > 1) {
          bool near_exists = false;
          for (int r = 0; r < layout->ep_size(); ++r) {
            if (layout->NodeOfRank(r) != layout->NodeOfRank(t.dst_rank)) continue;
            for (int j = 0; j < layout->routed_slots_per_rank(); ++j) {
              near_exists |= a.physical_to_logical(
                                 t.layer)[r * layout->routed_slots_per_rank() + j] == t.expert;
            }
          }
          if (near_exists) {
            EXPECT_EQ(layout->NodeOfRank(t.src_rank), layout->NodeOfRank(t.dst_rank));
          }
        }
      }
    }
    // The same plan from every rank's point of view: ForRank covers exactly its entries.
    size_t as_dst = 0;
    for (int r = 0; r < layout->ep_size(); ++r) {
      for (const Transfer& t : plan->ForRank(r)) as_dst += t.dst_rank == r;
    }
    EXPECT_EQ(as_dst, plan->transfers.size());
    auto again = BuildMovePlan(*layout, a, b, {});
    EXPECT_EQ(again->transfers, plan->transfers);
  }
}

TEST(MovePlanTest, KindsAndEvenSpread) {
  // E=2, P=8, W=4 (L=2), 2 nodes. Old: expert 1 only on ranks 0 and 1 (node 0).
  auto layout = ExpertLayout::Create({2, 6, 4, 0, 2});
  ASSERT_TRUE(layout.ok());
  auto a = PlacementMap::Create(2, 8, {{1, 0, 1, 0, 0, 0, 0, 0}});
  // New: ranks 2 and 3 (node 1) need expert 1 in both rows; rank 0 swaps its rows.
  auto b = PlacementMap::Create(2, 8, {{0, 1, 1, 0, 1, 1, 1, 1}});
  ASSERT_TRUE(a.ok() && b.ok());
  auto plan = BuildMovePlan(*layout, *a, *b, {});
  ASSERT_TRUE(plan.ok());
  std::map<int, int> from;
  for (const Transfer& t : plan->transfers) {
    if (t.dst_rank == 0) {
      EXPECT_EQ(t.kind, TransferKind::kLocal);  // both experts already on rank 0
    }
    if (t.dst_rank >= 2 && t.dst_row == 0) {
      EXPECT_EQ(t.kind, TransferKind::kPeer);
      ++from[t.src_rank];
    }
    if (t.dst_rank >= 2 && t.dst_row == 1 && t.expert == 1) {
      EXPECT_EQ(t.kind, TransferKind::kAfterPeer);
      EXPECT_EQ(t.src_row, 0);
    }
  }
  EXPECT_EQ(from[0], 1);  // two receivers spread over the two sources
  EXPECT_EQ(from[1], 1);
  // Ranks 0, 2 and 3 each rewrite both rows: staging for 2 rows per rank.
  EXPECT_EQ(plan->MaxRowsPerRank(), 2);
  EXPECT_EQ(MovePlan().MaxRowsPerRank(), 0);
}

TEST(MovePlanTest, DeadSourcesAreNotUsed) {
  auto layout = ExpertLayout::Create({2, 2, 2, 0, 1});
  auto a = PlacementMap::Create(2, 4, {{0, 1, 0, 0}});
  auto b = PlacementMap::Create(2, 4, {{0, 1, 1, 0}});
  ASSERT_TRUE(layout.ok() && a.ok() && b.ok());
  auto ok = BuildMovePlan(*layout, *a, *b, {});
  ASSERT_TRUE(ok.ok());
  auto dead = BuildMovePlan(*layout, *a, *b, {0});
  ASSERT_FALSE(dead.ok());
  EXPECT_EQ(dead.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(dead.status().message(), ::testing::HasSubstr("expert 1 has no live source"));
}

}  // namespace
}  // namespace eplb
