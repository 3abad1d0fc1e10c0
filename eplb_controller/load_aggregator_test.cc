#include "eplb_controller/load_aggregator.h"

#include <memory>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace eplb {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class LoadAggregatorTest : public ::testing::Test {
 protected:
  // E=4, R=4, W=2: L=4. One layer.
  LoadAggregatorTest() : layout_(*ExpertLayout::Create({4, 4, 2, 1, 1})) {}
  ExpertLayout layout_;
  absl::Time t0_ = absl::FromUnixSeconds(1000);
};

TEST_F(LoadAggregatorTest, ConvertsWithTheMapCountedUnder) {
  AggregationOptions o;
  o.window = absl::Seconds(60);
  LoadAggregator agg(layout_, 1, o);
  auto v1 =
      std::make_shared<const PlacementMap>(*PlacementMap::Create(4, 8, {{0, 1, 2, 3, 0, 1, 2, 3}}));
  auto v2 =
      std::make_shared<const PlacementMap>(*PlacementMap::Create(4, 8, {{3, 2, 1, 0, 0, 0, 0, 0}}));
  agg.SetMap(1, v1);
  agg.SetMap(2, v2);
  // Counted under version 1 on rank 0: rows 0..3 hold experts 0..3.
  ASSERT_TRUE(agg.Add(1, {{0, {10, 0, 0, 0}}}, t0_).ok());
  // Counted under version 2 on rank 0: row 0 holds expert 3.
  ASSERT_TRUE(agg.Add(2, {{0, {5, 0, 0, 0}}}, t0_).ok());
  EXPECT_THAT(agg.LogicalLoad(t0_)[0], ElementsAre(10, 0, 0, 5));
  // GPU load counts only reports under the map in force (version 2).
  EXPECT_THAT(agg.GpuLoad(t0_)[0], ElementsAre(5, 0));
}

TEST_F(LoadAggregatorTest, RejectsBadReportsWithoutChangingState) {
  LoadAggregator agg(layout_, 1, {});
  agg.SetMap(1, std::make_shared<const PlacementMap>(PlacementMap::Identity(1, 4, 8)));
  ASSERT_TRUE(agg.Add(1, {{1, {1, 1, 1, 1}}}, t0_).ok());
  const LoadMatrix before = agg.LogicalLoad(t0_);
  EXPECT_EQ(agg.Add(9, {{0, {1, 1, 1, 1}}}, t0_).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(agg.Add(1, {{0, {1, 1, 1}}}, t0_).message(), HasSubstr("expected layers x L"));
  EXPECT_THAT(agg.Add(1, {{0, {1, -1, 1, 1}}}, t0_).message(), HasSubstr("count[1] = -1"));
  EXPECT_THAT(agg.Add(1, {{2, {1, 1, 1, 1}}}, t0_).message(), HasSubstr("rank 2"));
  // A valid rank followed by a bad one: all or nothing.
  EXPECT_FALSE(agg.Add(1, {{0, {1, 1, 1, 1}}, {1, {1}}}, t0_).ok());
  EXPECT_EQ(agg.LogicalLoad(t0_), before);
}

TEST_F(LoadAggregatorTest, SlidingWindowForgetsOldLoad) {
  AggregationOptions o;
  o.window = absl::Seconds(10);
  LoadAggregator agg(layout_, 1, o);
  agg.SetMap(1, std::make_shared<const PlacementMap>(PlacementMap::Identity(1, 4, 8)));
  ASSERT_TRUE(agg.Add(1, {{0, {8, 0, 0, 0}}}, t0_).ok());
  ASSERT_TRUE(agg.Add(1, {{0, {0, 4, 0, 0}}}, t0_ + absl::Seconds(6)).ok());
  EXPECT_THAT(agg.LogicalLoad(t0_ + absl::Seconds(7))[0], ElementsAre(8, 4, 0, 0));
  ASSERT_TRUE(agg.Add(1, {{0, {0, 0, 2, 0}}}, t0_ + absl::Seconds(12)).ok());
  EXPECT_THAT(agg.LogicalLoad(t0_ + absl::Seconds(12))[0], ElementsAre(0, 4, 2, 0));
}

TEST_F(LoadAggregatorTest, ExponentialDecayHalvesPerHalfLife) {
  AggregationOptions o;
  o.window = absl::ZeroDuration();
  o.half_life = absl::Seconds(10);
  LoadAggregator agg(layout_, 1, o);
  agg.SetMap(1, std::make_shared<const PlacementMap>(PlacementMap::Identity(1, 4, 8)));
  ASSERT_TRUE(agg.Add(1, {{0, {8, 0, 0, 0}}}, t0_).ok());
  EXPECT_NEAR(agg.LogicalLoad(t0_ + absl::Seconds(10))[0][0], 4.0, 1e-9);
  ASSERT_TRUE(agg.Add(1, {{0, {4, 0, 0, 0}}}, t0_ + absl::Seconds(10)).ok());
  EXPECT_NEAR(agg.LogicalLoad(t0_ + absl::Seconds(20))[0][0], 4.0, 1e-9);
}

TEST_F(LoadAggregatorTest, ForgetsVersionsBeyondTheKeptCount) {
  AggregationOptions o;
  o.versions_kept = 2;
  LoadAggregator agg(layout_, 1, o);
  for (uint64_t v = 1; v <= 3; ++v) {
    agg.SetMap(v, std::make_shared<const PlacementMap>(PlacementMap::Identity(1, 4, 8)));
  }
  EXPECT_FALSE(agg.HasVersion(1));
  EXPECT_TRUE(agg.HasVersion(2));
  EXPECT_FALSE(agg.Add(1, {{0, {1, 1, 1, 1}}}, t0_).ok());
}

}  // namespace
}  // namespace eplb
