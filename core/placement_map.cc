#include "core/placement_map.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace eplb {

absl::StatusOr<PlacementMap> PlacementMap::Create(
    int num_logical, int num_physical, std::vector<std::vector<int32_t>> physical_to_logical) {
  if (num_logical <= 0 || num_physical < num_logical) {
    return absl::InvalidArgumentError(absl::StrCat("placement needs 0 < num_logical (", num_logical,
                                                   ") <= num_physical (", num_physical, ")"));
  }
  if (physical_to_logical.empty()) {
    return absl::InvalidArgumentError("placement has no layers; expected shape [layers][P]");
  }
  for (size_t layer = 0; layer < physical_to_logical.size(); ++layer) {
    const auto& row = physical_to_logical[layer];
    if (static_cast<int>(row.size()) != num_physical) {
      return absl::InvalidArgumentError(
          absl::StrCat("placement layer ", layer, " has ", row.size(),
                       " physical entries; expected P=", num_physical));
    }
    std::vector<char> seen(num_logical, 0);
    for (int p = 0; p < num_physical; ++p) {
      if (row[p] < 0 || row[p] >= num_logical) {
        return absl::InvalidArgumentError(
            absl::StrCat("placement layer ", layer, " physical ", p, " holds logical id ", row[p],
                         "; expected a value in [0, ", num_logical, ")"));
      }
      seen[row[p]] = 1;
    }
    for (int e = 0; e < num_logical; ++e) {
      if (!seen[e]) {
        return absl::InvalidArgumentError(
            absl::StrCat("placement layer ", layer, " has no replica of logical expert ", e,
                         "; every expert needs at least one physical slot"));
      }
    }
  }
  return PlacementMap(num_logical, num_physical, std::move(physical_to_logical));
}

PlacementMap PlacementMap::Identity(int num_layers, int num_logical, int num_physical) {
  std::vector<std::vector<int32_t>> rows(num_layers, std::vector<int32_t>(num_physical));
  for (auto& row : rows) {
    for (int p = 0; p < num_physical; ++p) row[p] = p % num_logical;
  }
  return PlacementMap(num_logical, num_physical, std::move(rows));
}

PlacementMap::PlacementMap(int num_logical, int num_physical, std::vector<std::vector<int32_t>> p2l)
    : num_logical_(num_logical), num_physical_(num_physical), physical_to_logical_(std::move(p2l)) {
  replicas_.resize(physical_to_logical_.size());
  for (size_t layer = 0; layer < physical_to_logical_.size(); ++layer) {
    auto& lists = replicas_[layer];
    lists.assign(num_logical_, {});
    const auto& row = physical_to_logical_[layer];
    for (int p = 0; p < num_physical_; ++p) lists[row[p]].push_back(p);
    for (const auto& list : lists) {
      max_replicas_ = std::max(max_replicas_, static_cast<int>(list.size()));
    }
  }
}

std::vector<std::vector<int32_t>> PlacementMap::ReplicaCounts() const {
  std::vector<std::vector<int32_t>> out(num_layers(), std::vector<int32_t>(num_logical_));
  for (int layer = 0; layer < num_layers(); ++layer) {
    for (int e = 0; e < num_logical_; ++e) {
      out[layer][e] = static_cast<int32_t>(replicas_[layer][e].size());
    }
  }
  return out;
}

std::vector<std::vector<std::vector<int32_t>>> PlacementMap::LogicalToAllPhysical() const {
  std::vector<std::vector<std::vector<int32_t>>> out(num_layers());
  for (int layer = 0; layer < num_layers(); ++layer) {
    out[layer].resize(num_logical_);
    for (int e = 0; e < num_logical_; ++e) {
      auto& padded = out[layer][e];
      padded = replicas_[layer][e];
      padded.resize(max_replicas_, -1);
    }
  }
  return out;
}

std::vector<double> PlacementMap::ToLogicalCounts(int layer,
                                                  absl::Span<const double> physical_counts) const {
  std::vector<double> out(num_logical_, 0.0);
  const auto& row = physical_to_logical_[layer];
  for (int p = 0; p < num_physical_; ++p) out[row[p]] += physical_counts[p];
  return out;
}

std::vector<int> PlacementMap::ChangedLayers(const PlacementMap& other) const {
  std::vector<int> out;
  const int n = std::min(num_layers(), other.num_layers());
  for (int layer = 0; layer < n; ++layer) {
    if (physical_to_logical_[layer] != other.physical_to_logical_[layer]) out.push_back(layer);
  }
  for (int layer = n; layer < std::max(num_layers(), other.num_layers()); ++layer) {
    out.push_back(layer);
  }
  return out;
}

}  // namespace eplb
