// Every layout, remap, checkpoint and Waterfill vector of tests/golden/public_vectors.json,
// through the library. (Placement vectors: eplb_controller/placement; CLI: eplbctl tests.)
#include <string>
#include <vector>

#include "core/checkpoint.h"
#include "core/expert_layout.h"
#include "core/formats.h"
#include "core/test_util.h"
#include "core/topk_postprocess.h"
#include "core/waterfill.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace eplb {
namespace {

using Json = nlohmann::json;

class PublicVectorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto text = ReadFileToString(testing::RunfilePath("tests/golden/public_vectors.json"));
    ASSERT_TRUE(text.ok()) << text.status();
    v_ = Json::parse(*text);
  }
  static ExpertLayout Layout(const Json& c) {
    auto l = ExpertLayout::Create({c["num_logical"].get<int>(), c["num_redundant"].get<int>(),
                                   c["ep_size"].get<int>(), c["num_shared"].get<int>(), 1});
    EXPECT_TRUE(l.ok()) << l.status();
    return *l;
  }
  Json v_;
};

TEST_F(PublicVectorsTest, LayoutSeedRegression) {
  const Json& c = v_["layout_seed_regression"];
  ExpertLayout l = Layout(c);
  EXPECT_EQ(l.num_physical(), c["num_physical"].get<int>());
  EXPECT_EQ(l.routed_slots_per_rank(), c["routed_slots_per_rank"].get<int>());
  EXPECT_EQ(l.slots_per_rank(), c["slots_per_rank"].get<int>());
  EXPECT_EQ(l.num_slots(), c["num_slots"].get<int>());
  std::vector<int64_t> routed;
  for (int p = 0; p < l.num_physical(); ++p) routed.push_back(l.SlotOf(PhysicalId(p)).value());
  EXPECT_EQ(routed, c["routed_slot_of_physical"].get<std::vector<int64_t>>());
  std::vector<int64_t> shared;
  for (int r = 0; r < l.ep_size(); ++r) shared.push_back(l.SharedSlot(r).value());
  EXPECT_EQ(shared, c["shared_slot_of_rank"].get<std::vector<int64_t>>());
  // The wrong numbers of the vector are what the logical count would give; we must differ.
  EXPECT_NE(
      routed,
      c["wrong_when_logical_count_is_used"]["routed_slot_of_physical"].get<std::vector<int64_t>>());
  EXPECT_NE(
      shared,
      c["wrong_when_logical_count_is_used"]["shared_slot_of_rank"].get<std::vector<int64_t>>());
  const int64_t ckpt = c["checkpoint_shared_id"].get<int64_t>();
  auto targets = CheckpointTargets(l, nullptr, 0, ckpt);
  ASSERT_TRUE(targets.ok()) << targets.status();
  std::vector<int64_t> slots;
  for (const auto& t : *targets) {
    slots.push_back(t.slot.value());
    EXPECT_EQ(t.local_row, c["shared_weight_local_row"].get<int>());
  }
  EXPECT_EQ(slots, c["shared_weight_global_slots"].get<std::vector<int64_t>>());
}

TEST_F(PublicVectorsTest, TopkPostprocess) {
  const Json& c = v_["layout_topk_postprocess"];
  ExpertLayout l = Layout(c);
  const auto ids = c["routed_physical_ids"].get<std::vector<int64_t>>();
  const int rank = c["rank"].get<int>();
  std::vector<int64_t> slots;
  std::vector<float> weights;
  RemapToSlots(l, ids, static_cast<int>(ids.size()), {rank}, {}, 1.0f, slots, weights);
  EXPECT_EQ(slots, c["expected_slot_ids_with_shared_last"].get<std::vector<int64_t>>());
  std::vector<int64_t> counts(l.num_physical(), 0);
  AccumulatePhysicalCounts(ids, absl::MakeSpan(counts));
  std::vector<int64_t> seen;
  for (int p = 0; p < l.num_physical(); ++p) {
    if (counts[p] > 0) seen.push_back(p);
  }
  EXPECT_EQ(seen, c["expected_load_accounting_ids"].get<std::vector<int64_t>>());
}

TEST_F(PublicVectorsTest, DeepSeekScale) {
  const Json& c = v_["layout_deepseek_scale"];
  ExpertLayout l = Layout(c);
  EXPECT_EQ(l.routed_slots_per_rank(), c["routed_slots_per_rank"].get<int>());
  EXPECT_EQ(l.num_slots(), c["num_slots"].get<int>());
  for (const auto& [p, slot] : c["routed_slot_of_physical"].items()) {
    EXPECT_EQ(l.SlotOf(PhysicalId(std::stoll(p))).value(), slot.get<int64_t>()) << p;
  }
  for (const auto& [r, slot] : c["shared_slot_of_rank"].items()) {
    EXPECT_EQ(l.SharedSlot(std::stoi(r)).value(), slot.get<int64_t>()) << r;
  }
  auto targets = CheckpointTargets(l, nullptr, 0, l.num_logical());
  ASSERT_TRUE(targets.ok());
  std::vector<int64_t> slots;
  for (const auto& t : *targets) slots.push_back(t.slot.value());
  EXPECT_EQ(slots, c["shared_weight_global_slots"].get<std::vector<int64_t>>());
}

TEST_F(PublicVectorsTest, WaterfillStatic) {
  const Json& c = v_["waterfill_static_example"];
  const int w = c["ep_size"].get<int>();
  const int k = c["top_k"].get<int>();
  const int l_rows = c["routed_slots_per_rank"].get<int>();
  const int src = c["src_rank"].get<int>();
  auto layout = ExpertLayout::Create({w * l_rows, 0, w, 1, 1});
  ASSERT_TRUE(layout.ok());
  const auto load = c["routed_load_per_rank"].get<std::vector<int64_t>>();
  const WaterfillPlan plan = StaticPlan(load, k);
  EXPECT_EQ(plan.level, c["level"].get<int64_t>());
  EXPECT_EQ(Headroom(plan, src), c["headroom"].get<std::vector<int64_t>>());
  // Any ids with those loads: the choice depends on the loads and the row only.
  std::vector<int64_t> ids;
  for (int r = 0; r < w; ++r) {
    for (int64_t i = 0; i < load[r]; ++i) ids.push_back(int64_t{r} * l_rows);
  }
  const auto dest = AssignSharedRanks(*layout, ids, k, src, plan, WaterfillPolicy::kSglang, 0);
  EXPECT_EQ(std::vector<int64_t>(dest.begin(), dest.end()),
            c["chosen_rank_per_row"].get<std::vector<int64_t>>());
  std::vector<int64_t> slots;
  for (int32_t r : dest) slots.push_back(layout->SharedSlot(r).value());
  EXPECT_EQ(slots, c["shared_slot_per_row"].get<std::vector<int64_t>>());
}

}  // namespace
}  // namespace eplb
