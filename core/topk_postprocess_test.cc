#include "core/topk_postprocess.h"

#include <random>
#include <set>
#include <vector>

#include "core/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace eplb {
namespace {

using ::testing::ElementsAre;

TEST(TopkPostprocessTest, RemapVectorOfSection71) {
  // E=256, R=8, W=8, S=1, rank 7: L=33. ids [0, 33, 263, shared] -> [0, 34, 270, 271].
  auto layout = ExpertLayout::Create({256, 8, 8, 1, 1});
  ASSERT_TRUE(layout.ok());
  std::vector<int64_t> slots;
  std::vector<float> weights;
  RemapToSlots(*layout, {0, 33, 263}, 3, {7}, {}, 0.4f, slots, weights);
  EXPECT_THAT(slots, ElementsAre(0, 34, 270, 271));
  EXPECT_THAT(weights, ElementsAre(1.0f, 1.0f, 1.0f, 0.4f));
}

TEST(TopkPostprocessTest, SharedWeightFollowsScalingFactor) {
  TopkOptions o;
  o.routed_scaling_factor = 2.5;
  EXPECT_FLOAT_EQ(SharedExpertWeight(o), 0.4f);
  o.scaling_folded_into_routed = true;
  EXPECT_FLOAT_EQ(SharedExpertWeight(o), 1.0f);
  o.scaling_folded_into_routed = false;
  o.routed_scaling_factor = 0;
  EXPECT_FLOAT_EQ(SharedExpertWeight(o), 1.0f);
}

TEST(TopkPostprocessTest, PaddingStaysPaddingEverywhere) {
  auto layout = ExpertLayout::Create({8, 2, 2, 1, 1});
  auto map = PlacementMap::Create(8, 10, {{0, 1, 2, 3, 4, 5, 6, 7, 0, 1}});
  ASSERT_TRUE(layout.ok() && map.ok());
  auto tables = StaticDispatch::Build(*layout, *map);
  ASSERT_TRUE(tables.ok());
  TopkOptions o;
  o.top_k = 2;
  o.rank = 1;
  auto r = PostprocessTopk(*layout, *map, *tables, o, {3, -1, -1, -1}, {0.7f, 0.3f, 0.5f, 0.5f});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->physical, ElementsAre(3, -1, -1, -1));
  EXPECT_THAT(r->shared_rank, ElementsAre(1, -1));
  EXPECT_THAT(r->slots, ElementsAre(3, -1, 11, -1, -1, -1));
  EXPECT_THAT(r->weights, ElementsAre(0.7f, 0.0f, 1.0f, 0.0f, 0.0f, 0.0f));
}

TEST(TopkPostprocessTest, RejectsBadInput) {
  auto layout = ExpertLayout::Create({8, 2, 2, 1, 1});
  PlacementMap map = PlacementMap::Identity(1, 8, 10);
  auto tables = StaticDispatch::Build(*layout, map);
  ASSERT_TRUE(layout.ok() && tables.ok());
  TopkOptions o;
  o.top_k = 2;
  EXPECT_FALSE(PostprocessTopk(*layout, map, *tables, o, {1, 2, 3}).ok());
  EXPECT_FALSE(PostprocessTopk(*layout, map, *tables, o, {1, 8}).ok());
  o.rank = 2;
  EXPECT_FALSE(PostprocessTopk(*layout, map, *tables, o, {1, 2}).ok());
  o.rank = 0;
  o.layer = 1;
  EXPECT_FALSE(PostprocessTopk(*layout, map, *tables, o, {1, 2}).ok());
}

// Properties on random layouts, maps and batches: load accounting sees physical ids of the
// router's experts (never slot ids); routed slots are the layout's; shared slots are shared rows.
TEST(TopkPostprocessTest, AccountingSeesPhysicalIdsOnly) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "EPLB_TEST_SEED=" << seed);
  std::mt19937_64 rng(seed);
  for (int trial = 0; trial < 80; ++trial) {
    auto layout = ExpertLayout::Create(testing::RandomLayoutConfig(rng));
    ASSERT_TRUE(layout.ok());
    PlacementMap map = testing::RandomPlacement(*layout, 2, rng);
    auto tables = StaticDispatch::Build(*layout, map);
    ASSERT_TRUE(tables.ok());
    TopkOptions o;
    o.top_k = std::uniform_int_distribution<int>(1, 8)(rng);
    o.rank = std::uniform_int_distribution<int>(0, layout->ep_size() - 1)(rng);
    o.layer = trial % 2;
    o.dispatch = trial % 3 == 0 ? DispatchMode::kDynamic : DispatchMode::kStatic;
    o.waterfill = trial % 2 ? WaterfillPolicy::kExact : WaterfillPolicy::kSglang;
    const int n = std::uniform_int_distribution<int>(0, 150)(rng);
    std::vector<int64_t> ids(n * o.top_k);
    for (auto& id : ids)
      id = std::uniform_int_distribution<int>(-1, layout->num_logical() - 1)(rng);
    auto r = PostprocessTopk(*layout, map, *tables, o, ids);
    ASSERT_TRUE(r.ok()) << r.status();
    std::vector<int64_t> counts(layout->num_physical(), 0);
    AccumulatePhysicalCounts(r->physical, absl::MakeSpan(counts));
    std::vector<int64_t> logical_from_counts(layout->num_logical(), 0);
    for (int p = 0; p < layout->num_physical(); ++p) {
      logical_from_counts[map.LogicalOf(o.layer, PhysicalId(p)).value()] += counts[p];
    }
    std::vector<int64_t> logical_expected(layout->num_logical(), 0);
    for (int64_t id : ids) {
      if (id >= 0) ++logical_expected[id];
    }
    EXPECT_EQ(logical_from_counts, logical_expected);
    const int width = o.top_k + layout->num_shared();
    for (int t = 0; t < n; ++t) {
      for (int k = 0; k < o.top_k; ++k) {
        const int64_t p = r->physical[t * o.top_k + k];
        EXPECT_EQ(r->slots[t * width + k], layout->SlotOf(PhysicalId(p)).value());
        if (p >= 0) {
          EXPECT_EQ(map.LogicalOf(o.layer, PhysicalId(p)).value(), ids[t * o.top_k + k]);
        }
      }
      for (int s = 0; s < layout->num_shared(); ++s) {
        const int64_t slot = r->slots[t * width + o.top_k + s];
        if (r->shared_rank[t] < 0) {
          EXPECT_EQ(slot, -1);
          continue;
        }
        const SlotContents c = layout->Describe(SlotId(slot));
        EXPECT_TRUE(c.shared);
        EXPECT_EQ(c.shared_index, s);
      }
    }
  }
}

}  // namespace
}  // namespace eplb
