#include "core/checkpoint.h"

#include <random>
#include <vector>

#include "core/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace eplb {
namespace {

std::vector<int64_t> Slots(const std::vector<CheckpointTarget>& t) {
  std::vector<int64_t> out;
  for (const auto& x : t) out.push_back(x.slot.value());
  return out;
}

TEST(CheckpointTest, SharedExpertGoesToItsRowOnEveryRank) {
  // spec 7.3: E=8, R=2, W=2, S=1 -> shared checkpoint id 8 goes to local row 5, slots [5, 11].
  auto layout = ExpertLayout::Create({8, 2, 2, 1, 1});
  ASSERT_TRUE(layout.ok());
  auto t = CheckpointTargets(*layout, nullptr, 0, 8);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(Slots(*t), ::testing::ElementsAre(5, 11));
  for (const auto& x : *t) {
    EXPECT_TRUE(x.shared);
    EXPECT_EQ(x.local_row, 5);
  }
}

TEST(CheckpointTest, RoutedExpertGoesToEveryReplicaIncludingTwoOnOneGpu) {
  auto layout = ExpertLayout::Create({4, 4, 2, 1, 1});  // P=8, L=4
  auto map = PlacementMap::Create(4, 8, {{0, 1, 0, 2, 3, 0, 1, 2}});
  ASSERT_TRUE(layout.ok() && map.ok());
  auto t = CheckpointTargets(*layout, &*map, 0, 0);
  ASSERT_TRUE(t.ok());
  ASSERT_EQ(t->size(), 3u);
  EXPECT_EQ((*t)[0].rank, 0);
  EXPECT_EQ((*t)[0].local_row, 0);
  EXPECT_EQ((*t)[1].rank, 0);
  EXPECT_EQ((*t)[1].local_row, 2);
  EXPECT_EQ((*t)[2].rank, 1);
  EXPECT_EQ((*t)[2].local_row, 1);
  EXPECT_THAT(Slots(*t), ::testing::ElementsAre(0, 2, 6));
}

TEST(CheckpointTest, EveryRowNamesTheCheckpointIdThatTargetsIt) {
  std::mt19937_64 rng(testing::FreshSeed());
  for (int trial = 0; trial < 50; ++trial) {
    auto layout = ExpertLayout::Create(testing::RandomLayoutConfig(rng));
    ASSERT_TRUE(layout.ok()) << layout.status();
    const PlacementMap map = testing::RandomPlacement(*layout, 1, rng);
    int rows_named = 0;
    for (int64_t x = 0; x < layout->num_logical() + layout->num_shared(); ++x) {
      auto t = CheckpointTargets(*layout, &map, 0, x);
      ASSERT_TRUE(t.ok()) << t.status();
      for (const CheckpointTarget& c : *t) {
        EXPECT_EQ(CheckpointIdOfRow(*layout, map, 0, c.rank, c.local_row), x)
            << "rank " << c.rank << " row " << c.local_row;
        ++rows_named;
      }
    }
    EXPECT_EQ(rows_named, layout->ep_size() * layout->slots_per_rank());  // every row, once
  }
}

TEST(CheckpointTest, Errors) {
  auto layout = ExpertLayout::Create({8, 2, 2, 1, 1});
  ASSERT_TRUE(layout.ok());
  EXPECT_EQ(CheckpointTargets(*layout, nullptr, 0, 3).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(CheckpointTargets(*layout, nullptr, 0, 9).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CheckpointTargets(*layout, nullptr, 0, -1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace eplb
