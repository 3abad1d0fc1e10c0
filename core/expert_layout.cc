#include "core/expert_layout.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace eplb {

std::vector<int> NearestValidRedundant(int num_logical, int num_redundant, int ep_size) {
  std::vector<int> out;
  if (ep_size <= 0 || num_logical < 0) return out;
  const int rem = (num_logical + num_redundant) % ep_size;
  const int below = num_redundant - rem;
  const int above = rem == 0 ? num_redundant : num_redundant + (ep_size - rem);
  if (below >= 0) out.push_back(below);
  if (above != below) out.push_back(above);
  return out;
}

absl::StatusOr<ExpertLayout> ExpertLayout::Create(const LayoutConfig& c) {
  if (c.num_logical <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_logical E=", c.num_logical, " must be positive"));
  }
  if (c.num_redundant < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_redundant R=", c.num_redundant, " must be >= 0"));
  }
  if (c.ep_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("ep_size W=", c.ep_size, " must be positive"));
  }
  if (c.num_shared < 0) {
    return absl::InvalidArgumentError(absl::StrCat("num_shared S=", c.num_shared, " must be >= 0"));
  }
  if (c.num_nodes <= 0 || c.ep_size % c.num_nodes != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "num_nodes N=", c.num_nodes, " must be positive and divide ep_size W=", c.ep_size));
  }
  const int64_t physical = static_cast<int64_t>(c.num_logical) + c.num_redundant;
  if (physical % c.ep_size != 0) {
    const std::vector<int> valid = NearestValidRedundant(c.num_logical, c.num_redundant, c.ep_size);
    return absl::InvalidArgumentError(
        absl::StrCat("num_physical P = E + R = ", c.num_logical, " + ", c.num_redundant, " = ",
                     physical, " is not divisible by ep_size W=", c.ep_size,
                     "; try num_redundant R=", absl::StrJoin(valid, " or R=")));
  }
  if (physical / c.ep_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("num_physical P=", physical,
                                                   " is smaller than ep_size W=", c.ep_size,
                                                   "; every rank needs at least one routed row"));
  }
  if (physical > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError(absl::StrCat("num_physical P=", physical, " is too large"));
  }
  return ExpertLayout(c);
}

SlotContents ExpertLayout::Describe(SlotId slot) const {
  SlotContents out;
  out.rank = static_cast<int>(slot.value() / slots_per_rank());
  out.local_row = static_cast<int>(slot.value() % slots_per_rank());
  if (out.local_row >= routed_slots_per_rank()) {
    out.shared = true;
    out.shared_index = out.local_row - routed_slots_per_rank();
  } else {
    out.physical = PhysicalAt(out.rank, out.local_row);
  }
  return out;
}

std::string ExpertLayout::DebugString() const {
  return absl::StrCat("E=", num_logical(), " R=", num_redundant(), " P=", num_physical(),
                      " W=", ep_size(), " L=", routed_slots_per_rank(), " S=", num_shared(),
                      " N=", num_nodes());
}

}  // namespace eplb
