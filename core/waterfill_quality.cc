// Waterfill levelling quality: max final rank load (routed + shared) over the level T, for the
// SGLang-compatible policy and the exact one, on skewed synthetic batches. Prints the markdown
// table of docs/BENCHMARKS.md. Deterministic (fixed seeds).
//
//   bazel run -c opt //core:waterfill_quality
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "core/expert_layout.h"
#include "core/waterfill.h"

namespace eplb {
namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int Main() {
  std::printf(
      "| W | tokens | K | zipf | sglang max/T (median) | exact max/T (median) | "
      "optimum max/T (median) |\n|---|---|---|---|---|---|---|\n");
  // After EPLB the routed load is near-uniform (zipf 0) or mildly skewed; under strong skew the
  // routed max alone sets max/T and no shared-expert policy matters.
  for (double zipf : {0.0, 0.3, 1.2}) {
    for (int w : {2, 8, 32, 64, 256}) {
      const int rows = 8;
      auto layout = ExpertLayout::Create({w * rows, 0, w, 1, 1});
      const int k = 8;
      const int n = 4096;
      std::vector<double> sg, ex, opt;
      for (int seed = 0; seed < 21; ++seed) {
        std::mt19937_64 rng(seed * 7919 + w);
        const int p = w * rows;
        // Zipf over physical ids with a random permutation: skewed ranks.
        std::vector<double> cdf(p);
        std::vector<int> perm(p);
        for (int i = 0; i < p; ++i) perm[i] = i;
        std::shuffle(perm.begin(), perm.end(), rng);
        double acc = 0;
        for (int i = 0; i < p; ++i) cdf[i] = acc += 1.0 / std::pow(i + 1.0, zipf);
        std::uniform_real_distribution<double> u(0, acc);
        std::vector<int64_t> ids(static_cast<size_t>(n) * k);
        for (auto& id : ids) {
          id = perm[std::lower_bound(cdf.begin(), cdf.end(), u(rng)) - cdf.begin()];
        }
        const int src = static_cast<int>(rng() % w);
        const WaterfillPlan plan = StaticPlan(CountRoutedPerRank(*layout, ids), k);
        for (auto policy : {WaterfillPolicy::kSglang, WaterfillPolicy::kExact}) {
          const auto dest = AssignSharedRanks(*layout, ids, k, src, plan, policy);
          const auto load = LoadWithShared(plan, dest);
          const double m = *std::max_element(load.begin(), load.end());
          (policy == WaterfillPolicy::kSglang ? sg : ex).push_back(m / plan.level);
        }
        // Optimum: max(max routed load, water level of n shared tokens).
        int64_t t = *std::min_element(plan.rank_load.begin(), plan.rank_load.end());
        auto filled = [&](int64_t level) {
          int64_t s = 0;
          for (int64_t x : plan.rank_load) s += std::max<int64_t>(level - x, 0);
          return s;
        };
        while (filled(t) < n) ++t;
        const double best =
            std::max<double>(t, *std::max_element(plan.rank_load.begin(), plan.rank_load.end()));
        opt.push_back(best / plan.level);
      }
      std::printf("| %d | %d | %d | %.1f | %.4f | %.4f | %.4f |\n", w, n, k, zipf, Median(sg),
                  Median(ex), Median(opt));
    }
  }
  return 0;
}

}  // namespace
}  // namespace eplb

int main() { return eplb::Main(); }
