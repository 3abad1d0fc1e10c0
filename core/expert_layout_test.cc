#include "core/expert_layout.h"

#include <random>
#include <set>
#include <vector>

#include "core/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace eplb {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

ExpertLayout MustCreate(LayoutConfig c) {
  auto layout = ExpertLayout::Create(c);
  EXPECT_TRUE(layout.ok()) << layout.status();
  return *layout;
}

TEST(ExpertLayoutTest, DeepSeekScaleNumbers) {
  ExpertLayout l = MustCreate({256, 32, 16, 1, 2});
  EXPECT_EQ(l.num_physical(), 288);
  EXPECT_EQ(l.routed_slots_per_rank(), 18);
  EXPECT_EQ(l.slots_per_rank(), 19);
  EXPECT_EQ(l.num_slots(), 304);
  EXPECT_EQ(l.SlotOf(PhysicalId(100)), SlotId(105));
  EXPECT_EQ(l.SlotOf(PhysicalId(287)), SlotId(302));
  EXPECT_EQ(l.SharedSlot(3), SlotId(75));
  EXPECT_EQ(l.OwnerRank(PhysicalId(287)), 15);
  EXPECT_EQ(l.LocalRow(PhysicalId(287)), 17);
  EXPECT_EQ(l.NodeOfRank(8), 1);
  EXPECT_EQ(l.DebugString(), "E=256 R=32 P=288 W=16 L=18 S=1 N=2");
}

TEST(ExpertLayoutTest, PaddingStaysPadding) {
  ExpertLayout l = MustCreate({8, 2, 2, 1, 1});
  EXPECT_EQ(l.SlotOf(PhysicalId(-1)), SlotId(-1));
  EXPECT_FALSE(l.SlotOf(PhysicalId(-1)).valid());
}

TEST(ExpertLayoutTest, IndivisibleConfigNamesValuesAndNearestValidR) {
  auto l = ExpertLayout::Create({256, 30, 16, 1, 1});
  ASSERT_FALSE(l.ok());
  EXPECT_EQ(l.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(l.status().message(), HasSubstr("256 + 30 = 286"));
  EXPECT_THAT(l.status().message(), HasSubstr("W=16"));
  EXPECT_THAT(l.status().message(), HasSubstr("R=16 or R=32"));
  EXPECT_THAT(NearestValidRedundant(256, 30, 16), ElementsAre(16, 32));
  EXPECT_THAT(NearestValidRedundant(8, 1, 4), ElementsAre(0, 4));
  EXPECT_THAT(NearestValidRedundant(7, 0, 4), ElementsAre(1));
}

TEST(ExpertLayoutTest, RejectsBadValues) {
  EXPECT_FALSE(ExpertLayout::Create({0, 0, 1, 0, 1}).ok());
  EXPECT_FALSE(ExpertLayout::Create({8, -1, 1, 0, 1}).ok());
  EXPECT_FALSE(ExpertLayout::Create({8, 0, 0, 0, 1}).ok());
  EXPECT_FALSE(ExpertLayout::Create({8, 0, 2, -1, 1}).ok());
  auto nodes = ExpertLayout::Create({8, 0, 4, 0, 3});
  ASSERT_FALSE(nodes.ok());
  EXPECT_THAT(nodes.status().message(), HasSubstr("num_nodes N=3"));
  // P < W: some rank would have no routed row.
  EXPECT_FALSE(ExpertLayout::Create({2, 0, 4, 0, 1}).ok());
}

TEST(ExpertLayoutTest, SharedCheckpointIdComparesAgainstLogicalCount) {
  ExpertLayout l = MustCreate({8, 2, 2, 1, 1});
  EXPECT_TRUE(l.IsSharedCheckpointId(8));   // E + 0
  EXPECT_FALSE(l.IsSharedCheckpointId(9));  // past E + S
  EXPECT_FALSE(l.IsSharedCheckpointId(7));
}

// Properties over random layouts: the slot map is a bijection from (routed physical ids + shared
// rows of every rank) onto [0, num_slots); Describe inverts it; shared never collide with routed.
TEST(ExpertLayoutTest, SlotMapIsABijectionOnRandomLayouts) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "EPLB_TEST_SEED=" << seed);
  std::mt19937_64 rng(seed);
  for (int trial = 0; trial < 300; ++trial) {
    ExpertLayout l = MustCreate(testing::RandomLayoutConfig(rng));
    SCOPED_TRACE(l.DebugString());
    std::vector<int> hits(l.num_slots(), 0);
    std::set<int64_t> routed;
    for (int p = 0; p < l.num_physical(); ++p) {
      const SlotId s = l.SlotOf(PhysicalId(p));
      ASSERT_TRUE(l.Contains(s));
      ++hits[s.value()];
      routed.insert(s.value());
      const SlotContents c = l.Describe(s);
      EXPECT_FALSE(c.shared);
      EXPECT_EQ(c.physical, PhysicalId(p));
      EXPECT_EQ(c.rank, l.OwnerRank(PhysicalId(p)));
      EXPECT_EQ(c.local_row, l.LocalRow(PhysicalId(p)));
      EXPECT_EQ(l.PhysicalAt(c.rank, c.local_row), PhysicalId(p));
    }
    for (int r = 0; r < l.ep_size(); ++r) {
      for (int s = 0; s < l.num_shared(); ++s) {
        const SlotId slot = l.SharedSlot(r, s);
        ASSERT_TRUE(l.Contains(slot));
        EXPECT_EQ(routed.count(slot.value()), 0u) << "shared slot collides with a routed slot";
        ++hits[slot.value()];
        const SlotContents c = l.Describe(slot);
        EXPECT_TRUE(c.shared);
        EXPECT_EQ(c.rank, r);
        EXPECT_EQ(c.shared_index, s);
        EXPECT_EQ(c.local_row, l.routed_slots_per_rank() + s);
      }
    }
    for (int s = 0; s < l.num_slots(); ++s) ASSERT_EQ(hits[s], 1) << "slot " << s;
  }
}

