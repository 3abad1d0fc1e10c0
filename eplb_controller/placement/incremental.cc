#include "eplb_controller/placement/incremental.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace eplb {
namespace placement {
namespace {
constexpr double kEps = 1e-9;
}  // namespace

LayerState::LayerState(std::vector<double> weight, int num_gpus, int rows_per_gpu,
                       std::vector<int32_t> rows, bool forbid_duplicate_on_gpu)
    : weight_(std::move(weight)),
      num_experts_(static_cast<int>(weight_.size())),
      num_gpus_(num_gpus),
      rows_per_gpu_(rows_per_gpu),
      rows_(std::move(rows)) {
  no_dup_ = forbid_duplicate_on_gpu && rows_per_gpu_ <= num_experts_;
  count_.assign(num_experts_, 0);
  held_.assign(static_cast<size_t>(num_gpus_) * num_experts_, 0);
  for (int g = 0; g < num_gpus_; ++g) {
    for (int r = 0; r < rows_per_gpu_; ++r) {
      const int32_t e = rows_[g * rows_per_gpu_ + r];
      ++count_[e];
      ++Held(g, e);
    }
  }
  held_old_ = held_;
  for (double x : weight_) total_ += x;
  RecomputeLoads();
}

void LayerState::RecomputeLoads() {
  load_.assign(num_gpus_, 0.0);
  for (int g = 0; g < num_gpus_; ++g) {
    for (int r = 0; r < rows_per_gpu_; ++r) {
      const int32_t e = rows_[g * rows_per_gpu_ + r];
      if (count_[e] > 0) load_[g] += Size(e);
    }
  }
}

double LayerState::max_load() const { return *std::max_element(load_.begin(), load_.end()); }

double LayerState::balancedness() const {
  const double m = max_load();
  return m > 0 ? mean_load() / m : 1.0;
}

void LayerState::Replace(int g, int r, int32_t e) {
  int32_t& slot = rows_[g * rows_per_gpu_ + r];
  const int32_t old = slot;
  moves_ += OutCost(g, old);
  --Held(g, old);
  --count_[old];
  moves_ += InCost(g, e);
  ++Held(g, e);
  ++count_[e];
  slot = e;
  RecomputeLoads();
}

absl::Status LayerState::EnsureEveryExpertPlaced() {
  std::vector<int32_t> missing;
  for (int32_t e = 0; e < num_experts_; ++e) {
    if (count_[e] == 0) missing.push_back(e);
  }
  std::stable_sort(missing.begin(), missing.end(),
                   [&](int32_t a, int32_t b) { return weight_[a] > weight_[b]; });
  std::vector<int32_t> unplaced;
  for (int32_t e : missing) {
    // The row to free: its expert keeps a replica and loses least; lightest GPU on ties.
    int best_g = -1, best_r = -1;
    double best_harm = 0;
    for (int g = 0; g < num_gpus_; ++g) {
      if (no_dup_ && Held(g, e) > 0) continue;
      for (int r = 0; r < rows_per_gpu_; ++r) {
        const int32_t a = rows_[g * rows_per_gpu_ + r];
        if (count_[a] < 2) continue;
        const double harm = weight_[a] / (count_[a] - 1);
        if (best_g < 0 || harm < best_harm - kEps ||
            (harm < best_harm + kEps && load_[g] < load_[best_g])) {
          best_g = g;
          best_r = r;
          best_harm = harm;
        }
      }
    }
    if (best_g < 0) {
      unplaced.push_back(e);
      continue;
    }
    Replace(best_g, best_r, e);
  }
  if (!unplaced.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no live row can hold logical experts [", absl::StrJoin(unplaced, ","), "]: ", num_gpus_,
        " live ranks x ", rows_per_gpu_, " rows = ", num_gpus_ * rows_per_gpu_, " rows for ",
        num_experts_, " experts; revive ranks or add redundant slots"));
  }
  return absl::OkStatus();
}

