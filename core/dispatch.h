// Logical-to-physical dispatch (spec/DOMAIN.md section 6).
//
// Static: one table [layer][E] per rank. A rank uses its own replica if it has one (the lowest
// physical id among its own), else one on its node, else a remote one. Ranks that need a node
// replica are spread over the node's replicas, and ranks with no near replica over all replicas,
// round-robin in ascending rank order, so the table is a pure function of (layout, map, rank)
// and every rank computes the same tables.
//
//   EPLB_ASSIGN_OR_RETURN(StaticDispatch tables, StaticDispatch::Build(layout, map));
//   PhysicalId p = tables.Lookup(rank, layer, LogicalId(e));
//
// Dynamic: a replica of `e` is picked per (token row, k) by a stateless hash. With
// `rank_invariant` the pick ignores the rank, so ranks that compute the same tokens without an
// all-to-all agree (a rank-dependent pick there double-counts outputs silently).
#ifndef EPLB_CORE_DISPATCH_H_
#define EPLB_CORE_DISPATCH_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "core/expert_layout.h"
#include "core/host_device.h"
#include "core/ids.h"
#include "core/placement_map.h"

namespace eplb {

// The static table of one rank and layer: entry e is the physical id that rank uses for e.
// Fails if layout and map disagree on E or P, or rank/layer are out of range.
absl::StatusOr<std::vector<int32_t>> BuildStaticDispatchRow(const ExpertLayout& layout,
                                                            const PlacementMap& map, int layer,
                                                            int rank);

// All ranks' static tables, built in one pass (same result as BuildStaticDispatchRow per rank).
class StaticDispatch {
 public:
  static absl::StatusOr<StaticDispatch> Build(const ExpertLayout& layout, const PlacementMap& map);

  int ep_size() const { return ep_size_; }
  int num_layers() const { return num_layers_; }
  int num_logical() const { return num_logical_; }
  // Preconditions: indices in range; e valid.
  PhysicalId Lookup(int rank, int layer, LogicalId e) const {
    return PhysicalId(table_[Index(rank, layer) + e.value()]);
  }
  // Row [E] of (rank, layer), contiguous.
  const int32_t* Row(int rank, int layer) const { return table_.data() + Index(rank, layer); }

 private:
  size_t Index(int rank, int layer) const {
    return (static_cast<size_t>(rank) * num_layers_ + layer) * num_logical_;
  }
  int ep_size_ = 0;
  int num_layers_ = 0;
  int num_logical_ = 0;
  std::vector<int32_t> table_;  // [W][layers][E]
};

// 32-bit mixing hash shared by the CPU reference and the kernels (murmur3 finalizer).
EPLB_HOST_DEVICE inline uint32_t Mix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85EBCA6Bu;
  h ^= h >> 13;
  h *= 0xC2B2AE35u;
  h ^= h >> 16;
  return h;
}

// Index in [0, num_replicas) of the replica a dynamic dispatch picks for (row, k). The pick
// depends on the rank only when !rank_invariant. Precondition: num_replicas > 0.
EPLB_HOST_DEVICE inline int DynamicReplicaIndex(int64_t row, int k, int rank, bool rank_invariant,
                                                int num_replicas) {
  uint32_t h = static_cast<uint32_t>(row) * 0x9E3779B9u ^ static_cast<uint32_t>(k) * 0x7FEB352Du;
  if (!rank_invariant) h ^= static_cast<uint32_t>(rank + 1) * 0x846CA68Bu;
  return static_cast<int>(Mix32(h) % static_cast<uint32_t>(num_replicas));
}

}  // namespace eplb

#endif  // EPLB_CORE_DISPATCH_H_
