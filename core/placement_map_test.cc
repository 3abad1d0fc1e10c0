#include "core/placement_map.h"

#include <random>
#include <vector>

#include "core/expert_layout.h"
#include "core/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace eplb {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(PlacementMapTest, DerivesReplicasInAscendingPhysicalOrder) {
  auto map = PlacementMap::Create(4, 6, {{0, 1, 2, 3, 0, 0}, {3, 2, 1, 0, 3, 1}});
  ASSERT_TRUE(map.ok()) << map.status();
  EXPECT_EQ(map->num_layers(), 2);
  EXPECT_EQ(map->ReplicaCount(0, LogicalId(0)), 3);
  EXPECT_THAT(map->ReplicasOf(0, LogicalId(0)), ElementsAre(0, 4, 5));
  EXPECT_THAT(map->ReplicasOf(1, LogicalId(1)), ElementsAre(2, 5));
  EXPECT_EQ(map->max_replicas(), 3);
  EXPECT_THAT(map->ReplicaCounts()[1], ElementsAre(1, 2, 1, 2));
  const auto l2p = map->LogicalToAllPhysical();
  EXPECT_THAT(l2p[0][0], ElementsAre(0, 4, 5));
  EXPECT_THAT(l2p[0][1], ElementsAre(1, -1, -1));
  EXPECT_THAT(l2p[1][3], ElementsAre(0, 4, -1));
  EXPECT_EQ(map->LogicalOf(1, PhysicalId(4)), LogicalId(3));
}

TEST(PlacementMapTest, RejectsMissingReplicaOutOfRangeAndShape) {
  auto missing = PlacementMap::Create(4, 6, {{0, 1, 2, 2, 0, 0}});
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("no replica of logical expert 3"));
  auto range = PlacementMap::Create(4, 6, {{0, 1, 2, 3, 4, 0}});
  ASSERT_FALSE(range.ok());
  EXPECT_THAT(range.status().message(), HasSubstr("physical 4 holds logical id 4"));
  auto negative = PlacementMap::Create(4, 6, {{0, 1, 2, 3, -1, 0}});
  EXPECT_FALSE(negative.ok());
  auto shape = PlacementMap::Create(4, 6, {{0, 1, 2, 3, 0}});
  ASSERT_FALSE(shape.ok());
  EXPECT_THAT(shape.status().message(), HasSubstr("expected P=6"));
  EXPECT_FALSE(PlacementMap::Create(4, 6, {}).ok());
  EXPECT_FALSE(PlacementMap::Create(6, 4, {{0, 1, 2, 3}}).ok());
}

TEST(PlacementMapTest, IdentityAndLogicalCounts) {
  PlacementMap id = PlacementMap::Identity(2, 4, 6);
  EXPECT_THAT(id.physical_to_logical(0), ElementsAre(0, 1, 2, 3, 0, 1));
  const std::vector<double> phys = {1, 2, 3, 4, 10, 20};
  EXPECT_THAT(id.ToLogicalCounts(0, phys), ElementsAre(11, 22, 3, 4));
}

TEST(PlacementMapTest, ChangedLayers) {
  auto a = PlacementMap::Create(2, 3, {{0, 1, 0}, {0, 1, 1}});
  auto b = PlacementMap::Create(2, 3, {{0, 1, 0}, {0, 1, 0}});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_THAT(a->ChangedLayers(*b), ElementsAre(1));
  EXPECT_TRUE(a->ChangedLayers(*a).empty());
  EXPECT_NE(*a, *b);
}

TEST(PlacementMapTest, RandomMapsAreValidAndCountsSumToP) {
  std::mt19937_64 rng(testing::FreshSeed());
  for (int trial = 0; trial < 100; ++trial) {
    auto layout = ExpertLayout::Create(testing::RandomLayoutConfig(rng));
    ASSERT_TRUE(layout.ok());
    PlacementMap map = testing::RandomPlacement(*layout, 3, rng);
    for (int layer = 0; layer < 3; ++layer) {
      int total = 0;
      for (int e = 0; e < map.num_logical(); ++e) {
        EXPECT_GE(map.ReplicaCount(layer, LogicalId(e)), 1);
        total += map.ReplicaCount(layer, LogicalId(e));
        for (int32_t p : map.ReplicasOf(layer, LogicalId(e))) {
          EXPECT_EQ(map.LogicalOf(layer, PhysicalId(p)), LogicalId(e));
        }
      }
      EXPECT_EQ(total, map.num_physical());
    }
  }
}

}  // namespace
}  // namespace eplb
