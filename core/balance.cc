#include "core/balance.h"

#include <algorithm>
#include <vector>

namespace eplb {

std::vector<double> GpuLoads(absl::Span<const double> physical_load, int routed_slots_per_rank) {
  const size_t w = physical_load.size() / routed_slots_per_rank;
  std::vector<double> out(w, 0.0);
  for (size_t p = 0; p < w * routed_slots_per_rank; ++p) {
    out[p / routed_slots_per_rank] += physical_load[p];
  }
  return out;
}

LayerBalance MeasureLayer(absl::Span<const double> gpu_loads) {
  LayerBalance b;
  if (gpu_loads.empty()) return b;
  double total = 0;
  for (double v : gpu_loads) total += v;
  b.max_load = *std::max_element(gpu_loads.begin(), gpu_loads.end());
  b.mean_load = total / gpu_loads.size();
  b.lower_bound = b.mean_load;
  if (b.max_load > 0) {
    b.balancedness = b.mean_load / b.max_load;
    b.imbalance_ratio = (b.max_load - b.mean_load) / b.mean_load;
  }
  return b;
}

double MeanBalancedness(const std::vector<std::vector<double>>& gpu_loads_per_layer) {
  if (gpu_loads_per_layer.empty()) return 1.0;
  double sum = 0;
  for (const auto& layer : gpu_loads_per_layer) sum += MeasureLayer(layer).balancedness;
  return sum / gpu_loads_per_layer.size();
}

}  // namespace eplb
