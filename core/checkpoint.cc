#include "core/checkpoint.h"

#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace eplb {

absl::StatusOr<std::vector<CheckpointTarget>> CheckpointTargets(const ExpertLayout& layout,
                                                                const PlacementMap* map, int layer,
                                                                int64_t checkpoint_id) {
  std::vector<CheckpointTarget> out;
  if (layout.IsSharedCheckpointId(checkpoint_id)) {
    const int s = static_cast<int>(checkpoint_id - layout.num_logical());
    for (int r = 0; r < layout.ep_size(); ++r) {
      out.push_back({r, layout.routed_slots_per_rank() + s, layout.SharedSlot(r, s), true});
    }
    return out;
  }
  if (checkpoint_id < 0 || checkpoint_id >= layout.num_logical()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint expert id ", checkpoint_id, " is out of range; expected routed ids [0, ",
        layout.num_logical(), ") or shared ids [", layout.num_logical(), ", ",
        layout.num_logical() + layout.num_shared(), ")"));
  }
  if (map == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "routed checkpoint expert ", checkpoint_id, " needs a placement map to find its replicas"));
  }
  if (map->num_logical() != layout.num_logical() || map->num_physical() != layout.num_physical()) {
    return absl::InvalidArgumentError(
        absl::StrCat("placement map E=", map->num_logical(), " P=", map->num_physical(),
                     " does not match layout ", layout.DebugString()));
  }
  if (layer < 0 || layer >= map->num_layers()) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", layer, " out of range [0, ", map->num_layers(), ")"));
  }
  for (int32_t p : map->ReplicasOf(layer, LogicalId(checkpoint_id))) {
    const PhysicalId id(p);
    out.push_back({layout.OwnerRank(id), layout.LocalRow(id), layout.SlotOf(id), false});
  }
  return out;
}

int64_t CheckpointIdOfRow(const ExpertLayout& layout, const PlacementMap& map, int layer, int rank,
                          int local_row) {
  const int l = layout.routed_slots_per_rank();
  if (local_row < l) return map.LogicalOf(layer, layout.PhysicalAt(rank, local_row)).value();
  return layout.num_logical() + (local_row - l);
}

}  // namespace eplb
