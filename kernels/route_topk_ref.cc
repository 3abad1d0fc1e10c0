#include <algorithm>
#include <climits>
#include <cstdint>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/dispatch.h"
#include "core/expert_layout.h"
#include "core/topk_postprocess.h"
#include "core/waterfill.h"
#include "kernels/route_topk.h"

namespace eplb {

absl::Status ValidateRouteTopk(const RouteTopkParams& p) {
  if (p.num_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat("num_tokens=", p.num_tokens, " must be >= 0"));
  }
  if (p.top_k < 1 || p.top_k > kRouteMaxTopK) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k=", p.top_k, " must be in [1, ", kRouteMaxTopK, "]"));
  }
  if (p.ep_size < 1 || p.ep_size > kRouteMaxRanks) {
    return absl::InvalidArgumentError(
        absl::StrCat("ep_size=", p.ep_size, " must be in [1, ", kRouteMaxRanks, "]"));
  }
  auto layout = ExpertLayout::Create(
      {p.num_logical, p.num_physical - p.num_logical, p.ep_size, p.num_shared, 1});
  if (!layout.ok()) return layout.status();
  if (p.rank < 0 || p.rank >= p.ep_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank=", p.rank, " must be in [0, ", p.ep_size, ")"));
  }
  // One call's bound, which keeps the kernels' Waterfill arithmetic in 32 bits (every load,
  // level, quota and headroom prefix is at most this): 126M tokens at top_k = 16.
  if (static_cast<int64_t>(p.num_tokens) * (p.top_k + 1) + p.ep_size > INT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat(
        "num_tokens=", p.num_tokens, " is too many for one call with top_k=", p.top_k,
        " and ep_size=", p.ep_size, ": num_tokens * (top_k + 1) + ep_size must be below 2^31"));
  }
  if (p.grid_blocks < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("grid_blocks=", p.grid_blocks, " must be >= 0 (0: chosen by the launcher)"));
  }
  if (p.dispatch == RouteDispatch::kStatic && p.static_table == nullptr) {
    return absl::InvalidArgumentError("static dispatch needs static_table");
  }
  if (p.dispatch == RouteDispatch::kDynamic &&
      (p.replicas == nullptr || p.replica_count == nullptr || p.max_replicas < 1)) {
    return absl::InvalidArgumentError(
        "dynamic dispatch needs replicas, replica_count, max_replicas");
  }
  return absl::OkStatus();
}

namespace {

template <typename Id>
absl::Status Ref(const RouteTopkParams& p, const RouteTopkBuffers<Id>& b) {
  if (absl::Status s = ValidateRouteTopk(p); !s.ok()) return s;
  const ExpertLayout layout = *ExpertLayout::Create(
      {p.num_logical, p.num_physical - p.num_logical, p.ep_size, p.num_shared, 1});
  const int n = p.num_tokens;
  const int k_count = p.top_k;
  std::vector<int64_t> physical(static_cast<size_t>(n) * k_count);
  for (size_t i = 0; i < physical.size(); ++i) {
    const int64_t e = b.logical[i];
    if (e < 0 || e >= p.num_logical) {  // padding (out-of-range ids are treated as padding)
      physical[i] = -1;
    } else if (p.dispatch == RouteDispatch::kStatic) {
      physical[i] = p.static_table[e];
    } else {
      const int c = p.replica_count[e];
      const int r = DynamicReplicaIndex(static_cast<int64_t>(i / k_count),
                                        static_cast<int>(i % k_count), p.rank, p.rank_invariant, c);
      physical[i] = p.replicas[e * p.max_replicas + r];
    }
    b.physical[i] = static_cast<Id>(physical[i]);
  }
  if (b.counts != nullptr)
    AccumulatePhysicalCounts(physical, absl::MakeSpan(b.counts, p.num_physical));
  const WaterfillPlan plan = StaticPlan(CountRoutedPerRank(layout, physical), k_count);
  const bool balance = p.num_shared > 0 && p.waterfill != RouteWaterfill::kLocal;
  const std::vector<int32_t> dest = AssignSharedRanks(
      layout, physical, k_count, p.rank, plan,
      p.waterfill == RouteWaterfill::kExact ? WaterfillPolicy::kExact : WaterfillPolicy::kSglang,
      balance ? p.min_batch : INT_MAX);
  std::vector<float> routed_w;
  if (b.routed_weights != nullptr)
    routed_w.assign(b.routed_weights, b.routed_weights + physical.size());
  std::vector<int64_t> slots;
  std::vector<float> weights;
  RemapToSlots(layout, physical, k_count, dest, routed_w, p.shared_weight, slots, weights);
  for (size_t i = 0; i < slots.size(); ++i) {
    b.slots[i] = static_cast<Id>(slots[i]);
    b.weights[i] = weights[i];
  }
  if (b.shared_rank != nullptr) std::copy(dest.begin(), dest.end(), b.shared_rank);
  return absl::OkStatus();
}

}  // namespace

absl::Status RouteTopkRef(const RouteTopkParams& p, const RouteTopkBuffers<int32_t>& b) {
  return Ref(p, b);
}
absl::Status RouteTopkRef(const RouteTopkParams& p, const RouteTopkBuffers<int64_t>& b) {
  return Ref(p, b);
}

}  // namespace eplb
