// Move plan: which expert weights move where when the physical map changes (spec/DOMAIN.md §9).
//
// For each rank and each routed local row d whose expert changes from old[d] to e = new[d]:
//   * kLocal      e is already on this GPU under the old map: copy from that (live) row;
//   * kAfterPeer  an earlier row of this rank receives e from a peer in this layer: copy from it
//                 once the transfers are done (one transfer per expert per GPU);
//   * kPeer       receive e from a rank that holds it under the old map: a source on the same
//                 node if any, and receivers spread evenly over the sources (least-used first,
//                 then lowest rank).
// Rows that keep their expert get no entry; shared rows are never part of a plan. The plan is a
// pure function of (layout, old map, new map, dead ranks), so every rank computes the same one
// and sends and receives pair up without negotiation.
//
//   EPLB_ASSIGN_OR_RETURN(MovePlan plan, BuildMovePlan(layout, old_map, new_map, {}));
//   for (const Transfer& t : plan.transfers) ...   // ordered by (layer, dst_rank, dst_row)
#ifndef EPLB_CORE_MOVE_PLAN_H_
#define EPLB_CORE_MOVE_PLAN_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "core/expert_layout.h"
#include "core/placement_map.h"

namespace eplb {

enum class TransferKind { kLocal, kAfterPeer, kPeer };

const char* TransferKindName(TransferKind k);

struct Transfer {
  int layer = 0;
  int dst_rank = 0;
  int dst_row = 0;     // routed local row in [0, L)
  int32_t expert = 0;  // logical id moving in
  TransferKind kind = TransferKind::kLocal;
  int src_rank = 0;
  int src_row = 0;  // kLocal/kPeer: a row holding `expert` under the old map; kAfterPeer: the
                    // earlier destination row of the same rank
  friend bool operator==(const Transfer& a, const Transfer& b) {
    return a.layer == b.layer && a.dst_rank == b.dst_rank && a.dst_row == b.dst_row &&
           a.expert == b.expert && a.kind == b.kind && a.src_rank == b.src_rank &&
           a.src_row == b.src_row;
  }
};

struct MovePlan {
  std::vector<Transfer> transfers;  // sorted by (layer, dst_rank, dst_row)
  int64_t rows_changed = 0;
  int64_t peer_transfers = 0;
  int64_t local_copies = 0;

  // The entries a rank takes part in: as receiver (dst_rank) or as peer source (src_rank).
  std::vector<Transfer> ForRank(int rank) const;
  // The most rows any one rank receives (its staging need for the whole plan). The same on
  // every rank, so a capacity check against it fails everywhere or nowhere.
  int64_t MaxRowsPerRank() const;
};

// Fails when the maps' shapes differ from the layout's, or an expert that must be received has
// no live source (every rank holding it is dead): FailedPrecondition naming layer and expert.
absl::StatusOr<MovePlan> BuildMovePlan(const ExpertLayout& layout, const PlacementMap& old_map,
                                       const PlacementMap& new_map,
                                       const std::vector<int>& dead_ranks);

}  // namespace eplb

#endif  // EPLB_CORE_MOVE_PLAN_H_
