// Joint replication and packing for one layer (the `balanced` algorithm's core).
//
// Replica counts start from greedy replication (largest weight / count first); the replicas are
// packed heaviest-first into the lightest GPU with room, then improved by pairwise swaps off the
// heaviest GPU. Then the counts themselves are searched: a replica is taken from the expert that
// loses least by it and given to the biggest replica on the heaviest GPU, re-packed, and kept if
// the max GPU load drops. Greedy replication ignores packing; this search does not (spec §5:
// loads [10,6,3,1], P=6, W=2: greedy reaches 11, this reaches 10.33).
#ifndef EPLB_EPLB_CONTROLLER_PLACEMENT_BALANCED_H_
#define EPLB_EPLB_CONTROLLER_PLACEMENT_BALANCED_H_

#include <cstdint>
#include <vector>

namespace eplb {
namespace placement {

// gpu_experts[g] holds the logical ids of GPU g's rows_per_gpu rows.
struct GpuAssignment {
  std::vector<std::vector<int32_t>> gpu_experts;
  double max_load = 0;
};

// Max GPU load of an assignment, each replica of e carrying weight[e] / count(e).
double MaxGpuLoad(const std::vector<double>& weight,
                  const std::vector<std::vector<int32_t>>& gpu_experts);

// Precondition: num_gpus * rows_per_gpu >= weight.size() > 0.
GpuAssignment SolveBalancedLayer(const std::vector<double>& weight, int num_gpus, int rows_per_gpu,
                                 bool forbid_duplicate_on_gpu);

}  // namespace placement
}  // namespace eplb

#endif  // EPLB_EPLB_CONTROLLER_PLACEMENT_BALANCED_H_
