#include "eplb_controller/placement/deepseek.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

namespace eplb {
namespace placement {
namespace {

struct Replicated {
  std::vector<int> phy2log;  // [num_phy]
  std::vector<int> rank;     // [num_phy]
  std::vector<int> count;    // [n]
};

// Each extra replica goes to the expert with the largest weight / count (first maximum).
Replicated Replicate(const std::vector<float>& weight, int num_phy) {
  const int n = static_cast<int>(weight.size());
  Replicated r;
  r.phy2log.resize(num_phy);
  r.rank.assign(num_phy, 0);
  r.count.assign(n, 1);
  std::iota(r.phy2log.begin(), r.phy2log.begin() + n, 0);
  // weight / count per expert, kept up to date (only the chosen expert's changes per step).
  std::vector<float> per(weight.begin(), weight.end());
  for (int i = n; i < num_phy; ++i) {
    int best = 0;
    float best_v = per[0];
    for (int j = 1; j < n; ++j) {
      const bool more = per[j] > best_v;
      best = more ? j : best;
      best_v = more ? per[j] : best_v;
    }
    r.phy2log[i] = best;
    r.rank[i] = r.count[best];
    ++r.count[best];
    per[best] = weight[best] / static_cast<float>(r.count[best]);
  }
  return r;
}

std::vector<int> Inverse(const std::vector<int>& perm) {
  std::vector<int> inv(perm.size());
  for (size_t i = 0; i < perm.size(); ++i) inv[perm[i]] = static_cast<int>(i);
  return inv;
}

}  // namespace

void BalancedPacking(const std::vector<float>& weight, int num_packs, std::vector<int>& pack,
                     std::vector<int>& rank_in_pack) {
  const int n = static_cast<int>(weight.size());
  const int per_pack = n / num_packs;
  pack.assign(n, -1);
  rank_in_pack.assign(n, -1);
  if (per_pack == 1) {
    std::iota(pack.begin(), pack.end(), 0);
    std::fill(rank_in_pack.begin(), rank_in_pack.end(), 0);
    return;
  }
  // Heaviest first, ties by lower index (a stable sort's order), sorted as 64-bit keys: the
  // weight's bits (monotonic for non-negative floats) inverted, then the index.
  std::vector<uint64_t> keys(n);
  for (int i = 0; i < n; ++i) {
    uint32_t bits;
    const float w = weight[i] == 0.0f ? 0.0f : weight[i];  // -0 sorts as 0
    std::memcpy(&bits, &w, sizeof(bits));
    keys[i] = (static_cast<uint64_t>(~bits) << 32) | static_cast<uint32_t>(i);
  }
  std::sort(keys.begin(), keys.end());
  std::vector<float> pack_weight(num_packs, 0.0f);
  std::vector<int> pack_items(num_packs, 0);
  constexpr float kFull = std::numeric_limits<float>::infinity();
  for (uint64_t key : keys) {
    const int item = static_cast<int>(key & 0xffffffffu);
    // The lightest pack with room, first on ties (branch-free: the loads are unpredictable).
    // A full pack's weight reads as +inf; a pack with room is always finite.
    int best = 0;
    float best_w = pack_items[0] < per_pack ? pack_weight[0] : kFull;
    for (int p = 1; p < num_packs; ++p) {
      const float w = pack_items[p] < per_pack ? pack_weight[p] : kFull;
      const bool lighter = w < best_w;
      best = lighter ? p : best;
      best_w = lighter ? w : best_w;
    }
    pack[item] = best;
    rank_in_pack[item] = pack_items[best];
    pack_weight[best] += weight[item];
    ++pack_items[best];
  }
}

void PackGroupsToNodes(const std::vector<float>& weight, int num_groups, int num_nodes,
                       std::vector<int>& group_node, std::vector<int>& rank_in_node) {
  const int group_size = static_cast<int>(weight.size()) / num_groups;
  std::vector<float> group_weight(num_groups, 0.0f);
  for (int g = 0; g < num_groups; ++g) {
    for (int j = 0; j < group_size; ++j) group_weight[g] += weight[g * group_size + j];
  }
  BalancedPacking(group_weight, num_nodes, group_node, rank_in_node);
}

DeepSeekLayer DeepSeekRebalanceLayer(const std::vector<float>& weight, int num_physical,
                                     int num_groups, int num_nodes, int num_gpus) {
  const int e_count = static_cast<int>(weight.size());
  const int group_size = e_count / num_groups;
  const int groups_per_node = num_groups / num_nodes;
  const int phy_per_gpu = num_physical / num_gpus;
  const int log_per_node = e_count / num_nodes;
  const int phy_per_node = num_physical / num_nodes;
  const int gpus_per_node = num_gpus / num_nodes;

  // Step 1: pack groups onto nodes; relabel so each node's experts are contiguous ("mlog").
  std::vector<int> group_pack, group_rank;
  PackGroupsToNodes(weight, num_groups, num_nodes, group_pack, group_rank);
  std::vector<int> log2mlog(e_count);
  for (int g = 0; g < num_groups; ++g) {
    for (int j = 0; j < group_size; ++j) {
      log2mlog[g * group_size + j] =
          (group_pack[g] * groups_per_node + group_rank[g]) * group_size + j;
    }
  }
  const std::vector<int> mlog2log = Inverse(log2mlog);

  DeepSeekLayer out;
  out.physical_to_logical.resize(num_physical);
  out.replica_rank.resize(num_physical);
  out.replica_count.resize(e_count);
  std::vector<int> mlog_count(e_count);
  for (int node = 0; node < num_nodes; ++node) {
    // Step 2: replicate the node's experts to its physical slots.
    std::vector<float> node_weight(log_per_node);
    for (int i = 0; i < log_per_node; ++i)
      node_weight[i] = weight[mlog2log[node * log_per_node + i]];
    const Replicated rep = Replicate(node_weight, phy_per_node);
    // Step 3: pack the node's replicas (load = weight / count) onto its GPUs.
    std::vector<float> phy_weight(phy_per_node);
    for (int i = 0; i < phy_per_node; ++i) {
      phy_weight[i] = node_weight[rep.phy2log[i]] / static_cast<float>(rep.count[rep.phy2log[i]]);
    }
    std::vector<int> pack, rank;
    BalancedPacking(phy_weight, gpus_per_node, pack, rank);
    std::vector<int> phy2pphy(phy_per_node);
    for (int i = 0; i < phy_per_node; ++i) phy2pphy[i] = pack[i] * phy_per_gpu + rank[i];
    const std::vector<int> pphy2phy = Inverse(phy2pphy);
    for (int pp = 0; pp < phy_per_node; ++pp) {
      const int phy = pphy2phy[pp];
      const int mlog = rep.phy2log[phy] + node * log_per_node;
      out.physical_to_logical[node * phy_per_node + pp] = mlog2log[mlog];
      out.replica_rank[node * phy_per_node + pp] = rep.rank[phy];
    }
    for (int i = 0; i < log_per_node; ++i) mlog_count[node * log_per_node + i] = rep.count[i];
  }
  for (int e = 0; e < e_count; ++e) out.replica_count[e] = mlog_count[log2mlog[e]];
  return out;
}

}  // namespace placement
}  // namespace eplb
