// Synthetic expert load for tests, benchmarks, the quality table and the simulator: Zipf skew per
// layer with a random hot-expert permutation, optional drift (hot experts change over steps) and
// group concentration (most load in a few expert groups). Deterministic for a seed.
#ifndef EPLB_EPLB_CONTROLLER_PLACEMENT_SYNTHETIC_LOAD_H_
#define EPLB_EPLB_CONTROLLER_PLACEMENT_SYNTHETIC_LOAD_H_

#include <cstdint>

#include "core/formats.h"

namespace eplb {
namespace placement {

struct SyntheticLoadOptions {
  int num_layers = 58;
  int num_logical = 256;
  double zipf = 1.0;    // load of the k-th hottest expert ~ 1 / k^zipf
  double tokens = 1e6;  // expected (token, k) pairs per layer
  int num_groups = 8;
  double group_concentration = 0;  // 0: none; 1: all load in 2 of the groups
  uint64_t seed = 1;
};

LoadMatrix SyntheticLoad(const SyntheticLoadOptions& options);

// A drifted copy: a fraction `drift` of each layer's hot-expert ranking is re-shuffled.
LoadMatrix DriftLoad(const LoadMatrix& load, double drift, uint64_t seed);

}  // namespace placement
}  // namespace eplb

#endif  // EPLB_EPLB_CONTROLLER_PLACEMENT_SYNTHETIC_LOAD_H_