// With R = 0 the layout equals the no-redundancy layout (where L = E / W was right).
TEST(ExpertLayoutTest, WithoutRedundancyEqualsTheLogicalLayout) {
  std::mt19937_64 rng(testing::FreshSeed());
  for (int trial = 0; trial < 200; ++trial) {
    LayoutConfig c = testing::RandomLayoutConfig(rng);
    c.num_redundant = 0;
    c.num_logical = c.ep_size * std::uniform_int_distribution<int>(1, 8)(rng);
    ExpertLayout l = MustCreate(c);
    const int64_t logical_per_rank = c.num_logical / c.ep_size;
    for (int p = 0; p < l.num_physical(); ++p) {
      EXPECT_EQ(l.SlotOf(PhysicalId(p)).value(), p + (p / logical_per_rank) * c.num_shared);
    }
  }
}

// The regression guard: with R > 0 and S > 0, a slot computed from the logical count E / W is
// wrong for some physical id. Plant `num_logical()` into SlotOf/SharedSlot and this fails.
TEST(ExpertLayoutTest, SlotMathUsesThePhysicalCount) {
  std::mt19937_64 rng(testing::FreshSeed());
  int checked = 0;
  for (int trial = 0; trial < 500; ++trial) {
    LayoutConfig c = testing::RandomLayoutConfig(rng);
    if (c.num_shared == 0 || c.num_redundant == 0 || c.num_logical % c.ep_size != 0) continue;
    ExpertLayout l = MustCreate(c);
    const int64_t wrong_l = c.num_logical / c.ep_size;
    bool differs = false;
    for (int p = 0; p < l.num_physical(); ++p) {
      const int64_t expected = p + (p / l.routed_slots_per_rank()) * c.num_shared;
      ASSERT_EQ(l.SlotOf(PhysicalId(p)).value(), expected);
      differs |= expected != p + (p / wrong_l) * c.num_shared;
    }
    for (int r = 0; r < c.ep_size; ++r) {
      ASSERT_EQ(l.SharedSlot(r).value(), int64_t{r} * (l.routed_slots_per_rank() + c.num_shared) +
                                             l.routed_slots_per_rank());
    }
    EXPECT_TRUE(differs);
    ++checked;
  }
  EXPECT_GT(checked, 10);
}

}  // namespace
}  // namespace eplb
