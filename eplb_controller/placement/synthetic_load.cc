#include "eplb_controller/placement/synthetic_load.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

namespace eplb {
namespace placement {

LoadMatrix SyntheticLoad(const SyntheticLoadOptions& o) {
  std::mt19937_64 rng(o.seed);
  LoadMatrix out(o.num_layers, std::vector<double>(o.num_logical));
  const int group_size = o.num_logical / std::max(1, o.num_groups);
  for (auto& layer : out) {
    std::vector<int> perm(o.num_logical);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    // Hot groups: the first two groups of a random group order get the concentrated share.
    std::vector<int> groups(std::max(1, o.num_groups));
    std::iota(groups.begin(), groups.end(), 0);
    std::shuffle(groups.begin(), groups.end(), rng);
    double sum = 0;
    std::vector<double> base(o.num_logical);
    for (int k = 0; k < o.num_logical; ++k) {
      const int e = perm[k];
      double v = 1.0 / std::pow(k + 1.0, o.zipf);
      if (o.group_concentration > 0 && group_size > 0) {
        const int g = e / group_size;
        const bool hot = g == groups[0] || (groups.size() > 1 && g == groups[1]);
        v *= hot ? 1.0 + 10.0 * o.group_concentration : 1.0 - 0.9 * o.group_concentration;
      }
      // A little multiplicative noise so no two experts tie.
      v *= 1.0 + 0.01 * std::uniform_real_distribution<double>(0, 1)(rng);
      base[e] = v;
      sum += v;
    }
    for (int e = 0; e < o.num_logical; ++e) layer[e] = std::round(base[e] / sum * o.tokens);
  }
  return out;
}

LoadMatrix DriftLoad(const LoadMatrix& load, double drift, uint64_t seed) {
  std::mt19937_64 rng(seed);
  LoadMatrix out = load;
  for (auto& layer : out) {
    const int n = static_cast<int>(layer.size());
    const int k = static_cast<int>(std::round(drift * n));
    // Re-assign the loads of k random experts among themselves.
    std::vector<int> idx(n);
    std::iota(idx.begin(), idx.end(), 0);
    std::shuffle(idx.begin(), idx.end(), rng);
    std::vector<double> vals;
    for (int i = 0; i < k; ++i) vals.push_back(layer[idx[i]]);
    std::shuffle(vals.begin(), vals.end(), rng);
    for (int i = 0; i < k; ++i) layer[idx[i]] = vals[i];
  }
  return out;
}

}  // namespace placement
}  // namespace eplb
