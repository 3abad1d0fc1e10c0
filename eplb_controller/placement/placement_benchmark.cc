// Speed of the placement engine (Google Benchmark). Figures: docs/BENCHMARKS.md.
//
//   bazel run -c opt //eplb_controller/placement:placement_benchmark
#include <string>

#include "benchmark/benchmark.h"
#include "eplb_controller/placement/placement.h"
#include "eplb_controller/placement/synthetic_load.h"

namespace eplb {
namespace placement {
namespace {

// args: layers, experts, physical, gpus, nodes, groups, algorithm
void BM_Plan(benchmark::State& state) {
  SyntheticLoadOptions so;
  so.num_layers = static_cast<int>(state.range(0));
  so.num_logical = static_cast<int>(state.range(1));
  so.num_groups = static_cast<int>(state.range(5));
  so.zipf = 1.0;
  const LoadMatrix load = SyntheticLoad(so);
  Problem pr{&load,
             static_cast<int>(state.range(2)),
             static_cast<int>(state.range(3)),
             static_cast<int>(state.range(4)),
             static_cast<int>(state.range(5)),
             {}};
  Options o;
  o.algorithm = static_cast<Algorithm>(state.range(6));
  o.locality = NodeLocality::kRelax;
  if (o.algorithm == Algorithm::kDeepSeek) o.locality = NodeLocality::kAuto;
  // Incremental starts from the balanced plan of a drifted load.
  PlacementMap current = PlacementMap::Identity(so.num_layers, so.num_logical, pr.num_physical);
  LoadMatrix drifted;
  if (o.algorithm == Algorithm::kIncremental) {
    auto first = ComputePlan(pr, {});
    current = *PlacementMap::Create(so.num_logical, pr.num_physical, first->physical_to_logical);
    drifted = DriftLoad(load, 0.25, 9);
    pr.load = &drifted;
    o.current = &current;
  }
  double balancedness = 0;
  for (auto _ : state) {
    auto plan = ComputePlan(pr, o);
    benchmark::DoNotOptimize(plan);
    balancedness = plan->stats.balancedness;
  }
  state.counters["balancedness"] = balancedness;
  state.SetLabel(AlgorithmName(o.algorithm));
}

// DeepSeek-V3: 58 MoE layers, 256 experts -> 288 slots, 32 GPUs on 4 nodes, 8 groups.
BENCHMARK(BM_Plan)
    ->ArgNames({"layers", "E", "P", "W", "N", "G", "algo"})
    ->Args({58, 256, 288, 32, 4, 8, 0})
    ->Args({58, 256, 288, 32, 4, 8, 1})
    ->Args({58, 256, 288, 32, 4, 8, 2})
    // EP144 (P=288, W=144, 18 nodes) and a 320-GPU shape (P=320, 40 nodes).
    ->Args({58, 256, 288, 144, 18, 8, 0})
    ->Args({58, 256, 288, 144, 18, 8, 1})
    ->Args({58, 256, 320, 320, 40, 8, 0})
    ->Args({58, 256, 320, 320, 40, 8, 1})
    // Growth with layers, experts and ranks (balanced).
    ->Args({16, 256, 288, 32, 4, 8, 1})
    ->Args({58, 128, 160, 32, 4, 8, 1})
    ->Args({58, 512, 576, 32, 4, 8, 1})
    ->Args({58, 256, 512, 64, 8, 8, 1})
    // The controller load benchmark's shape: W=256, two rows per GPU (R=256), incremental.
    ->Args({58, 256, 512, 256, 1, 1, 2})
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace placement
}  // namespace eplb
