#include "core/waterfill.h"

#include <algorithm>
#include <numeric>
#include <random>
#include <vector>

#include "core/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace eplb {
namespace {

using ::testing::ElementsAre;

// spec section 8 vector: static, W=4, K=2, L=2, src=0, loads [2,4,1,1]:
// T=3, h=[1,0,1,1], rows 0..3 pick ranks [2,0,3,2], shared slots [8,2,11,8].
TEST(WaterfillTest, SglangStaticVector) {
  auto layout = ExpertLayout::Create({8, 0, 4, 1, 1});  // L=2, slots per rank 3
  ASSERT_TRUE(layout.ok());
  // 4 tokens x K=2 -> loads [2,4,1,1] on ranks (p / 2).
  const std::vector<int64_t> ids = {0, 2, 1, 3, 2, 4, 3, 6};
  const std::vector<int64_t> load = CountRoutedPerRank(*layout, ids);
  EXPECT_THAT(load, ElementsAre(2, 4, 1, 1));
  const WaterfillPlan plan = StaticPlan(load, 2);
  EXPECT_EQ(plan.level, 3);
  EXPECT_THAT(Headroom(plan, 0), ElementsAre(1, 0, 1, 1));
  const std::vector<int32_t> dest =
      AssignSharedRanks(*layout, ids, 2, 0, plan, WaterfillPolicy::kSglang, /*min_batch=*/0);
  EXPECT_THAT(dest, ElementsAre(2, 0, 3, 2));
  std::vector<int64_t> slots;
  for (int32_t r : dest) slots.push_back(layout->SharedSlot(r).value());
  EXPECT_THAT(slots, ElementsAre(8, 2, 11, 8));
}

TEST(WaterfillTest, SmallBatchStaysLocalAndInvalidTokensGetNone) {
  auto layout = ExpertLayout::Create({8, 0, 4, 1, 1});
  ASSERT_TRUE(layout.ok());
  std::vector<int64_t> ids = {0, 2, -1, -1, 7, 6};
  const WaterfillPlan plan = StaticPlan(CountRoutedPerRank(*layout, ids), 2);
  for (auto policy : {WaterfillPolicy::kSglang, WaterfillPolicy::kExact}) {
    EXPECT_THAT(AssignSharedRanks(*layout, ids, 2, 1, plan, policy), ElementsAre(1, -1, 1));
  }
}

TEST(WaterfillTest, ZeroHeadroomFallsBackToHysteresisArgmin) {
  // Headroom 1 on remote ranks floors to 0 (1 * 10 / 11), src has none: argmin needs > ~9%.
  WaterfillPlan plan;
  plan.rank_load = {10, 9, 10, 10};
  plan.level = 10;
  auto layout = ExpertLayout::Create({8, 0, 4, 1, 1});
  ASSERT_TRUE(layout.ok());
  std::vector<int64_t> ids(64 * 2, 0);
  auto dest = AssignSharedRanks(*layout, ids, 2, 0, plan, WaterfillPolicy::kSglang);
  // 9 * 11 = 99 < 100 = 10 * 10: rank 1 is lighter by more than 1/11.
  EXPECT_EQ(dest[0], 1);
  plan.rank_load = {10, 10, 10, 10};
  plan.level = 10;
  dest = AssignSharedRanks(*layout, ids, 2, 0, plan, WaterfillPolicy::kSglang);
  EXPECT_EQ(dest[0], 0);
}

TEST(WaterfillTest, DynamicPlanRestrictsCandidatesWhenARankIsAboveLevel) {
  // G = [100, 0, 0, 0], N = [16, 16, 16, 16]: load 116 > T, so candidates shrink.
  const WaterfillPlan plan = DynamicPlan({100, 0, 0, 0}, {16, 16, 16, 16}, 2);
  EXPECT_FALSE(plan.allow_all_ranks);
  EXPECT_EQ(plan.level, (164 + 50 + 3) / 4);
  auto layout = ExpertLayout::Create({8, 0, 4, 1, 1});
  ASSERT_TRUE(layout.ok());
  // Every token visits ranks 0 and 1 only; src = 0. Rank 2, 3 are never candidates.
  std::vector<int64_t> ids;
  for (int t = 0; t < 64; ++t) {
    ids.push_back(0);
    ids.push_back(2);
  }
  auto dest = AssignSharedRanks(*layout, ids, 2, 0, plan, WaterfillPolicy::kSglang);
  for (int32_t r : dest) EXPECT_TRUE(r == 0 || r == 1) << r;
  const WaterfillPlan balanced = DynamicPlan({10, 10, 10, 10}, {16, 16, 16, 16}, 2);
  EXPECT_TRUE(balanced.allow_all_ranks);
}

// The exact policy reaches the minimum possible max load: for loads l and n shared tokens,
// min over assignments of max(l + q) = max(max l, smallest t with sum max(t - l, 0) >= n).
TEST(WaterfillTest, ExactPolicyLevelsOptimallyOnRandomBatches) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "EPLB_TEST_SEED=" << seed);
  std::mt19937_64 rng(seed);
  for (int trial = 0; trial < 200; ++trial) {
    const int w = std::uniform_int_distribution<int>(2, 300)(rng);
    const int l = std::uniform_int_distribution<int>(1, 4)(rng);
    auto layout = ExpertLayout::Create({w * l, 0, w, 1, 1});
    ASSERT_TRUE(layout.ok());
    const int k = std::uniform_int_distribution<int>(1, 16)(rng);
    const int n = std::uniform_int_distribution<int>(64, 2000)(rng);
    const int src = std::uniform_int_distribution<int>(0, w - 1)(rng);
    // Skewed ids: Zipf-like via squaring a uniform.
    std::vector<int64_t> ids(static_cast<size_t>(n) * k);
    for (auto& id : ids) {
      const double u = std::uniform_real_distribution<double>(0, 1)(rng);
      id = std::uniform_int_distribution<int>(0, 19)(rng) == 0
               ? -1
               : static_cast<int64_t>(u * u * u * (w * l));
    }
    const WaterfillPlan plan = StaticPlan(CountRoutedPerRank(*layout, ids), k);
    const auto dest = AssignSharedRanks(*layout, ids, k, src, plan, WaterfillPolicy::kExact);
    int64_t valid = 0;
    for (int t = 0; t < n; ++t) {
      bool any = false;
      for (int j = 0; j < k; ++j) any |= ids[t * k + j] >= 0;
      valid += any;
      EXPECT_EQ(dest[t] >= 0, any);
      if (any) {
        ASSERT_GE(dest[t], 0);
        ASSERT_LT(dest[t], w);
      }
    }
    const auto final_load = LoadWithShared(plan, dest);
    const int64_t got = *std::max_element(final_load.begin(), final_load.end());
    int64_t t = *std::min_element(plan.rank_load.begin(), plan.rank_load.end());
    auto filled = [&](int64_t level) {
      int64_t s = 0;
      for (int64_t x : plan.rank_load) s += std::max<int64_t>(level - x, 0);
      return s;
    };
    while (filled(t) < valid) ++t;
    const int64_t best =
        std::max(t, *std::max_element(plan.rank_load.begin(), plan.rank_load.end()));
    EXPECT_EQ(got, best) << "w=" << w << " n=" << n;
    // The SGLang policy is open-loop: it can only be as good, never better.
    const auto sg = AssignSharedRanks(*layout, ids, k, src, plan, WaterfillPolicy::kSglang);
    const auto sg_load = LoadWithShared(plan, sg);
    EXPECT_GE(*std::max_element(sg_load.begin(), sg_load.end()), best);
  }
}

