// Balance metrics (spec/DOMAIN.md section 4).
//
//   GPU load of rank g in a layer = sum of the counts of its L routed physical slots.
//   balancedness    = mean_g load / max_g load   (1.0 is perfect; 1.0 for an idle layer)
//   imbalance_ratio = (max - mean) / mean        (TensorRT-LLM's figure; 0 for an idle layer)
//   lower bound on any placement's max GPU load = total / W.
#ifndef EPLB_CORE_BALANCE_H_
#define EPLB_CORE_BALANCE_H_

#include <vector>

#include "absl/types/span.h"

namespace eplb {

struct LayerBalance {
  double max_load = 0;
  double mean_load = 0;
  double balancedness = 1.0;
  double imbalance_ratio = 0;
  double lower_bound = 0;  // total / W
};

// physical_load: [P]; routed_slots_per_rank: L. Loads of rank g are slots [g*L, (g+1)*L).
std::vector<double> GpuLoads(absl::Span<const double> physical_load, int routed_slots_per_rank);

LayerBalance MeasureLayer(absl::Span<const double> gpu_loads);

// Mean of balancedness over layers (each layer a [W] vector of GPU loads).
double MeanBalancedness(const std::vector<std::vector<double>>& gpu_loads_per_layer);

}  // namespace eplb

#endif  // EPLB_CORE_BALANCE_H_
