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

double SyntheticTraffic::Weight(int layer, int32_t e) const {
  if (layer < static_cast<int>(layer_cdf_.size()) && !layer_cdf_[layer].empty()) {
    const std::vector<double>& c = layer_cdf_[layer];
    return c[e] - (e > 0 ? c[e - 1] : 0.0);
  }
  const int rank = static_cast<int>(std::find(order_[layer].begin(), order_[layer].end(), e) -
                                    order_[layer].begin());
  return cdf_[rank] - (rank > 0 ? cdf_[rank - 1] : 0.0);
}

int32_t SyntheticTraffic::Draw(int layer) {
  if (layer < static_cast<int>(layer_cdf_.size()) && !layer_cdf_[layer].empty()) {
    const std::vector<double>& c = layer_cdf_[layer];
    std::uniform_real_distribution<double> v(0, c.back());
    const auto e = std::upper_bound(c.begin(), c.end(), v(rng_)) - c.begin();
    return static_cast<int32_t>(std::min<int64_t>(e, static_cast<int64_t>(c.size()) - 1));
  }
  std::uniform_real_distribution<double> u(0, cdf_.back());
  const int rank =
      static_cast<int>(std::lower_bound(cdf_.begin(), cdf_.end(), u(rng_)) - cdf_.begin());
  int32_t e = order_[layer][std::min<int>(rank, order_[layer].size() - 1)];
  // A burst: the bursting expert is drawn instead with probability 1 - 1/factor.
  if (burst_left_ > 0 &&
      std::uniform_real_distribution<double>(0, 1)(rng_) < 1.0 - 1.0 / options_.burst_factor) {
    e = burst_expert_;
  }
  return e;
}

std::vector<int32_t> SyntheticTraffic::SampleToken(int layer) {
  const int k = std::min(options_.top_k, layout_.num_logical());
  std::vector<int32_t> chosen;
  const int group_size = layout_.num_logical() / std::max(1, options_.num_groups);
  const bool grouped = options_.num_groups > 1 && group_size >= k &&
                       std::uniform_real_distribution<double>(0, 1)(rng_) < options_.group_locality;
  if (grouped) {
    // Group-limited routing: the first draw picks the group (by weight); the rest are drawn
    // from that group's experts by their weights, without repetition.
    const int32_t first = Draw(layer);
    chosen.push_back(first);
    const int32_t g0 = first / group_size * group_size;
    std::vector<double> w(group_size);
    for (int j = 0; j < group_size; ++j) w[j] = g0 + j == first ? 0.0 : Weight(layer, g0 + j);
    while (static_cast<int>(chosen.size()) < k) {
      double total = 0;
      for (double x : w) total += x;
      if (total <= 0) break;
      double v = std::uniform_real_distribution<double>(0, total)(rng_);
      int j = 0;
      while (j + 1 < group_size && v >= w[j]) v -= w[j++];
      chosen.push_back(g0 + j);
      w[j] = 0;
    }
  }
  int tries = 0;
  while (static_cast<int>(chosen.size()) < k && tries++ < 1024 * k) {
    const int32_t e = Draw(layer);
    if (std::find(chosen.begin(), chosen.end(), e) == chosen.end()) chosen.push_back(e);
  }
  return chosen;
}

void SyntheticTraffic::Step(const std::vector<WorkerRuntime*>& workers) {
  if (burst_left_ > 0) {
    --burst_left_;
  } else if (options_.burst_probability > 0 &&
             std::uniform_real_distribution<double>(0, 1)(rng_) < options_.burst_probability) {
    burst_expert_ = std::uniform_int_distribution<int>(0, layout_.num_logical() - 1)(rng_);
    burst_left_ = options_.burst_steps;
  }
  const int w = layout_.ep_size();
  std::vector<int> owner_worker(w, -1);
  for (size_t i = 0; i < workers.size(); ++i) {
    for (int r : workers[i]->options().ranks) owner_worker[r] = static_cast<int>(i);
  }
  std::uniform_int_distribution<int> src_dist(0, w - 1);
  std::vector<std::vector<int32_t>> tables(w);
  for (int layer = 0; layer < num_layers_; ++layer) {
    // Each source rank's dispatch row lives in the worker serving it. Ranks of other processes:
    // their static tables are a pure function of the map, which every worker holds, so every
    // process can route every source's tokens; with one seed everywhere the processes generate the
    // same global token stream and each records what its ranks get.
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
      const std::vector<int32_t> chosen = SampleToken(layer);
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
