#include "worker/synthetic_traffic.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/dispatch.h"

namespace eplb {

SyntheticTraffic::SyntheticTraffic(const ExpertLayout& layout, int num_layers,
                                   TrafficOptions options)
    : layout_(layout), num_layers_(num_layers), options_(options), rng_(options.seed) {
  const int e = layout_.num_logical();
  order_.assign(num_layers_, std::vector<int32_t>(e));
  for (auto& o : order_) {
    std::iota(o.begin(), o.end(), 0);
    std::shuffle(o.begin(), o.end(), rng_);
  }
  double acc = 0;
  for (int i = 0; i < e; ++i) {
    acc += 1.0 / std::pow(i + 1.0, options_.zipf);
    cdf_.push_back(acc);
  }
}

void SyntheticTraffic::SetWeights(const std::vector<std::vector<double>>& weights) {
  layer_cdf_.assign(weights.size(), {});
  for (size_t l = 0; l < weights.size(); ++l) {
    double acc = 0;
    for (double x : weights[l]) layer_cdf_[l].push_back(acc += x);
    if (acc <= 0) layer_cdf_[l].clear();  // an idle layer falls back to the Zipf model
  }
}

void SyntheticTraffic::Drift() {
  for (auto& o : order_) {
    const int n = static_cast<int>(o.size());
    const int k = std::max(2, static_cast<int>(options_.drift_fraction * n));
    std::vector<int> idx(n);
    std::iota(idx.begin(), idx.end(), 0);
    std::shuffle(idx.begin(), idx.end(), rng_);
    std::vector<int32_t> vals;
    for (int i = 0; i < k; ++i) vals.push_back(o[idx[i]]);
    std::shuffle(vals.begin(), vals.end(), rng_);
    for (int i = 0; i < k; ++i) o[idx[i]] = vals[i];
  }
}

void SyntheticTraffic::Step(const std::vector<WorkerRuntime*>& workers) {
  const int w = layout_.ep_size();
  std::vector<int> owner_worker(w, -1);
  for (size_t i = 0; i < workers.size(); ++i) {
    for (int r : workers[i]->options().ranks) owner_worker[r] = static_cast<int>(i);
  }
  std::uniform_real_distribution<double> u(0, cdf_.back());
  std::uniform_int_distribution<int> src_dist(0, w - 1);
  const int k = std::min(options_.top_k, layout_.num_logical());
  std::vector<std::vector<int32_t>> tables(w);
  for (int layer = 0; layer < num_layers_; ++layer) {
    // Each source rank's dispatch row lives in the worker serving it.
    // Ranks of other processes: their static tables are a pure function of the map, which every
    // worker holds, so every process can route every source's tokens; with one seed everywhere
    // the processes generate the same global token stream and each records what its ranks get.
    std::shared_ptr<const PlacementMap> map = workers[0]->map();
    for (int r = 0; r < w; ++r) {
      if (owner_worker[r] >= 0) {
        tables[r] = workers[owner_worker[r]]->DispatchRow(r, layer);
      } else {
        auto row = BuildStaticDispatchRow(layout_, *map, layer, r);
        tables[r] = row.ok() ? *std::move(row) : std::vector<int32_t>();
      }
    }
    std::vector<std::vector<int64_t>> received(workers.size());
    for (int t = 0; t < options_.tokens_per_step; ++t) {
      int src = src_dist(rng_);
      if (tables[src].empty()) src = workers[0]->options().ranks[0];
      std::vector<int32_t> chosen;
      while (static_cast<int>(chosen.size()) < k) {
        const int rank =
            static_cast<int>(std::lower_bound(cdf_.begin(), cdf_.end(), u(rng_)) - cdf_.begin());
        const int32_t e = order_[layer][std::min<int>(rank, order_[layer].size() - 1)];
        if (std::find(chosen.begin(), chosen.end(), e) == chosen.end()) chosen.push_back(e);
      }
      for (int32_t e : chosen) {
        const int32_t p = tables[src][e];
        const int owner = owner_worker[layout_.OwnerRank(PhysicalId(p))];
        if (owner >= 0) received[owner].push_back(p);
      }
    }
    for (size_t i = 0; i < workers.size(); ++i) workers[i]->RecordReceived(layer, received[i]);
  }
}

}  // namespace eplb
