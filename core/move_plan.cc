#include "core/move_plan.h"

#include <algorithm>
#include <map>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace eplb {

const char* TransferKindName(TransferKind k) {
  switch (k) {
    case TransferKind::kLocal:
      return "local";
    case TransferKind::kAfterPeer:
      return "after_peer";
    case TransferKind::kPeer:
      return "peer";
  }
  return "unknown";
}

int64_t MovePlan::MaxRowsPerRank() const {
  std::map<int, int64_t> rows;
  int64_t most = 0;
  for (const Transfer& t : transfers) most = std::max(most, ++rows[t.dst_rank]);
  return most;
}

std::vector<Transfer> MovePlan::ForRank(int rank) const {
  std::vector<Transfer> out;
  for (const Transfer& t : transfers) {
    if (t.dst_rank == rank || (t.kind == TransferKind::kPeer && t.src_rank == rank)) {
      out.push_back(t);
    }
  }
  return out;
}

absl::StatusOr<MovePlan> BuildMovePlan(const ExpertLayout& layout, const PlacementMap& old_map,
                                       const PlacementMap& new_map,
                                       const std::vector<int>& dead_ranks) {
  for (const PlacementMap* m : {&old_map, &new_map}) {
    if (m->num_logical() != layout.num_logical() || m->num_physical() != layout.num_physical()) {
      return absl::InvalidArgumentError(
          absl::StrCat("map E=", m->num_logical(), " P=", m->num_physical(),
                       " does not match layout ", layout.DebugString()));
    }
  }
  if (old_map.num_layers() != new_map.num_layers()) {
    return absl::InvalidArgumentError(absl::StrCat("old map has ", old_map.num_layers(),
                                                   " layers, new map ", new_map.num_layers()));
  }
  std::vector<char> dead(layout.ep_size(), 0);
  for (int r : dead_ranks) {
    if (r < 0 || r >= layout.ep_size()) {
      return absl::InvalidArgumentError(absl::StrCat("dead rank ", r, " out of range"));
    }
    dead[r] = 1;
  }
  const int w = layout.ep_size();
  const int l_rows = layout.routed_slots_per_rank();
  MovePlan plan;
  for (int layer = 0; layer < new_map.num_layers(); ++layer) {
    const std::vector<int32_t>& before = old_map.physical_to_logical(layer);
    const std::vector<int32_t>& after = new_map.physical_to_logical(layer);
    // Sources: per expert, (rank, lowest row) of live ranks holding it under the old map.
    std::map<int32_t, std::vector<std::pair<int, int>>> sources;
    for (int r = 0; r < w; ++r) {
      if (dead[r]) continue;
      std::map<int32_t, int> first_row;
      for (int j = 0; j < l_rows; ++j) first_row.emplace(before[r * l_rows + j], j);
      for (const auto& [e, j] : first_row) sources[e].push_back({r, j});
    }
    std::map<std::pair<int32_t, int>, int> uses;  // (expert, source rank) -> receivers so far
    for (int r = 0; r < w; ++r) {
      if (dead[r]) continue;
      std::map<int32_t, int> received;  // expert -> first row of this rank receiving it
      for (int d = 0; d < l_rows; ++d) {
        const int32_t e = after[r * l_rows + d];
        if (before[r * l_rows + d] == e) continue;
        Transfer t;
        t.layer = layer;
        t.dst_rank = r;
        t.dst_row = d;
        t.expert = e;
        int local = -1;
        for (int j = 0; j < l_rows; ++j) {
          if (before[r * l_rows + j] == e) {
            local = j;
            break;
          }
        }
        if (local >= 0) {
          t.kind = TransferKind::kLocal;
          t.src_rank = r;
          t.src_row = local;
        } else if (auto it = received.find(e); it != received.end()) {
          t.kind = TransferKind::kAfterPeer;
          t.src_rank = r;
          t.src_row = it->second;
        } else {
          auto s = sources.find(e);
          if (s == sources.end()) {
            return absl::FailedPreconditionError(
                absl::StrCat("layer ", layer, ": expert ", e, " has no live source (every rank ",
                             "holding it is dead); load it from the checkpoint"));
          }
          // Same node first; least-used source, then lowest rank.
          const int node = layout.NodeOfRank(r);
          bool any_near = false;
          for (const auto& [sr, sj] : s->second) any_near |= layout.NodeOfRank(sr) == node;
          const std::pair<int, int>* best = nullptr;
          for (const auto& src : s->second) {
            if (any_near && layout.NodeOfRank(src.first) != node) continue;
            if (best == nullptr || uses[{e, src.first}] < uses[{e, best->first}]) best = &src;
          }
          ++uses[{e, best->first}];
          t.kind = TransferKind::kPeer;
          t.src_rank = best->first;
          t.src_row = best->second;
          received.emplace(e, d);
          ++plan.peer_transfers;
        }
        if (t.kind != TransferKind::kPeer) ++plan.local_copies;
        ++plan.rows_changed;
        plan.transfers.push_back(t);
      }
    }
  }
  return plan;
}

}  // namespace eplb
