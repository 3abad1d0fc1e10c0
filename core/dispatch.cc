#include "core/dispatch.h"

#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace eplb {
namespace {

absl::Status CheckCompatible(const ExpertLayout& layout, const PlacementMap& map) {
  if (layout.num_logical() != map.num_logical() || layout.num_physical() != map.num_physical()) {
    return absl::InvalidArgumentError(
        absl::StrCat("placement map has E=", map.num_logical(), " P=", map.num_physical(),
                     " but the layout has E=", layout.num_logical(), " P=", layout.num_physical()));
  }
  return absl::OkStatus();
}

// Fills out[rank] for every rank for one (layer, e). `own`, `near` are scratch buffers.
void DispatchAllRanks(const ExpertLayout& layout, const std::vector<int32_t>& replicas,
                      std::vector<int32_t>& out) {
  const int w = layout.ep_size();
  const int rpn = layout.ranks_per_node();
  out.assign(w, -1);
  // Own replica: the lowest physical id on the rank (replicas are ascending).
  for (auto it = replicas.rbegin(); it != replicas.rend(); ++it) {
    out[layout.OwnerRank(PhysicalId(*it))] = *it;
  }
  std::vector<int32_t> node_replicas;
  std::vector<int> far_ranks;
  for (int node = 0; node < layout.num_nodes(); ++node) {
    node_replicas.clear();
    for (int32_t p : replicas) {
      if (layout.NodeOfRank(layout.OwnerRank(PhysicalId(p))) == node) node_replicas.push_back(p);
    }
    int next = 0;
    for (int r = node * rpn; r < (node + 1) * rpn; ++r) {
      if (out[r] >= 0) continue;
      if (node_replicas.empty()) {
        far_ranks.push_back(r);
      } else {
        out[r] = node_replicas[next++ % node_replicas.size()];
      }
    }
  }
  for (size_t i = 0; i < far_ranks.size(); ++i) out[far_ranks[i]] = replicas[i % replicas.size()];
}

}  // namespace

absl::StatusOr<std::vector<int32_t>> BuildStaticDispatchRow(const ExpertLayout& layout,
                                                            const PlacementMap& map, int layer,
                                                            int rank) {
  if (absl::Status s = CheckCompatible(layout, map); !s.ok()) return s;
  if (layer < 0 || layer >= map.num_layers()) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", layer, " out of range; the map has ", map.num_layers(), " layers"));
  }
  if (rank < 0 || rank >= layout.ep_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", rank, " out of range [0, ", layout.ep_size(), ")"));
  }
  std::vector<int32_t> row(layout.num_logical());
  std::vector<int32_t> all_ranks;
  for (int e = 0; e < layout.num_logical(); ++e) {
    DispatchAllRanks(layout, map.ReplicasOf(layer, LogicalId(e)), all_ranks);
    row[e] = all_ranks[rank];
  }
  return row;
}

absl::StatusOr<StaticDispatch> StaticDispatch::Build(const ExpertLayout& layout,
                                                     const PlacementMap& map) {
  if (absl::Status s = CheckCompatible(layout, map); !s.ok()) return s;
  StaticDispatch out;
  out.ep_size_ = layout.ep_size();
  out.num_layers_ = map.num_layers();
  out.num_logical_ = layout.num_logical();
  out.table_.resize(static_cast<size_t>(out.ep_size_) * out.num_layers_ * out.num_logical_);
  std::vector<int32_t> all_ranks;
  for (int layer = 0; layer < out.num_layers_; ++layer) {
    for (int e = 0; e < out.num_logical_; ++e) {
      DispatchAllRanks(layout, map.ReplicasOf(layer, LogicalId(e)), all_ranks);
      for (int r = 0; r < out.ep_size_; ++r) out.table_[out.Index(r, layer) + e] = all_ranks[r];
    }
  }
  return out;
}

}  // namespace eplb
