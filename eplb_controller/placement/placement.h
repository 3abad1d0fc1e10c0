// The placement engine: which physical slot holds which logical expert, per MoE layer.
// Pure functions: no threads, no I/O, no clocks, deterministic for a given input.
//
// Algorithms (spec/DOMAIN.md section 5):
//  * kDeepSeek     DeepSeek's EPLB, reproduced exactly on tie-free inputs (hierarchical when
//                  G % N == 0, else global; ties broken by lower index). Compatibility mode.
//  * kBalanced     (default) joint replication and packing: replica counts and their packing
//                  onto GPUs are searched together; never worse than kDeepSeek on any layer's
//                  max GPU load (each layer keeps the better of the two), optionally no two
//                  replicas of one expert on one GPU, node locality kept or relaxed.
//  * kIncremental  starts from the current placement and changes as few rows as it can to meet
//                  a balance target (or the best balance within a move budget); rows that keep
//                  their expert stay where they are.
//
//   placement::Problem problem{&load, /*num_physical=*/288, /*ep_size=*/32, /*num_nodes=*/4,
//                              /*num_groups=*/8};
//   EPLB_ASSIGN_OR_RETURN(placement::Plan plan, placement::ComputePlan(problem, {}));
//   plan.physical_to_logical;   // [layers][P], SGLang's --init-expert-location format
//
// A "moved replica" is one expert's weights crossing a GPU boundary: for every GPU, the number
// of replicas of each expert it holds after the plan beyond what it held before.
#ifndef EPLB_EPLB_CONTROLLER_PLACEMENT_PLACEMENT_H_
#define EPLB_EPLB_CONTROLLER_PLACEMENT_PLACEMENT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "core/formats.h"
#include "core/placement_map.h"

namespace eplb {
namespace placement {

enum class Algorithm { kDeepSeek, kBalanced, kIncremental };

absl::StatusOr<Algorithm> ParseAlgorithm(absl::string_view name);
const char* AlgorithmName(Algorithm a);

enum class NodeLocality {
  kAuto,   // keep when DeepSeek would (G % N == 0 and N > 1), else relax
  kKeep,   // every expert's replicas stay on the node its group is packed to
  kRelax,  // replicas may go to any node
};

struct Problem {
  const LoadMatrix* load = nullptr;  // [layers][E], finite, >= 0
  int num_physical = 0;              // P
  int ep_size = 0;                   // W
  int num_nodes = 1;                 // N
  int num_groups = 1;                // G
  std::vector<int> dead_ranks;       // ranks to plan without
};

struct Options {
  Algorithm algorithm = Algorithm::kBalanced;
  NodeLocality locality = NodeLocality::kAuto;
  // kBalanced/kIncremental: never two replicas of one expert on one GPU (when P allows). Off by
  // default: under an even split of an expert's load over its replicas (dynamic dispatch), a
  // second replica on one GPU can still lower the max (spec §5's [10,6,3,1] case needs it).
  bool forbid_duplicate_on_gpu = false;
  // The placement in force: needed by kIncremental, and by any mode for move statistics.
  const PlacementMap* current = nullptr;
  // kIncremental: per-layer target balancedness; <= 0 means "99% of what kBalanced reaches".
  double target_balancedness = 0;
  // kIncremental: at most this many moved replicas over the whole plan (< 0: unlimited).
  // Replicas of experts left with no live replica are moved regardless.
  int64_t max_moves = -1;
  double bytes_per_expert = 0;  // for bytes_moved
};

struct LayerStats {
  double max_gpu_load = 0;
  double mean_gpu_load = 0;
  double balancedness = 1;
  double lower_bound = 0;  // total / live W
  int64_t experts_moved = 0;
};

struct PlanStats {
  std::vector<LayerStats> layers;
  double balancedness = 1;  // mean over layers
  int64_t experts_moved = 0;
  double bytes_moved = 0;
  // Set when the plan could not reach kIncremental's target within the budget.
  bool target_met = true;
};

// logical_to_all_physical as one dense array per layer, -1 padded to `width` (the most replicas
// any expert has): [layers][E * width]. Row(l, e) is expert e's list.
struct ReplicaTable {
  int width = 0;
  std::vector<std::vector<int32_t>> data;
  absl::Span<const int32_t> Row(int layer, int e) const {
    return absl::MakeConstSpan(data[layer].data() + static_cast<size_t>(e) * width, width);
  }
  // Nested form [layers][E][width] (JSON output).
  std::vector<std::vector<std::vector<int32_t>>> Nested() const;
};

struct Plan {
  std::vector<std::vector<int32_t>> physical_to_logical;  // [layers][P]
  ReplicaTable logical_to_all_physical;                   // [layers][E][X], dense
  std::vector<std::vector<int32_t>> replica_count;        // [layers][E]
  std::vector<int> dead_ranks;
  PlanStats stats;
};

// Validates the problem (InvalidArgument naming the value and the nearest valid choice) and
// computes the plan. FailedPrecondition when live ranks cannot hold a replica of every expert.
absl::StatusOr<Plan> ComputePlan(const Problem& problem, const Options& options);

// Statistics of any [layers][P] map under a load (dead ranks' rows carry no load).
PlanStats EvaluatePlacement(const Problem& problem,
                            const std::vector<std::vector<int32_t>>& physical_to_logical,
                            const PlacementMap* current, double bytes_per_expert);

// Moved replicas between two rows of one layer, rank by rank (L rows each).
int64_t MovedReplicas(const std::vector<int32_t>& before, const std::vector<int32_t>& after,
                      int rows_per_rank, int num_logical);

}  // namespace placement
}  // namespace eplb

#endif  // EPLB_EPLB_CONTROLLER_PLACEMENT_PLACEMENT_H_
