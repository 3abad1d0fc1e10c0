// DeepSeek's EPLB algorithm (spec/DOMAIN.md section 5), one layer at a time, in float32 as the
// reference computes. Ties in its unstable sort are broken by lower index; on tie-free inputs
// the output equals the reference's.
#ifndef EPLB_EPLB_CONTROLLER_PLACEMENT_DEEPSEEK_H_
#define EPLB_EPLB_CONTROLLER_PLACEMENT_DEEPSEEK_H_

#include <cstdint>
#include <vector>

namespace eplb {
namespace placement {

struct DeepSeekLayer {
  std::vector<int32_t> physical_to_logical;  // [P]
  std::vector<int32_t> replica_rank;         // [P]: 0 = the original
  std::vector<int32_t> replica_count;        // [E]
};

// Packs n weighted items into num_packs packs of n / num_packs items: heaviest first, each into
// the lightest pack with room (lowest index on ties). pack[i], rank_in_pack[i].
void BalancedPacking(const std::vector<float>& weight, int num_packs, std::vector<int>& pack,
                     std::vector<int>& rank_in_pack);

// Step 1 of the hierarchical policy: sums each group's weight and packs the groups onto nodes.
// Preconditions: weight.size() % num_groups == 0, num_groups % num_nodes == 0.
void PackGroupsToNodes(const std::vector<float>& weight, int num_groups, int num_nodes,
                       std::vector<int>& group_node, std::vector<int>& rank_in_node);

// Preconditions (checked by the caller): E % G == 0, G % N == 0, W % N == 0, P % W == 0,
// P >= E. Pass G = N = 1 for the global policy.
DeepSeekLayer DeepSeekRebalanceLayer(const std::vector<float>& weight, int num_physical,
                                     int num_groups, int num_nodes, int num_gpus);

}  // namespace placement
}  // namespace eplb

#endif  // EPLB_EPLB_CONTROLLER_PLACEMENT_DEEPSEEK_H_
