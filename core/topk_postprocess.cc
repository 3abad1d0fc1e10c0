#include "core/topk_postprocess.h"

#include <climits>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace eplb {

PhysicalId DispatchOne(const PlacementMap& map, const StaticDispatch& tables,
                       const TopkOptions& options, int64_t row, int k, LogicalId e) {
  if (!e.valid()) return kNoPhysical;
  if (options.dispatch == DispatchMode::kStatic) {
    return tables.Lookup(options.rank, options.layer, e);
  }
  const std::vector<int32_t>& replicas = map.ReplicasOf(options.layer, e);
  const int i = DynamicReplicaIndex(row, k, options.rank, options.rank_invariant,
                                    static_cast<int>(replicas.size()));
  return PhysicalId(replicas[i]);
}

float SharedExpertWeight(const TopkOptions& options) {
  if (options.scaling_folded_into_routed || options.routed_scaling_factor == 0.0) return 1.0f;
  return static_cast<float>(1.0 / options.routed_scaling_factor);
}

void RemapToSlots(const ExpertLayout& layout, absl::Span<const int64_t> physical, int top_k,
                  absl::Span<const int32_t> shared_rank, absl::Span<const float> routed_weights,
                  float shared_weight, std::vector<int64_t>& slots, std::vector<float>& weights) {
  const int s_count = layout.num_shared();
  const int width = top_k + s_count;
  const size_t n = shared_rank.size();
  slots.assign(n * width, -1);
  weights.assign(n * width, 0.0f);
  for (size_t t = 0; t < n; ++t) {
    for (int k = 0; k < top_k; ++k) {
      const PhysicalId p(physical[t * top_k + k]);
      slots[t * width + k] = layout.SlotOf(p).value();
      if (p.valid())
        weights[t * width + k] = routed_weights.empty() ? 1.0f : routed_weights[t * top_k + k];
    }
    for (int s = 0; s < s_count; ++s) {
      if (shared_rank[t] < 0) continue;
      slots[t * width + top_k + s] = layout.SharedSlot(shared_rank[t], s).value();
      weights[t * width + top_k + s] = shared_weight;
    }
  }
}

void AccumulatePhysicalCounts(absl::Span<const int64_t> physical, absl::Span<int64_t> counts) {
  for (int64_t p : physical) {
    if (p >= 0) ++counts[p];
  }
}

absl::StatusOr<TopkResult> PostprocessTopk(const ExpertLayout& layout, const PlacementMap& map,
                                           const StaticDispatch& tables, const TopkOptions& options,
                                           absl::Span<const int64_t> logical_ids,
                                           absl::Span<const float> routed_weights) {
  const int k_count = options.top_k;
  if (k_count <= 0 || logical_ids.size() % k_count != 0) {
    return absl::InvalidArgumentError(absl::StrCat("top-k ids have ", logical_ids.size(),
                                                   " entries; expected a multiple of K=", k_count));
  }
  if (!routed_weights.empty() && routed_weights.size() != logical_ids.size()) {
    return absl::InvalidArgumentError(absl::StrCat("routed weights have ", routed_weights.size(),
                                                   " entries; expected ", logical_ids.size()));
  }
  if (options.rank < 0 || options.rank >= layout.ep_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", options.rank, " out of range [0, ", layout.ep_size(), ")"));
  }
  if (options.layer < 0 || options.layer >= map.num_layers()) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", options.layer, " out of range [0, ", map.num_layers(), ")"));
  }
  if (options.dispatch == DispatchMode::kStatic &&
      (tables.ep_size() != layout.ep_size() || tables.num_layers() != map.num_layers())) {
    return absl::InvalidArgumentError("static dispatch tables do not match the layout and map");
  }
  TopkResult out;
  out.top_k = k_count;
  out.num_shared = layout.num_shared();
  out.num_tokens = static_cast<int>(logical_ids.size() / k_count);
  out.physical.resize(logical_ids.size());
  for (size_t i = 0; i < logical_ids.size(); ++i) {
    const int64_t e = logical_ids[i];
    if (e >= layout.num_logical()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "logical id ", e, " at token ", i / k_count, " is out of range; expected [0, ",
          layout.num_logical(), ") or negative padding"));
    }
    out.physical[i] = DispatchOne(map, tables, options, static_cast<int64_t>(i / k_count),
                                  static_cast<int>(i % k_count), LogicalId(e < 0 ? -1 : e))
                          .value();
  }
  out.plan = StaticPlan(CountRoutedPerRank(layout, out.physical), k_count);
  // Without Waterfill every batch is "too small to balance": the shared expert stays on the
  // source rank, and tokens with no valid routed id get none (the same rule as below 64).
  const bool balance = layout.num_shared() > 0 && options.waterfill_enabled;
  out.shared_rank =
      AssignSharedRanks(layout, out.physical, k_count, options.rank, out.plan, options.waterfill,
                        balance ? options.waterfill_min_batch : INT_MAX);
  RemapToSlots(layout, out.physical, k_count, out.shared_rank, routed_weights,
               SharedExpertWeight(options), out.slots, out.weights);
  return out;
}

}  // namespace eplb
