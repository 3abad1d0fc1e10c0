// Waterfill: which rank computes each token's fused shared expert (spec/DOMAIN.md section 8).
//
// Every rank holds the shared expert, so the choice is free; Waterfill sends shared work to
// ranks below the water level. Two policies:
//
//  * kSglang: SGLang's semantics, bit-exact (deepep_waterfill.py): level
//    T = ceil((S + S / K) / W) over the plan's rank loads, headroom max(T - load, 0) with remote
//    ranks scaled by 10/11 (floor), a stateless LCG hash of the token row picks a rank with
//    probability proportional to headroom; a zero headroom sum falls back to a hysteresis argmin
//    (a rank must be over ~9% lighter than the best so far). Open-loop: levels only in expectation.
//  * kExact: ours. Quotas from a water-fill of the rank loads give each rank exactly as many
//    shared tokens as levels it best (the max final load is the minimum any assignment can reach);
//    the j-th token with a routed id takes the j-th quota place in the rank order src, 0, 1, ...
//    (the source first: its share costs no traffic). Deterministic, no sampling, and parallel:
//    a token's rank follows from its index among valid tokens and a prefix sum of the quotas.
//
// Both: batches under `min_batch` tokens (64) keep the shared expert on the source rank; a token
// with no valid routed id gets no shared expert (rank -1, slot -1, weight 0).
//
//   std::vector<int64_t> load = CountRoutedPerRank(layout, physical_ids);  // [W], by p / L
//   WaterfillPlan plan = StaticPlan(load, top_k);
//   std::vector<int32_t> dest = AssignSharedRanks(layout, physical_ids, top_k, src, plan,
//                                                 WaterfillPolicy::kSglang);
//
// Every rank index here is computed from the *physical* routed count L = (E + R) / W, through
// ExpertLayout; there is no W limit (no bit masks).
#ifndef EPLB_CORE_WATERFILL_H_
#define EPLB_CORE_WATERFILL_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "core/expert_layout.h"
#include "core/host_device.h"

namespace eplb {

enum class WaterfillPolicy { kSglang, kExact };

inline constexpr int kWaterfillMinBatch = 64;

// Rank loads and level for one batch.
struct WaterfillPlan {
  std::vector<int64_t> rank_load;  // [W]
  int64_t level = 0;               // T
  bool allow_all_ranks = true;     // false: candidates are the source + ranks a token visits
};

// Routed (token, k) pairs per owner rank (p / L); negative ids skipped. ids: [N * K].
std::vector<int64_t> CountRoutedPerRank(const ExpertLayout& layout,
                                        absl::Span<const int64_t> physical_ids);

// ceil((total + total / K) / W), integer division inside.
int64_t WaterLevel(int64_t total_routed, int64_t extra_total, int top_k, int ep_size);

// Static mode: this rank's own counts, no communication (CUDA-graph safe).
WaterfillPlan StaticPlan(absl::Span<const int64_t> local_routed_per_rank, int top_k);

// Dynamic mode: all-reduced routed counts G plus tokens per rank N; load = G + N,
// T = ceil((sum(load) + sum(G) / K) / W); candidates shrink to visited ranks if max(load) > T.
WaterfillPlan DynamicPlan(absl::Span<const int64_t> global_routed_per_rank,
                          absl::Span<const int64_t> tokens_per_rank, int top_k);

// Headroom max(T - load, 0), scaled by 10/11 (floor) for ranks other than `src`.
std::vector<int64_t> Headroom(const WaterfillPlan& plan, int src);

// Water-fill quotas: q[r] >= 0, sum q = n, minimising max(load + q); the last partial level goes
// one token each to the ranks that reach it, in the order src, 0, 1, ...
std::vector<int64_t> ExactQuotas(absl::Span<const int64_t> load, int64_t n, int src);

// The rank at position `pos` of the exact policy's order: src, then 0, 1, ... without src.
EPLB_HOST_DEVICE inline int ExactOrderRank(int pos, int src) {
  return pos == 0 ? src : (pos <= src ? pos - 1 : pos);
}

// SGLang's per-token LCG: seed = row ^ (src * 0x9E3779B9), seed = seed * 1664525 + 1013904223.
EPLB_HOST_DEVICE inline uint32_t WaterfillSeed(int64_t row, int src) {
  uint32_t seed = static_cast<uint32_t>(row) ^ (static_cast<uint32_t>(src) * 0x9E3779B9u);
  return seed * 1664525u + 1013904223u;
}

// The shared-expert rank of every token, -1 for a token with no valid routed id.
// physical_ids: [N * top_k].
std::vector<int32_t> AssignSharedRanks(const ExpertLayout& layout,
                                       absl::Span<const int64_t> physical_ids, int top_k, int src,
                                       const WaterfillPlan& plan, WaterfillPolicy policy,
                                       int min_batch = kWaterfillMinBatch);

// Final per-rank load: rank_load plus the shared tokens each rank received.
std::vector<int64_t> LoadWithShared(const WaterfillPlan& plan,
                                    absl::Span<const int32_t> shared_rank);

}  // namespace eplb

#endif  // EPLB_CORE_WATERFILL_H_
