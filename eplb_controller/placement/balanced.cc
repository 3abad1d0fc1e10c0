#include "eplb_controller/placement/balanced.h"

#include <algorithm>
#include <numeric>
#include <vector>

namespace eplb {
namespace placement {
namespace {

constexpr double kEps = 1e-9;
constexpr int kCountSearchRounds = 48;
constexpr int kDonorsPerRound = 3;
// Close enough to the bound total / W that further search cannot pay for itself.
constexpr double kTolerance = 1e-3;

struct Packed {
  std::vector<std::vector<int32_t>> gpu;  // experts per GPU
  std::vector<double> load;
  double max_load = 0;
};

bool Holds(const std::vector<int32_t>& experts, int32_t e) {
  return std::find(experts.begin(), experts.end(), e) != experts.end();
}

// Greedy replication to `slots` replicas, at most `cap` per expert.
std::vector<int> GreedyCounts(const std::vector<double>& w, int slots, int cap) {
  const int n = static_cast<int>(w.size());
  std::vector<int> c(n, 1);
  for (int extra = n; extra < slots; ++extra) {
    int best = -1;
    for (int e = 0; e < n; ++e) {
      if (c[e] >= cap) continue;
      if (best < 0 || w[e] / c[e] > w[best] / c[best]) best = e;
    }
    if (best < 0) break;
    ++c[best];
  }
  return c;
}

// `bound`: total / num_gpus; refinement stops once the max is within kTolerance of it.
Packed Pack(const std::vector<double>& w, const std::vector<int>& count, int num_gpus, int rows,
            bool no_dup, double bound) {
  struct Item {
    double size;
    int32_t expert;
  };
  std::vector<Item> items;
  items.reserve(static_cast<size_t>(num_gpus) * rows);
  for (int e = 0; e < static_cast<int>(w.size()); ++e) {
    for (int i = 0; i < count[e]; ++i) items.push_back({w[e] / count[e], e});
  }
  std::stable_sort(items.begin(), items.end(),
                   [](const Item& a, const Item& b) { return a.size > b.size; });
  Packed p;
  p.gpu.assign(num_gpus, {});
  p.load.assign(num_gpus, 0.0);
  for (const Item& it : items) {
    int best = -1;
    int fallback = -1;
    for (int g = 0; g < num_gpus; ++g) {
      if (static_cast<int>(p.gpu[g].size()) >= rows) continue;
      if (fallback < 0 || p.load[g] < p.load[fallback]) fallback = g;
      if (no_dup && Holds(p.gpu[g], it.expert)) continue;
      if (best < 0 || p.load[g] < p.load[best]) best = g;
    }
    if (best < 0) best = fallback;
    p.gpu[best].push_back(it.expert);
    p.load[best] += it.size;
  }
  // Swap refinement: move load off the heaviest GPU while that lowers the pair's max.
  std::vector<double> size(w.size());
  for (size_t e = 0; e < w.size(); ++e) size[e] = count[e] > 0 ? w[e] / count[e] : 0;
  for (int round = 0; round < 4 * num_gpus; ++round) {
    const int h = static_cast<int>(std::max_element(p.load.begin(), p.load.end()) - p.load.begin());
    if (p.load[h] <= bound * (1 + kTolerance)) break;
    double best_max = p.load[h] - kEps;
    int bi = -1, bg = -1, bj = -1;
    for (int i = 0; i < static_cast<int>(p.gpu[h].size()); ++i) {
      const int32_t x = p.gpu[h][i];
      for (int g = 0; g < num_gpus; ++g) {
        if (g == h) continue;
        if (p.load[g] >= p.load[h] - kEps) continue;
        if (no_dup && Holds(p.gpu[g], x)) continue;
        for (int j = 0; j < static_cast<int>(p.gpu[g].size()); ++j) {
          const int32_t y = p.gpu[g][j];
          if (y == x || size[y] >= size[x]) continue;
          if (no_dup && Holds(p.gpu[h], y)) continue;
          const double nh = p.load[h] - size[x] + size[y];
          const double ng = p.load[g] - size[y] + size[x];
          const double m = std::max(nh, ng);
          if (m < best_max) {
            best_max = m;
            bi = i;
            bg = g;
            bj = j;
          }
        }
      }
    }
    if (bi < 0) break;
    const int32_t x = p.gpu[h][bi];
    const int32_t y = p.gpu[bg][bj];
    p.gpu[h][bi] = y;
    p.gpu[bg][bj] = x;
    p.load[h] += size[y] - size[x];
    p.load[bg] += size[x] - size[y];
  }
  p.max_load = *std::max_element(p.load.begin(), p.load.end());
  return p;
}

}  // namespace

double MaxGpuLoad(const std::vector<double>& weight,
                  const std::vector<std::vector<int32_t>>& gpu_experts) {
  std::vector<int> count(weight.size(), 0);
  for (const auto& g : gpu_experts) {
    for (int32_t e : g) ++count[e];
  }
  double worst = 0;
  for (const auto& g : gpu_experts) {
    double load = 0;
    for (int32_t e : g) load += weight[e] / count[e];
    worst = std::max(worst, load);
  }
  return worst;
}

GpuAssignment SolveBalancedLayer(const std::vector<double>& weight, int num_gpus, int rows_per_gpu,
                                 bool forbid_duplicate_on_gpu) {
  const int n = static_cast<int>(weight.size());
  const int slots = num_gpus * rows_per_gpu;
  // No duplicates is only possible when every expert fits at most once per GPU.
  const bool no_dup =
      forbid_duplicate_on_gpu && rows_per_gpu <= n && static_cast<int64_t>(n) * num_gpus >= slots;
  const int cap = no_dup ? num_gpus : slots;
  double total = 0;
  for (double x : weight) total += x;
  const double bound = total / num_gpus;
  std::vector<int> count = GreedyCounts(weight, slots, cap);
  Packed best = Pack(weight, count, num_gpus, rows_per_gpu, no_dup, bound);
  for (int round = 0; round < kCountSearchRounds; ++round) {
    if (best.max_load <= bound * (1 + kTolerance)) break;
    // The receiver: the biggest replica on the heaviest GPU.
    const int h =
        static_cast<int>(std::max_element(best.load.begin(), best.load.end()) - best.load.begin());
    int b = -1;
    for (int32_t e : best.gpu[h]) {
      if (count[e] >= cap) continue;
      if (b < 0 || weight[e] / count[e] > weight[b] / count[b]) b = e;
    }
    if (b < 0) break;
    // Donors: experts with a spare replica, least harmed first (smallest weight / (count - 1)).
    std::vector<int> donors;
    for (int e = 0; e < n; ++e) {
      if (e != b && count[e] >= 2) donors.push_back(e);
    }
    const int k = std::min<int>(kDonorsPerRound, static_cast<int>(donors.size()));
    std::partial_sort(donors.begin(), donors.begin() + k, donors.end(), [&](int x, int y) {
      const double hx = weight[x] / (count[x] - 1);
      const double hy = weight[y] / (count[y] - 1);
      return hx != hy ? hx < hy : x < y;
    });
    bool improved = false;
    for (int i = 0; i < k && !improved; ++i) {
      std::vector<int> trial = count;
      ++trial[b];
      --trial[donors[i]];
      Packed p = Pack(weight, trial, num_gpus, rows_per_gpu, no_dup, bound);
      if (p.max_load < best.max_load - kEps) {
        best = std::move(p);
        count = std::move(trial);
        improved = true;
      }
    }
    if (!improved) break;
  }
  GpuAssignment out;
  out.gpu_experts = std::move(best.gpu);
  out.max_load = best.max_load;
  return out;
}

}  // namespace placement
}  // namespace eplb
