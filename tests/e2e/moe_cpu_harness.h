// A real expert-parallel MoE layer on the CPU backend, for the end-to-end proof: ranks hold
// expert weights in their worker stores; a step routes each rank's tokens (seeded router ->
// top-k logical ids -> static dispatch -> slot remap + Waterfill), "sends" every (token, slot) to
// the rank owning the slot, runs the expert FFN there with the weights in that rank's row, and
// combines the results with the routing weights and the shared expert. The reference computes
// the same tokens without expert parallelism, from the checkpoint. The order of every reduction
// is fixed, so EP and reference outputs are compared bit for bit.
#ifndef EPLB_TESTS_E2E_MOE_CPU_HARNESS_H_
#define EPLB_TESTS_E2E_MOE_CPU_HARNESS_H_

#include <cstdint>
#include <vector>

#include "worker/runtime.h"

namespace eplb {
namespace e2e {

struct MoeShape {
  int hidden = 32;
  int intermediate = 16;
  int top_k = 2;
  float routed_scaling_factor = 2.5f;
};

// Checkpoint of float FFN weights: expert x of layer l is W1 [I x H] then W2 [H x I].
int64_t ExpertRowBytes(const MoeShape& shape);
CheckpointReader FfnCheckpoint(const MoeShape& shape);

struct StepResult {
  int64_t mismatches = 0;  // tokens whose output differs from the reference
  double max_abs_diff = 0;
  std::vector<int64_t> logical_choices;  // [layers][E] router's (token, k) choices this step
};

// One forward step of every layer on every rank. `workers` serve all ranks of the layout.
// `hot` biases the router towards that expert (drifting skew). plant_logical_count_bug routes
// slots with L = E / W (the bug this project exists for), to prove the harness catches it.
StepResult RunStep(const MoeShape& shape, const std::vector<WorkerRuntime*>& workers,
                   CpuFabric* fabric, int step, int tokens_per_rank, int hot,
                   bool plant_logical_count_bug);

}  // namespace e2e
}  // namespace eplb

#endif  // EPLB_TESTS_E2E_MOE_CPU_HARNESS_H_
