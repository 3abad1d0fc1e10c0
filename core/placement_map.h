// PlacementMap: the one source of truth of a placement, `physical_to_logical[layer][p] = e`
// (spec/DOMAIN.md section 2), with everything that derives from it.
//
//   EPLB_ASSIGN_OR_RETURN(PlacementMap map,
//                         PlacementMap::Create(/*num_logical=*/4, /*num_physical=*/6,
//                                              {{0, 1, 2, 3, 0, 0}}));
//   map.ReplicaCount(0, LogicalId(0));   // 3
//   map.ReplicasOf(0, LogicalId(0));     // {0, 4, 5}: ascending physical id
//
// Replica order: every derived list of the physical ids of one logical expert is in ascending
// physical id (the order newer vLLM uses). It is stable under any relabelling that keeps the
// physical ids, and it is the order `logical_to_all_physical` is written in. (The placement
// engine's `deepseek` mode writes its own map in DeepSeek's replica-rank order; see
// eplb_controller/placement.)
//
// Immutable after Create; thread-safe for concurrent readers.
#ifndef EPLB_CORE_PLACEMENT_MAP_H_
#define EPLB_CORE_PLACEMENT_MAP_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/ids.h"

namespace eplb {

class PlacementMap {
 public:
  // Validates shape ([layers][num_physical], at least one layer), ids in [0, num_logical) and
  // that every logical expert of every layer has at least one replica. Errors name the layer,
  // the physical id and the value.
  static absl::StatusOr<PlacementMap> Create(int num_logical, int num_physical,
                                             std::vector<std::vector<int32_t>> physical_to_logical);

  // The trivial map: physical p holds logical p % E on every layer.
  static PlacementMap Identity(int num_layers, int num_logical, int num_physical);

  int num_layers() const { return static_cast<int>(physical_to_logical_.size()); }
  int num_logical() const { return num_logical_; }
  int num_physical() const { return num_physical_; }

  // Preconditions: 0 <= layer < num_layers(), p valid and < num_physical().
  LogicalId LogicalOf(int layer, PhysicalId p) const {
    return LogicalId(physical_to_logical_[layer][p.value()]);
  }
  const std::vector<int32_t>& physical_to_logical(int layer) const {
    return physical_to_logical_[layer];
  }
  const std::vector<std::vector<int32_t>>& physical_to_logical() const {
    return physical_to_logical_;
  }

  int ReplicaCount(int layer, LogicalId e) const {
    return static_cast<int>(replicas_[layer][e.value()].size());
  }
  // Physical ids of `e`, ascending.
  const std::vector<int32_t>& ReplicasOf(int layer, LogicalId e) const {
    return replicas_[layer][e.value()];
  }
  // replica_count[layer][e].
  std::vector<std::vector<int32_t>> ReplicaCounts() const;
  // Largest replica count over all layers and experts.
  int max_replicas() const { return max_replicas_; }
  // logical_to_all_physical[layer][e][i], -1 padded to max_replicas() (ascending physical id).
  std::vector<std::vector<std::vector<int32_t>>> LogicalToAllPhysical() const;

  // Logical counts of one layer from per-physical counts measured under this map.
  // Precondition: physical_counts.size() == num_physical().
  std::vector<double> ToLogicalCounts(int layer, absl::Span<const double> physical_counts) const;

  // Layers whose rows differ between the two maps (same shape required).
  std::vector<int> ChangedLayers(const PlacementMap& other) const;

  friend bool operator==(const PlacementMap& a, const PlacementMap& b) {
    return a.num_logical_ == b.num_logical_ && a.num_physical_ == b.num_physical_ &&
           a.physical_to_logical_ == b.physical_to_logical_;
  }
  friend bool operator!=(const PlacementMap& a, const PlacementMap& b) { return !(a == b); }

 private:
  PlacementMap(int num_logical, int num_physical, std::vector<std::vector<int32_t>> p2l);

  int num_logical_ = 0;
  int num_physical_ = 0;
  int max_replicas_ = 0;
  std::vector<std::vector<int32_t>> physical_to_logical_;    // [layer][P]
  std::vector<std::vector<std::vector<int32_t>>> replicas_;  // [layer][E][count]
};

}  // namespace eplb

#endif  // EPLB_CORE_PLACEMENT_MAP_H_
