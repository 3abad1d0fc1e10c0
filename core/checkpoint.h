// Checkpoint placement (spec/DOMAIN.md section 7.2): where the weights of one checkpoint expert
// must be loaded.
//
//   checkpoint id x in [0, E)        routed: every physical replica of x, on its owner rank and
//                                     local row (two replicas on one GPU: both rows);
//   checkpoint id x = E + s, s < S    fused shared: row L + s on every rank, global slots
//                                     r * (L + S) + L + s.
//
// The shared test compares x against the logical count E. (Testing x >= P was the old bug: at
// E=8, R=2 the shared expert 8 was taken for routed expert 8 and row 5 never got its weights.)
//
//   EPLB_ASSIGN_OR_RETURN(std::vector<CheckpointTarget> t,
//                         CheckpointTargets(layout, &map, /*layer=*/0, /*checkpoint_id=*/8));
#ifndef EPLB_CORE_CHECKPOINT_H_
#define EPLB_CORE_CHECKPOINT_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "core/expert_layout.h"
#include "core/ids.h"
#include "core/placement_map.h"

namespace eplb {

struct CheckpointTarget {
  int rank = 0;
  int local_row = 0;  // row in the rank's [L routed, S shared] expert table
  SlotId slot;        // global slot id
  bool shared = false;
};

// Targets in ascending slot order. `map` may be null for shared ids; routed ids need it.
absl::StatusOr<std::vector<CheckpointTarget>> CheckpointTargets(const ExpertLayout& layout,
                                                                const PlacementMap* map, int layer,
                                                                int64_t checkpoint_id);

// The inverse for one row: the checkpoint id whose weights row `local_row` of `rank` holds under
// `map` (a routed row: the map's expert there; shared row L + s: E + s). Preconditions: rank and
// row in range for the layout, layer for the map.
int64_t CheckpointIdOfRow(const ExpertLayout& layout, const PlacementMap& map, int layer, int rank,
                          int local_row);

}  // namespace eplb

#endif  // EPLB_CORE_CHECKPOINT_H_
