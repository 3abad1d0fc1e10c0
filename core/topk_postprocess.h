// Top-k post-processing reference (spec/DOMAIN.md section 7.1), the CPU twin of the kernels:
//
//   1. router top-k logical ids [N][K]          (negative = padding)
//   2. logical -> physical, routed columns only  (static table or dynamic pick)
//   3. load accounting sees those physical ids   (never slot ids, never shared columns)
//   4. remap to slots: routed p -> p + (p / L) * S, shared columns -> the chosen rank's shared
//      slots, with weight 1 / routed_scaling_factor (or 1.0 when the factor is folded into the
//      routed weights).
//
//   EPLB_ASSIGN_OR_RETURN(TopkResult r, PostprocessTopk(layout, map, dispatch, options, ids));
//   r.physical   // [N][K], what load accounting counts
//   r.slots      // [N][K + S], what the all-to-all dispatches
#ifndef EPLB_CORE_TOPK_POSTPROCESS_H_
#define EPLB_CORE_TOPK_POSTPROCESS_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/dispatch.h"
#include "core/expert_layout.h"
#include "core/placement_map.h"
#include "core/waterfill.h"

namespace eplb {

enum class DispatchMode { kStatic, kDynamic };

struct TopkOptions {
  int layer = 0;
  int rank = 0;  // the source rank computing these tokens
  int top_k = 0;
  DispatchMode dispatch = DispatchMode::kStatic;
  bool rank_invariant = true;  // dynamic mode only
  // Shared-expert weight: 1 / routed_scaling_factor unless the factor is folded into routed
  // weights (then 1.0). A factor of 0 means 1.0.
  double routed_scaling_factor = 1.0;
  bool scaling_folded_into_routed = false;
  WaterfillPolicy waterfill = WaterfillPolicy::kSglang;
  bool waterfill_enabled = true;  // false: the shared expert always runs on the source rank
  int waterfill_min_batch = kWaterfillMinBatch;
};

struct TopkResult {
  int num_tokens = 0;
  int top_k = 0;
  int num_shared = 0;
  std::vector<int64_t> physical;     // [N][K] routed physical ids, -1 padding
  std::vector<int32_t> shared_rank;  // [N] rank running the shared expert, -1 none
  std::vector<int64_t> slots;        // [N][K + S] routed slots then shared slots, -1 padding
  std::vector<float> weights;        // [N][K + S] routed weights (0 on padding), shared weight
  WaterfillPlan plan;                // the static plan Waterfill used
};

// Logical -> physical for one id (static table of this rank, or dynamic pick).
PhysicalId DispatchOne(const PlacementMap& map, const StaticDispatch& tables,
                       const TopkOptions& options, int64_t row, int k, LogicalId e);

// Full post-processing of a batch. logical_ids: [N * K]; routed_weights: [N * K] or empty
// (then 1.0). Fails on ids outside [0, E) other than negative padding, or shape mismatch.
absl::StatusOr<TopkResult> PostprocessTopk(const ExpertLayout& layout, const PlacementMap& map,
                                           const StaticDispatch& tables, const TopkOptions& options,
                                           absl::Span<const int64_t> logical_ids,
                                           absl::Span<const float> routed_weights = {});

// The slot-space remap of step 4 alone. shared_rank: [N], -1 = no shared expert.
void RemapToSlots(const ExpertLayout& layout, absl::Span<const int64_t> physical, int top_k,
                  absl::Span<const int32_t> shared_rank, absl::Span<const float> routed_weights,
                  float shared_weight, std::vector<int64_t>& slots, std::vector<float>& weights);

// Shared weight per the options: 1 / factor, or 1.0.
float SharedExpertWeight(const TopkOptions& options);

// Adds each valid physical id to counts[p] (counts has P entries). Load accounting.
void AccumulatePhysicalCounts(absl::Span<const int64_t> physical, absl::Span<int64_t> counts);

}  // namespace eplb

#endif  // EPLB_CORE_TOPK_POSTPROCESS_H_
