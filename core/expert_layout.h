// ExpertLayout: the shape of an expert-parallel MoE deployment and every index computation
// derived from it (spec/DOMAIN.md sections 1 and 7). Immutable and validated at construction.
//
//   EPLB_ASSIGN_OR_RETURN(ExpertLayout layout,
//                         ExpertLayout::Create({.num_logical = 256, .num_redundant = 32,
//                                               .ep_size = 16, .num_shared = 1, .num_nodes = 2}));
//   layout.routed_slots_per_rank();       // L = (E + R) / W = 18, never E / W
//   layout.SlotOf(PhysicalId(287));       // SlotId 302
//   layout.SharedSlot(/*rank=*/3);        // SlotId 75
//
// Thread-safe: all methods are const. Cheap to copy.
#ifndef EPLB_CORE_EXPERT_LAYOUT_H_
#define EPLB_CORE_EXPERT_LAYOUT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/ids.h"

namespace eplb {

struct LayoutConfig {
  int num_logical = 0;    // E: routed experts the router picks
  int num_redundant = 0;  // R: extra physical replicas
  int ep_size = 0;        // W: expert-parallel ranks, one GPU each
  int num_shared = 0;     // S: fused shared experts per rank (0 or 1 in practice)
  int num_nodes = 1;      // N: nodes; W % N == 0
};

// Where one row of expert weights lives: a rank and a row of its local expert table.
struct RankRow {
  int rank = 0;
  int local_row = 0;
  friend bool operator==(const RankRow& a, const RankRow& b) {
    return a.rank == b.rank && a.local_row == b.local_row;
  }
};

// What a slot id holds.
struct SlotContents {
  int rank = 0;
  int local_row = 0;
  bool shared = false;
  PhysicalId physical = kNoPhysical;  // valid iff !shared
  int shared_index = -1;              // s in [0, S) iff shared
};

class ExpertLayout {
 public:
  // Validates the configuration. On a divisibility violation the message names the values and
  // the nearest valid choices, e.g. "num_redundant R=30 ... try R=16 or R=32".
  static absl::StatusOr<ExpertLayout> Create(const LayoutConfig& config);

  const LayoutConfig& config() const { return config_; }
  int num_logical() const { return config_.num_logical; }
  int num_redundant() const { return config_.num_redundant; }
  int num_physical() const { return config_.num_logical + config_.num_redundant; }
  int ep_size() const { return config_.ep_size; }
  int num_shared() const { return config_.num_shared; }
  int num_nodes() const { return config_.num_nodes; }
  int ranks_per_node() const { return config_.ep_size / config_.num_nodes; }

  // L = P / W: routed rows per rank.
  int routed_slots_per_rank() const { return num_physical() / config_.ep_size; }
  // L + S: rows per rank in the slot space (routed rows first, then shared rows).
  int slots_per_rank() const { return routed_slots_per_rank() + config_.num_shared; }
  // W * (L + S) = P + W * S: size of the all-to-all slot space.
  int num_slots() const { return slots_per_rank() * config_.ep_size; }

  bool Contains(LogicalId e) const { return e.value() >= 0 && e.value() < num_logical(); }
  bool Contains(PhysicalId p) const { return p.value() >= 0 && p.value() < num_physical(); }
  bool Contains(SlotId s) const { return s.value() >= 0 && s.value() < num_slots(); }

  // Owner rank and local row of a physical id. Precondition: Contains(p).
  int OwnerRank(PhysicalId p) const {
    return static_cast<int>(p.value() / routed_slots_per_rank());
  }
  int LocalRow(PhysicalId p) const { return static_cast<int>(p.value() % routed_slots_per_rank()); }
  RankRow RowOf(PhysicalId p) const { return {OwnerRank(p), LocalRow(p)}; }
  PhysicalId PhysicalAt(int rank, int local_row) const {
    return PhysicalId(static_cast<int64_t>(rank) * routed_slots_per_rank() + local_row);
  }
  int NodeOfRank(int rank) const { return rank / ranks_per_node(); }

  // Routed slot: p + (p / L) * S. Padding (negative) stays padding.
  SlotId SlotOf(PhysicalId p) const {
    if (!p.valid()) return SlotId(p.value());
    return SlotId(p.value() + (p.value() / routed_slots_per_rank()) * config_.num_shared);
  }
  // Shared slot s of `rank`: rank * (L + S) + L + s. Precondition: 0 <= s < S.
  SlotId SharedSlot(int rank, int s = 0) const {
    return SlotId(static_cast<int64_t>(rank) * slots_per_rank() + routed_slots_per_rank() + s);
  }
  // Inverse of SlotOf / SharedSlot. Precondition: Contains(slot).
  SlotContents Describe(SlotId slot) const;

  // Checkpoint ids: routed experts are [0, E), fused shared experts are E + s for s in [0, S).
  // The test compares against the *logical* count E (comparing against P is the old bug).
  bool IsSharedCheckpointId(int64_t checkpoint_id) const {
    return checkpoint_id >= num_logical() && checkpoint_id < num_logical() + num_shared();
  }

  // One-line summary for logs: "E=256 R=32 P=288 W=16 L=18 S=1 N=2".
  std::string DebugString() const;

 private:
  explicit ExpertLayout(const LayoutConfig& config) : config_(config) {}
  LayoutConfig config_;
};

// Nearest R' >= 0 below and above `num_redundant` with (E + R') % W == 0 (deduplicated, ascending).
std::vector<int> NearestValidRedundant(int num_logical, int num_redundant, int ep_size);

}  // namespace eplb

#endif  // EPLB_CORE_EXPERT_LAYOUT_H_
