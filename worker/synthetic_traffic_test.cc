#include "worker/synthetic_traffic.h"

#include <set>
#include <vector>

#include "gtest/gtest.h"

namespace eplb {
namespace {

TEST(SyntheticTrafficTest, ExplicitWeightsDriveTheDraws) {
  ExpertLayout layout = *ExpertLayout::Create({8, 8, 4, 0, 1});
  SyntheticTraffic t(layout, 2, {64, 2, 1.2});
  // Layer 0: only experts 3 and 5; layer 1: expert 6 three times as likely as 1.
  t.SetWeights({{0, 0, 0, 10, 0, 10, 0, 0}, {0, 1, 0, 0, 0, 0, 3, 0}});
  for (int i = 0; i < 200; ++i) {
    const auto a = t.SampleToken(0);
    EXPECT_EQ(std::set<int32_t>(a.begin(), a.end()), (std::set<int32_t>{3, 5}));
    for (int32_t e : t.SampleToken(1)) EXPECT_TRUE(e == 1 || e == 6) << e;
  }
}

TEST(SyntheticTrafficTest, GroupLocalityKeepsATokenInOneGroup) {
  ExpertLayout layout = *ExpertLayout::Create({64, 0, 8, 0, 1});
  TrafficOptions o;
  o.top_k = 4;
  o.num_groups = 8;  // groups of 8 experts
  o.group_locality = 1.0;
  SyntheticTraffic t(layout, 1, o);
  for (int i = 0; i < 500; ++i) {
    const auto tok = t.SampleToken(0);
    ASSERT_EQ(tok.size(), 4u);
    for (int32_t e : tok) EXPECT_EQ(e / 8, tok[0] / 8);
    EXPECT_EQ(std::set<int32_t>(tok.begin(), tok.end()).size(), 4u);
  }
}

TEST(SyntheticTrafficTest, TokensDrawDistinctExperts) {
  ExpertLayout layout = *ExpertLayout::Create({16, 0, 4, 0, 1});
  TrafficOptions o;
  o.top_k = 8;
  o.zipf = 2.0;
  o.burst_probability = 1.0;  // always bursting
  SyntheticTraffic t(layout, 1, o);
  std::vector<WorkerRuntime*> none;
  for (int i = 0; i < 100; ++i) {
    const auto tok = t.SampleToken(0);
    EXPECT_EQ(std::set<int32_t>(tok.begin(), tok.end()).size(), tok.size());
    EXPECT_EQ(tok.size(), 8u);
  }
}

}  // namespace
}  // namespace eplb