bool LayerState::Step(int64_t budget) {
  // Every candidate involves the heaviest GPU h and may not raise the max. Candidates are scored
  // by the drop of the sum of squared GPU loads per moved replica: unlike the max alone, that
  // also rewards a change when several GPUs tie at the top (no plateaus).
  std::vector<int> order(num_gpus_);
  for (int g = 0; g < num_gpus_; ++g) order[g] = g;
  const int top = std::min(3, num_gpus_);
  std::partial_sort(order.begin(), order.begin() + top, order.end(),
                    [&](int a, int b) { return load_[a] > load_[b]; });
  const int h = order[0];
  const double cur = load_[h];
  auto others_max = [&](int a, int b) {
    for (int i = 0; i < top; ++i) {
      if (order[i] != a && order[i] != b) return load_[order[i]];
    }
    return 0.0;
  };
  const double scale = cur > 0 ? 1.0 / (cur * cur) : 1.0;  // keeps kEps meaningful
  double best_score = 0;
  int kind = -1;  // 0 swap, 1 replace
  int bi = -1, bg = -1, bj = -1;
  int32_t bb = -1;
  int best_cost = 0;
  auto consider = [&](double new_max, double drop, int cost, int k, int i, int g, int j,
                      int32_t b) {
    if (new_max > cur + kEps || drop * scale <= kEps || cost > budget) return;
    const double s = drop * scale / (cost <= 0 ? 0.5 : cost);
    if (s > best_score + kEps || (s > best_score - kEps && kind >= 0 && cost < best_cost)) {
      best_score = s;
      best_cost = cost;
      kind = k;
      bi = i;
      bg = g;
      bj = j;
      bb = b;
    }
  };
  // (A) swaps off the heaviest GPU.
  for (int i = 0; i < rows_per_gpu_; ++i) {
    const int32_t x = rows_[h * rows_per_gpu_ + i];
    const double sx = Size(x);
    for (int g = 0; g < num_gpus_; ++g) {
      if (g == h || load_[g] >= cur - kEps) continue;
      if (no_dup_ && Held(g, x) > 0) continue;
      for (int j = 0; j < rows_per_gpu_; ++j) {
        const int32_t y = rows_[g * rows_per_gpu_ + j];
        if (y == x) continue;
        const double sy = Size(y);
        if (sy >= sx) continue;
        if (no_dup_ && Held(h, y) > 0) continue;
        const double nh = load_[h] - sx + sy;
        const double ng = load_[g] - sy + sx;
        const double drop = load_[h] * load_[h] + load_[g] * load_[g] - nh * nh - ng * ng;
        const int cost = InCost(g, x) + OutCost(h, x) + InCost(h, y) + OutCost(g, y);
        consider(std::max({nh, ng, others_max(h, g)}), drop, cost, 0, i, g, j, -1);
      }
    }
  }
  // (B) re-point a row of a donor (an expert with a spare replica that loses least by giving it
  // up) to an expert of the heaviest GPU.
  constexpr int kDonors = 8;
  std::vector<int32_t> donors;
  for (int32_t a = 0; a < num_experts_; ++a) {
    if (count_[a] >= 2) donors.push_back(a);
  }
  const int nd = std::min<int>(kDonors, static_cast<int>(donors.size()));
  std::partial_sort(donors.begin(), donors.begin() + nd, donors.end(), [&](int32_t x, int32_t y) {
    const double hx = weight_[x] / (count_[x] - 1);
    const double hy = weight_[y] / (count_[y] - 1);
    return hx != hy ? hx < hy : x < y;
  });
  donors.resize(nd);
  std::vector<int32_t> receivers;
  for (int i = 0; i < rows_per_gpu_; ++i) {
    const int32_t b = rows_[h * rows_per_gpu_ + i];
    if (std::find(receivers.begin(), receivers.end(), b) == receivers.end()) receivers.push_back(b);
  }
  for (int32_t b : receivers) {
    const double sb = Size(b);
    const double sb2 = weight_[b] / (count_[b] + 1);
    for (int g = 0; g < num_gpus_; ++g) {
      if (no_dup_ && Held(g, b) > 0) continue;
      for (int r = 0; r < rows_per_gpu_; ++r) {
        const int32_t a = rows_[g * rows_per_gpu_ + r];
        if (a == b || std::find(donors.begin(), donors.end(), a) == donors.end()) continue;
        const double sa = Size(a);
        const double sa2 = weight_[a] / (count_[a] - 1);
        double nm = 0;
        double drop = 0;
        for (int q = 0; q < num_gpus_; ++q) {
          double l = load_[q] + Held(q, a) * (sa2 - sa) + Held(q, b) * (sb2 - sb);
          if (q == g) l += sb2 - sa2;
          nm = std::max(nm, l);
          drop += load_[q] * load_[q] - l * l;
        }
        const int cost = InCost(g, b) + OutCost(g, a);
        consider(nm, drop, cost, 1, r, g, -1, b);
      }
    }
  }
  if (kind < 0) return false;
  if (kind == 0) {
    const int32_t x = rows_[h * rows_per_gpu_ + bi];
    const int32_t y = rows_[bg * rows_per_gpu_ + bj];
    // Two replacements: count stays, rows exchange experts.
    moves_ += InCost(bg, x) + OutCost(h, x) + InCost(h, y) + OutCost(bg, y);
    --Held(h, x);
    ++Held(h, y);
    --Held(bg, y);
    ++Held(bg, x);
    rows_[h * rows_per_gpu_ + bi] = y;
    rows_[bg * rows_per_gpu_ + bj] = x;
    RecomputeLoads();
  } else {
    Replace(bg, bi, bb);
  }
  return true;
}

}  // namespace placement
}  // namespace eplb
