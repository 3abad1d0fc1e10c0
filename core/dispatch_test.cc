#include "core/dispatch.h"

#include <map>
#include <random>
#include <vector>

#include "core/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace eplb {
namespace {

using ::testing::ElementsAre;

// E=4, P=8, W=4 (L=2), N=2 (ranks 0,1 on node 0; 2,3 on node 1).
// physical: [0 1 | 2 0 | 3 1 | 3 2]
TEST(DispatchTest, OwnThenNodeThenSpread) {
  auto layout = ExpertLayout::Create({4, 4, 4, 0, 2});
  auto map = PlacementMap::Create(4, 8, {{0, 1, 2, 0, 3, 1, 3, 2}});
  ASSERT_TRUE(layout.ok() && map.ok());
  auto tables = StaticDispatch::Build(*layout, *map);
  ASSERT_TRUE(tables.ok()) << tables.status();
  // Expert 0 lives on ranks 0 (p0) and 1 (p3): node 1 has none, its ranks 2,3 spread over p0,p3.
  EXPECT_EQ(tables->Lookup(0, 0, LogicalId(0)), PhysicalId(0));
  EXPECT_EQ(tables->Lookup(1, 0, LogicalId(0)), PhysicalId(3));
  EXPECT_EQ(tables->Lookup(2, 0, LogicalId(0)), PhysicalId(0));
  EXPECT_EQ(tables->Lookup(3, 0, LogicalId(0)), PhysicalId(3));
  // Expert 3 lives on ranks 2 (p4) and 3 (p6): node 0 ranks spread over them.
  EXPECT_EQ(tables->Lookup(0, 0, LogicalId(3)), PhysicalId(4));
  EXPECT_EQ(tables->Lookup(1, 0, LogicalId(3)), PhysicalId(6));
  // Expert 2 lives on rank 1 (p2) and rank 3 (p7): rank 0 uses its node's p2, rank 2 uses p7.
  EXPECT_EQ(tables->Lookup(0, 0, LogicalId(2)), PhysicalId(2));
  EXPECT_EQ(tables->Lookup(2, 0, LogicalId(2)), PhysicalId(7));
}

TEST(DispatchTest, LowestOwnReplicaWhenTwoOnOneRank) {
  auto layout = ExpertLayout::Create({2, 2, 2, 0, 1});
  auto map = PlacementMap::Create(2, 4, {{1, 1, 0, 1}});
  ASSERT_TRUE(layout.ok() && map.ok());
  auto row = BuildStaticDispatchRow(*layout, *map, 0, 0);
  ASSERT_TRUE(row.ok());
  EXPECT_THAT(*row, ElementsAre(2, 0));
}

TEST(DispatchTest, RejectsMismatchedLayoutAndRange) {
  auto layout = ExpertLayout::Create({4, 4, 4, 0, 1});
  auto map = PlacementMap::Create(4, 6, {{0, 1, 2, 3, 0, 0}});
  ASSERT_TRUE(layout.ok() && map.ok());
  EXPECT_FALSE(StaticDispatch::Build(*layout, *map).ok());
  auto good = PlacementMap::Create(4, 8, {{0, 1, 2, 3, 0, 1, 2, 3}});
  ASSERT_TRUE(good.ok());
  EXPECT_FALSE(BuildStaticDispatchRow(*layout, *good, 1, 0).ok());
  EXPECT_FALSE(BuildStaticDispatchRow(*layout, *good, 0, 4).ok());
}

// Properties: every rank computes the same tables (per-rank rows equal the central build), an
// own-GPU replica is always used when one exists, a node replica next, and each pick is a replica.
TEST(DispatchTest, TablesAreRankInvariantAndPreferNearReplicas) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "EPLB_TEST_SEED=" << seed);
  std::mt19937_64 rng(seed);
  for (int trial = 0; trial < 60; ++trial) {
    auto layout = ExpertLayout::Create(testing::RandomLayoutConfig(rng));
    ASSERT_TRUE(layout.ok());
    PlacementMap map = testing::RandomPlacement(*layout, 2, rng);
    auto tables = StaticDispatch::Build(*layout, map);
    ASSERT_TRUE(tables.ok());
    for (int layer = 0; layer < 2; ++layer) {
      for (int rank = 0; rank < layout->ep_size(); ++rank) {
        auto row = BuildStaticDispatchRow(*layout, map, layer, rank);
        ASSERT_TRUE(row.ok());
        for (int e = 0; e < layout->num_logical(); ++e) {
          const PhysicalId p = tables->Lookup(rank, layer, LogicalId(e));
          ASSERT_EQ((*row)[e], p.value());
          ASSERT_EQ(map.LogicalOf(layer, p), LogicalId(e));
          bool own = false;
          bool near = false;
          for (int32_t q : map.ReplicasOf(layer, LogicalId(e))) {
            own |= layout->OwnerRank(PhysicalId(q)) == rank;
            near |=
                layout->NodeOfRank(layout->OwnerRank(PhysicalId(q))) == layout->NodeOfRank(rank);
          }
          if (own) {
            EXPECT_EQ(layout->OwnerRank(p), rank);
          }
          if (near) {
            EXPECT_EQ(layout->NodeOfRank(layout->OwnerRank(p)), layout->NodeOfRank(rank));
          }
        }
      }
    }
  }
}

// Remote picks are spread evenly: expert 1 has two replicas, both on node 0; the four ranks of
// node 1 lack a near one, so each replica serves two of them.
TEST(DispatchTest, RemoteRanksSpreadEvenly) {
  auto layout2 = ExpertLayout::Create({2, 14, 8, 0, 2});  // P=16, L=2
  ASSERT_TRUE(layout2.ok());
  // Expert 1 only on rank 0 (p1) and rank 1 (p3); everything else expert 0.
  std::vector<int32_t> row(16, 0);
  row[1] = 1;
  row[3] = 1;
  auto map = PlacementMap::Create(2, 16, {row});
  ASSERT_TRUE(map.ok());
  auto tables = StaticDispatch::Build(*layout2, *map);
  ASSERT_TRUE(tables.ok());
  std::map<int64_t, int> users;
  for (int r = 4; r < 8; ++r) ++users[tables->Lookup(r, 0, LogicalId(1)).value()];
  EXPECT_EQ(users[1], 2);
  EXPECT_EQ(users[3], 2);
}

TEST(DispatchTest, DynamicPickIsRankInvariantOnlyWhenAsked) {
  int differ = 0;
  for (int64_t row = 0; row < 200; ++row) {
    for (int k = 0; k < 8; ++k) {
      const int a = DynamicReplicaIndex(row, k, 0, true, 5);
      EXPECT_EQ(a, DynamicReplicaIndex(row, k, 3, true, 5));
      EXPECT_GE(a, 0);
      EXPECT_LT(a, 5);
      differ +=
          DynamicReplicaIndex(row, k, 0, false, 5) != DynamicReplicaIndex(row, k, 3, false, 5);
    }
  }
  EXPECT_GT(differ, 100);
}

TEST(DispatchTest, DynamicPickIsRoughlyUniform) {
  std::vector<int> hist(3, 0);
  for (int64_t row = 0; row < 30000; ++row) ++hist[DynamicReplicaIndex(row, row % 8, 0, true, 3)];
  for (int c : hist) EXPECT_NEAR(c, 10000, 500);
}

}  // namespace
}  // namespace eplb