TEST(WaterfillTest, ExactPolicyFillsQuotasSourceFirstThenAscending) {
  // Three ranks with equal routed load 4, src 1, 66 tokens with a routed id (K=1, all on rank 0):
  // quotas 22 each; tokens 0..21 stay on rank 1, 22..43 go to rank 0, 44..65 to rank 2.
  auto layout = ExpertLayout::Create({3, 0, 3, 1, 1});
  ASSERT_TRUE(layout.ok());
  std::vector<int64_t> ids(66, 0);
  WaterfillPlan plan;
  plan.rank_load = {4, 4, 4};
  plan.level = 4;
  EXPECT_EQ(ExactQuotas(plan.rank_load, 66, 1), (std::vector<int64_t>{22, 22, 22}));
  const auto dest = AssignSharedRanks(*layout, ids, 1, 1, plan, WaterfillPolicy::kExact);
  for (int t = 0; t < 66; ++t) EXPECT_EQ(dest[t], t < 22 ? 1 : (t < 44 ? 0 : 2)) << t;
  // The last partial level goes to the source first: 2 tokens over loads {4, 4, 4}.
  EXPECT_EQ(ExactQuotas(plan.rank_load, 2, 2), (std::vector<int64_t>{1, 0, 1}));
  EXPECT_EQ(ExactOrderRank(0, 2), 2);
  EXPECT_EQ(ExactOrderRank(1, 2), 0);
  EXPECT_EQ(ExactOrderRank(2, 2), 1);
  EXPECT_EQ(ExactOrderRank(3, 2), 3);
}

}  // namespace
}  // namespace eplb
