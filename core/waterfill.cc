#include "core/waterfill.h"

#include <algorithm>
#include <vector>

namespace eplb {

std::vector<int64_t> CountRoutedPerRank(const ExpertLayout& layout,
                                        absl::Span<const int64_t> physical_ids) {
  std::vector<int64_t> load(layout.ep_size(), 0);
  for (int64_t id : physical_ids) {
    if (id >= 0) ++load[layout.OwnerRank(PhysicalId(id))];
  }
  return load;
}

int64_t WaterLevel(int64_t total_routed, int64_t extra_total, int top_k, int ep_size) {
  const int64_t work = total_routed + extra_total + total_routed / top_k;
  return (work + ep_size - 1) / ep_size;
}

WaterfillPlan StaticPlan(absl::Span<const int64_t> local_routed_per_rank, int top_k) {
  WaterfillPlan plan;
  plan.rank_load.assign(local_routed_per_rank.begin(), local_routed_per_rank.end());
  int64_t total = 0;
  for (int64_t v : plan.rank_load) total += v;
  plan.level = WaterLevel(total, 0, top_k, static_cast<int>(plan.rank_load.size()));
  plan.allow_all_ranks = true;
  return plan;
}

WaterfillPlan DynamicPlan(absl::Span<const int64_t> global_routed_per_rank,
                          absl::Span<const int64_t> tokens_per_rank, int top_k) {
  WaterfillPlan plan;
  const size_t w = global_routed_per_rank.size();
  plan.rank_load.resize(w);
  int64_t routed = 0;
  int64_t tokens = 0;
  for (size_t r = 0; r < w; ++r) {
    plan.rank_load[r] = global_routed_per_rank[r] + tokens_per_rank[r];
    routed += global_routed_per_rank[r];
    tokens += tokens_per_rank[r];
  }
  plan.level = WaterLevel(routed, tokens, top_k, static_cast<int>(w));
  const int64_t max_load = *std::max_element(plan.rank_load.begin(), plan.rank_load.end());
  plan.allow_all_ranks = max_load <= plan.level;
  return plan;
}

std::vector<int64_t> Headroom(const WaterfillPlan& plan, int src) {
  std::vector<int64_t> h(plan.rank_load.size());
  for (size_t r = 0; r < h.size(); ++r) {
    h[r] = std::max<int64_t>(plan.level - plan.rank_load[r], 0);
    if (static_cast<int>(r) != src) h[r] = h[r] * 10 / 11;
  }
  return h;
}

std::vector<int64_t> ExactQuotas(absl::Span<const int64_t> load, int64_t n, int src) {
  const int w = static_cast<int>(load.size());
  std::vector<int64_t> q(w, 0);
  if (n <= 0) return q;
  auto filled = [&](int64_t level) {
    int64_t s = 0;
    for (int64_t l : load) s += std::max<int64_t>(level - l, 0);
    return s;
  };
  int64_t lo = *std::min_element(load.begin(), load.end());
  int64_t hi = lo + n;  // filled(hi) >= n
  while (lo < hi) {     // smallest level with filled(level) >= n
    const int64_t mid = lo + (hi - lo) / 2;
    if (filled(mid) >= n) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  const int64_t level = lo;
  int64_t rem = n;
  for (int r = 0; r < w; ++r) {
    q[r] = std::max<int64_t>(level - 1 - load[r], 0);
    rem -= q[r];
  }
  // The last partial level: one more token for ranks that reach `level`, in order src, 0, 1, ...
  for (int pos = 0; pos < w && rem > 0; ++pos) {
    const int r = ExactOrderRank(pos, src);
    if (load[r] + q[r] == level - 1) {
      ++q[r];
      --rem;
    }
  }
  return q;
}

namespace {

// A token's candidate ranks when candidates are restricted: the source plus visited ranks.
void VisitedRanks(const ExpertLayout& layout, const int64_t* ids, int top_k, int src,
                  std::vector<char>& mark) {
  std::fill(mark.begin(), mark.end(), 0);
  mark[src] = 1;
  for (int k = 0; k < top_k; ++k) {
    if (ids[k] >= 0) mark[layout.OwnerRank(PhysicalId(ids[k]))] = 1;
  }
}

bool HasValid(const int64_t* ids, int top_k) {
  for (int k = 0; k < top_k; ++k) {
    if (ids[k] >= 0) return true;
  }
  return false;
}

void AssignSglang(const ExpertLayout& layout, absl::Span<const int64_t> ids, int top_k, int src,
                  const WaterfillPlan& plan, std::vector<int32_t>& out) {
  const int w = layout.ep_size();
  const std::vector<int64_t> h = Headroom(plan, src);
  const int64_t n = static_cast<int64_t>(out.size());
  std::vector<char> cand(w, 1);
  // Hysteresis argmin over all ranks (used when every rank is a candidate).
  int all_best = src;
  for (int r = 0; r < w; ++r) {
    if (plan.rank_load[r] * 11 < plan.rank_load[all_best] * 10) all_best = r;
  }
  int64_t all_total = 0;
  for (int r = 0; r < w; ++r) all_total += h[r];
  for (int64_t t = 0; t < n; ++t) {
    const int64_t* row = ids.data() + t * top_k;
    if (!HasValid(row, top_k)) {
      out[t] = -1;
      continue;
    }
    int best = all_best;
    int64_t total = all_total;
    if (!plan.allow_all_ranks) {
      VisitedRanks(layout, row, top_k, src, cand);
      // The kernel's argmin visits the source, then the token's ids in k order.
      best = src;
      for (int k = 0; k < top_k; ++k) {
        if (row[k] < 0) continue;
        const int r = layout.OwnerRank(PhysicalId(row[k]));
        if (plan.rank_load[r] * 11 < plan.rank_load[best] * 10) best = r;
      }
      total = 0;
      for (int r = 0; r < w; ++r) total += cand[r] ? h[r] : 0;
    }
    if (total <= 0) {
      out[t] = best;
      continue;
    }
    const int64_t u = static_cast<int64_t>(WaterfillSeed(t, src) % static_cast<uint64_t>(total));
    int64_t cum = 0;
    int chosen = src;
    for (int r = 0; r < w; ++r) {
      if (!plan.allow_all_ranks && !cand[r]) continue;
      if (u >= cum && u < cum + h[r]) {
        chosen = r;
        break;
      }
      cum += h[r];
    }
    out[t] = chosen;
  }
}

void AssignExact(const ExpertLayout& layout, absl::Span<const int64_t> ids, int top_k, int src,
                 const WaterfillPlan& plan, std::vector<int32_t>& out) {
  const int w = layout.ep_size();
  const int64_t n = static_cast<int64_t>(out.size());
  int64_t valid = 0;
  for (int64_t t = 0; t < n; ++t) valid += HasValid(ids.data() + t * top_k, top_k);
  const std::vector<int64_t> q = ExactQuotas(plan.rank_load, valid, src);
  // The j-th valid token (row order) takes the j-th quota place, in the order src, 0, 1, ...
  int pos = 0;  // position in that order
  int64_t left = q[src];
  for (int64_t t = 0; t < n; ++t) {
    if (!HasValid(ids.data() + t * top_k, top_k)) {
      out[t] = -1;
      continue;
    }
    while (left == 0 && pos < w) {
      ++pos;
      if (pos < w) left = q[ExactOrderRank(pos, src)];
    }
    out[t] = ExactOrderRank(pos, src);
    --left;
  }
}

}  // namespace

std::vector<int32_t> AssignSharedRanks(const ExpertLayout& layout,
                                       absl::Span<const int64_t> physical_ids, int top_k, int src,
                                       const WaterfillPlan& plan, WaterfillPolicy policy,
                                       int min_batch) {
  const int64_t n = top_k > 0 ? static_cast<int64_t>(physical_ids.size()) / top_k : 0;
  std::vector<int32_t> out(n, src);
  if (n < min_batch) {
    for (int64_t t = 0; t < n; ++t) {
      if (!HasValid(physical_ids.data() + t * top_k, top_k)) out[t] = -1;
    }
    return out;
  }
  if (policy == WaterfillPolicy::kSglang) {
    AssignSglang(layout, physical_ids, top_k, src, plan, out);
  } else {
    AssignExact(layout, physical_ids, top_k, src, plan, out);
  }
  return out;
}

std::vector<int64_t> LoadWithShared(const WaterfillPlan& plan,
                                    absl::Span<const int32_t> shared_rank) {
  std::vector<int64_t> load = plan.rank_load;
  for (int32_t r : shared_rank) {
    if (r >= 0) ++load[r];
  }
  return load;
}

}  // namespace eplb
