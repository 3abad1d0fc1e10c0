// Placement quality on synthetic and real loads; prints the markdown tables of
// docs/BENCHMARKS.md. Deterministic (fixed seeds).
//
//   bazel run -c opt //eplb_controller/placement:placement_quality -- [path/to/trace.json]
#include <cstdio>
#include <string>
#include <vector>

#include "core/formats.h"
#include "core/placement_map.h"
#include "eplb_controller/placement/placement.h"
#include "eplb_controller/placement/synthetic_load.h"

namespace eplb {
namespace placement {
namespace {

double Balancedness(const Problem& pr, Algorithm a, NodeLocality loc) {
  Options o;
  o.algorithm = a;
  o.locality = loc;
  auto plan = ComputePlan(pr, o);
  return plan.ok() ? plan->stats.balancedness : -1;
}

void QualityRow(const char* name, const LoadMatrix& load, int p, int w, int n, int g) {
  Problem pr{&load, p, w, n, g, {}};
  std::printf("| %s | %.4f | %.4f | %.4f | %.4f | 1.0000 |\n", name,
              Balancedness(pr, Algorithm::kDeepSeek, NodeLocality::kAuto),
              Balancedness({&load, p, w, n, /*num_groups=*/1, {}}, Algorithm::kDeepSeek,
                           NodeLocality::kAuto),
              Balancedness(pr, Algorithm::kBalanced, NodeLocality::kKeep),
              Balancedness(pr, Algorithm::kBalanced, NodeLocality::kRelax));
}

void DriftSequence(const char* name, LoadMatrix load, int p, int w, int n, int g, int steps,
                   double drift, double target) {
  Problem pr{&load, p, w, n, g, {}};
  Options balanced;
  balanced.locality = NodeLocality::kRelax;
  auto first = ComputePlan(pr, balanced);
  PlacementMap inc_map =
      *PlacementMap::Create(static_cast<int>(load[0].size()), p, first->physical_to_logical);
  PlacementMap scratch_map = inc_map;
  // What upstream does: DeepSeek's algorithm from scratch every time (its own previous map).
  Options deepseek;
  deepseek.algorithm = Algorithm::kDeepSeek;
  deepseek.locality = NodeLocality::kAuto;
  auto ds_first = ComputePlan(pr, deepseek);
  PlacementMap ds_map =
      *PlacementMap::Create(static_cast<int>(load[0].size()), p, ds_first->physical_to_logical);
  int64_t inc_moves = 0, scratch_moves = 0, ds_moves = 0;
  double inc_bal = 0, scratch_bal = 0, ds_bal = 0;
  for (int s = 0; s < steps; ++s) {
    load = DriftLoad(load, drift, 100 + s);
    pr.load = &load;
    Options inc;
    inc.algorithm = Algorithm::kIncremental;
    inc.locality = NodeLocality::kRelax;
    inc.current = &inc_map;
    inc.target_balancedness = target;
    auto a = ComputePlan(pr, inc);
    Options fresh = balanced;
    fresh.current = &scratch_map;
    auto b = ComputePlan(pr, fresh);
    inc_moves += a->stats.experts_moved;
    scratch_moves += b->stats.experts_moved;
    inc_bal += a->stats.balancedness;
    scratch_bal += b->stats.balancedness;
    Options ds = deepseek;
    ds.current = &ds_map;  // for the move count only: DeepSeek's output ignores it
    auto c = ComputePlan(pr, ds);
    ds_moves += c->stats.experts_moved;
    ds_bal += c->stats.balancedness;
    ds_map = *PlacementMap::Create(ds_map.num_logical(), p, c->physical_to_logical);
    inc_map = *PlacementMap::Create(inc_map.num_logical(), p, a->physical_to_logical);
    scratch_map = *PlacementMap::Create(scratch_map.num_logical(), p, b->physical_to_logical);
  }
  std::printf("| %s | %d | %.4f | %lld | %.4f | %lld | %.1fx | %.4f | %lld | %.1fx |\n", name,
              steps, inc_bal / steps, static_cast<long long>(inc_moves), scratch_bal / steps,
              static_cast<long long>(scratch_moves),
              inc_moves > 0 ? static_cast<double>(scratch_moves) / inc_moves : 0.0, ds_bal / steps,
              static_cast<long long>(ds_moves),
              inc_moves > 0 ? static_cast<double>(ds_moves) / inc_moves : 0.0);
}

int Main(int argc, char** argv) {
  std::printf("### Balancedness (mean over layers of mean/max GPU load; 1.0 is the bound)\n\n");
  std::printf(
      "| load | deepseek hierarchical | deepseek global | balanced, node-local | "
      "balanced, relaxed | bound |\n|---|---|---|---|---|---|\n");
  struct Case {
    const char* name;
    double zipf;
    double conc;
  };
  const Case cases[] = {{"zipf 0.5", 0.5, 0},
                        {"zipf 1.0", 1.0, 0},
                        {"zipf 1.5", 1.5, 0},
                        {"zipf 1.0, load in 2 of 8 groups", 1.0, 0.8}};
  for (const Case& c : cases) {
    SyntheticLoadOptions so;
    so.zipf = c.zipf;
    so.group_concentration = c.conc;
    so.seed = 42;
    const LoadMatrix load = SyntheticLoad(so);
    std::string name = std::string("DeepSeek-V3 shape (58x256 -> 288, W=32, N=4, G=8), ") + c.name;
    QualityRow(name.c_str(), load, 288, 32, 4, 8);
  }
  {
    SyntheticLoadOptions so;
    so.zipf = 1.0;
    so.seed = 43;
    const LoadMatrix load = SyntheticLoad(so);
    QualityRow("EP144 (P=288, W=144, N=18, G=16), zipf 1.0", load, 288, 144, 18, 16);
  }
  if (argc > 1) {
    auto text = ReadFileToString(argv[1]);
    auto load = text.ok() ? ParseLoadJson(*text) : absl::StatusOr<LoadMatrix>(text.status());
    if (load.ok()) {
      QualityRow("Mixtral-8x7B MMLU trace (32x8 -> 16, W=8, N=2, G=2)", *load, 16, 8, 2, 2);
    }
  }
  std::printf("\n### Incremental vs from-scratch over drifting rebalances\n\n");
  std::printf(
      "| load | rebalances | incremental balancedness | incremental replicas moved | "
      "from-scratch balancedness | from-scratch replicas moved | fewer moves | "
      "deepseek (upstream) balancedness | deepseek replicas moved | fewer than deepseek |\n"
      "|---|---|---|---|---|---|---|---|---|---|\n");
  for (double zipf : {1.0, 1.5}) {
    for (double drift : {0.05, 0.15}) {
      for (double target : {0.0, 0.95}) {
        SyntheticLoadOptions so;
        so.zipf = zipf;
        so.seed = 7;
        char name[200];
        std::snprintf(name, sizeof(name),
                      "DeepSeek-V3 shape, zipf %.1f, %.0f%% of experts re-ranked per step, "
                      "target %s",
                      zipf, drift * 100, target > 0 ? "0.95" : "99% of balanced");
        DriftSequence(name, SyntheticLoad(so), 288, 32, 4, 8, 20, drift, target);
      }
    }
  }
  return 0;
}

}  // namespace
}  // namespace placement
}  // namespace eplb

int main(int argc, char** argv) { return eplb::placement::Main(argc, argv); }
