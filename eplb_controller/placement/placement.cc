#include "eplb_controller/placement/placement.h"

#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "eplb_controller/placement/balanced.h"
#include "eplb_controller/placement/deepseek.h"
#include "eplb_controller/placement/incremental.h"

namespace eplb {
namespace placement {
namespace {

std::string NearestMultiples(int value, int of) {
  const int below = value / of * of;
  const int above = below + of;
  if (below >= of) return absl::StrCat(below, " or ", above);
  return absl::StrCat(above);
}

absl::Status Validate(const Problem& pr, int* num_logical) {
  if (pr.load == nullptr || pr.load->empty()) {
    return absl::InvalidArgumentError("load has no layers; expected [layers][E]");
  }
  const int e_count = static_cast<int>((*pr.load)[0].size());
  for (size_t l = 0; l < pr.load->size(); ++l) {
    if (static_cast<int>((*pr.load)[l].size()) != e_count || e_count == 0) {
      return absl::InvalidArgumentError(absl::StrCat("load layer ", l, " has ",
                                                     (*pr.load)[l].size(), " experts; expected ",
                                                     e_count, " like layer 0"));
    }
    for (int e = 0; e < e_count; ++e) {
      const double x = (*pr.load)[l][e];
      if (!(x >= 0) || x > 1e300) {
        return absl::InvalidArgumentError(
            absl::StrCat("load[", l, "][", e, "] = ", x, "; expected a finite value >= 0"));
      }
    }
  }
  if (pr.ep_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("ep_size W=", pr.ep_size, " must be positive"));
  }
  if (pr.num_physical < e_count) {
    return absl::InvalidArgumentError(absl::StrCat("num_physical P=", pr.num_physical,
                                                   " is below the ", e_count,
                                                   " logical experts; expected P >= E"));
  }
  if (pr.num_physical % pr.ep_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "num_physical P=", pr.num_physical, " is not divisible by ep_size W=", pr.ep_size,
        "; try P=", NearestMultiples(pr.num_physical, pr.ep_size)));
  }
  if (pr.num_nodes <= 0 || pr.ep_size % pr.num_nodes != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "num_nodes N=", pr.num_nodes, " must be positive and divide ep_size W=", pr.ep_size));
  }
  if (pr.num_groups <= 0 || e_count % pr.num_groups != 0) {
    return absl::InvalidArgumentError(absl::StrCat("num_groups G=", pr.num_groups,
                                                   " must be positive and divide the ", e_count,
                                                   " logical experts"));
  }
  std::vector<char> seen(pr.ep_size, 0);
  for (int r : pr.dead_ranks) {
    if (r < 0 || r >= pr.ep_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("dead rank ", r, " is out of range [0, ", pr.ep_size, ")"));
    }
    if (seen[r]) {
      return absl::InvalidArgumentError(absl::StrCat("dead rank ", r, " is listed twice"));
    }
    seen[r] = 1;
  }
  *num_logical = e_count;
  return absl::OkStatus();
}

// Live rows of a full [P] row, GPU-major over `live`.
std::vector<int32_t> LiveRows(const std::vector<int32_t>& row, const std::vector<int>& live,
                              int rows_per_gpu) {
  std::vector<int32_t> out;
  out.reserve(live.size() * rows_per_gpu);
  for (int g : live) {
    out.insert(out.end(), row.begin() + g * rows_per_gpu, row.begin() + (g + 1) * rows_per_gpu);
  }
  return out;
}

// The rows of the listed GPUs of a GPU-major row, one vector per GPU.
std::vector<std::vector<int32_t>> SplitByGpu(const std::vector<int32_t>& row,
                                             const std::vector<int>& gpus, int rows_per_gpu) {
  std::vector<std::vector<int32_t>> out;
  out.reserve(gpus.size());
  for (int g : gpus) {
    out.emplace_back(row.begin() + g * rows_per_gpu, row.begin() + (g + 1) * rows_per_gpu);
  }
  return out;
}

// MaxGpuLoad over the live GPUs of a GPU-major row, without splitting it (this runs per layer
// on every plan). `counts` is scratch.
double MaxLiveGpuLoad(const std::vector<double>& w, const std::vector<int32_t>& row,
                      const std::vector<int>& live, int rows_per_gpu, std::vector<int>& counts) {
  counts.assign(w.size(), 0);
  for (int g : live) {
    for (int p = g * rows_per_gpu; p < (g + 1) * rows_per_gpu; ++p) ++counts[row[p]];
  }
  double worst = 0;
  for (int g : live) {
    double load = 0;
    for (int p = g * rows_per_gpu; p < (g + 1) * rows_per_gpu; ++p)
      load += w[row[p]] / counts[row[p]];
    worst = std::max(worst, load);
  }
  return worst;
}

// Size of the multiset intersection of two short expert lists.
int Overlap(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  std::vector<char> used(b.size(), 0);
  int n = 0;
  for (int32_t e : a) {
    for (size_t j = 0; j < b.size(); ++j) {
      if (!used[j] && b[j] == e) {
        used[j] = 1;
        ++n;
        break;
      }
    }
  }
  return n;
}

// Writes gpu_experts (one bin per live GPU) into the full row. With an old row, bins are first
// matched to live GPUs of the same block (`block` consecutive live GPUs: a node, or all of them)
// by the most experts in common, greedily, so a plan computed from scratch moves as few replicas
// as its GPU labels allow; then each GPU keeps its unchanged experts on their rows.
void Scatter(const std::vector<std::vector<int32_t>>& gpu_experts, const std::vector<int>& live,
             int rows_per_gpu, int block, const std::vector<int32_t>* old_row,
             std::vector<int32_t>& row) {
  const int n = static_cast<int>(live.size());
  std::vector<int> gpu_of_bin(n);
  std::iota(gpu_of_bin.begin(), gpu_of_bin.end(), 0);
  if (old_row != nullptr) {
    const std::vector<std::vector<int32_t>> old_gpus = SplitByGpu(*old_row, live, rows_per_gpu);
    struct Pair {
      int overlap, bin, gpu;
    };
    std::vector<Pair> pairs;
    for (int i = 0; i < n; ++i) {
      for (int j = i / block * block; j < (i / block + 1) * block && j < n; ++j) {
        pairs.push_back({Overlap(gpu_experts[i], old_gpus[j]), i, j});
      }
    }
    std::stable_sort(pairs.begin(), pairs.end(),
                     [](const Pair& a, const Pair& b) { return a.overlap > b.overlap; });
    std::vector<char> bin_done(n, 0), gpu_done(n, 0);
    for (const Pair& p : pairs) {
      if (bin_done[p.bin] || gpu_done[p.gpu]) continue;
      bin_done[p.bin] = gpu_done[p.gpu] = 1;
      gpu_of_bin[p.bin] = p.gpu;
    }
  }
  for (int i = 0; i < n; ++i) {
    const int base = live[gpu_of_bin[i]] * rows_per_gpu;
    std::vector<int32_t> pending = gpu_experts[i];
    std::vector<char> filled(rows_per_gpu, 0);
    if (old_row != nullptr) {
      for (int r = 0; r < rows_per_gpu; ++r) {
        auto it = std::find(pending.begin(), pending.end(), (*old_row)[base + r]);
        if (it != pending.end()) {
          row[base + r] = *it;
          filled[r] = 1;
          pending.erase(it);
        }
      }
    }
    size_t next = 0;
    for (int r = 0; r < rows_per_gpu; ++r) {
      if (!filled[r]) row[base + r] = pending[next++];
    }
  }
}

}  // namespace

absl::StatusOr<Algorithm> ParseAlgorithm(absl::string_view name) {
  if (name == "deepseek") return Algorithm::kDeepSeek;
  if (name == "balanced") return Algorithm::kBalanced;
  if (name == "incremental") return Algorithm::kIncremental;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown algorithm \"", name, "\"; expected deepseek, balanced or incremental"));
}

const char* AlgorithmName(Algorithm a) {
  switch (a) {
    case Algorithm::kDeepSeek:
      return "deepseek";
    case Algorithm::kBalanced:
      return "balanced";
    case Algorithm::kIncremental:
      return "incremental";
  }
  return "unknown";
}

int64_t MovedReplicas(const std::vector<int32_t>& before, const std::vector<int32_t>& after,
                      int rows_per_rank, int num_logical) {
  int64_t moved = 0;
  std::vector<int> delta(num_logical, 0);
  const int ranks = static_cast<int>(after.size()) / rows_per_rank;
  for (int g = 0; g < ranks; ++g) {
    for (int r = g * rows_per_rank; r < (g + 1) * rows_per_rank; ++r) {
      ++delta[after[r]];
      --delta[before[r]];
    }
    for (int r = g * rows_per_rank; r < (g + 1) * rows_per_rank; ++r) {
      for (int32_t e : {after[r], before[r]}) {
        if (delta[e] > 0) moved += delta[e];
        delta[e] = 0;
      }
    }
  }
  return moved;
}

PlanStats EvaluatePlacement(const Problem& pr, const std::vector<std::vector<int32_t>>& p2l,
                            const PlacementMap* current, double bytes_per_expert) {
  PlanStats st;
  const int rows = pr.num_physical / pr.ep_size;
  std::vector<char> dead(pr.ep_size, 0);
  for (int r : pr.dead_ranks) dead[r] = 1;
  std::vector<int> live;
  for (int g = 0; g < pr.ep_size; ++g) {
    if (!dead[g]) live.push_back(g);
  }
  double sum_bal = 0;
  std::vector<int> counts;  // scratch, reused across layers
  for (size_t l = 0; l < p2l.size(); ++l) {
    const std::vector<double>& w = (*pr.load)[l];
    LayerStats ls;
    double total = 0;
    for (double x : w) total += x;
    ls.max_gpu_load = MaxLiveGpuLoad(w, p2l[l], live, rows, counts);
    ls.mean_gpu_load = live.empty() ? 0 : total / live.size();
    ls.lower_bound = ls.mean_gpu_load;
    ls.balancedness = ls.max_gpu_load > 0 ? ls.mean_gpu_load / ls.max_gpu_load : 1.0;
    if (current != nullptr && static_cast<int>(l) < current->num_layers()) {
      ls.experts_moved =
          MovedReplicas(current->physical_to_logical(l), p2l[l], rows, current->num_logical());
    }
    st.experts_moved += ls.experts_moved;
    sum_bal += ls.balancedness;
    st.layers.push_back(ls);
  }
  st.balancedness = p2l.empty() ? 1.0 : sum_bal / p2l.size();
  st.bytes_moved = static_cast<double>(st.experts_moved) * bytes_per_expert;
  return st;
}

absl::StatusOr<Plan> ComputePlan(const Problem& pr, const Options& opt) {
  int e_count = 0;
  if (absl::Status s = Validate(pr, &e_count); !s.ok()) return s;
  const int layers = static_cast<int>(pr.load->size());
  const int rows = pr.num_physical / pr.ep_size;
  if (opt.current != nullptr &&
      (opt.current->num_logical() != e_count || opt.current->num_physical() != pr.num_physical ||
       opt.current->num_layers() != layers)) {
    return absl::InvalidArgumentError(
        absl::StrCat("current placement has shape [", opt.current->num_layers(), "][",
                     opt.current->num_physical(), "] over E=", opt.current->num_logical(),
                     "; expected [", layers, "][", pr.num_physical, "] over E=", e_count));
  }
  if (opt.algorithm == Algorithm::kIncremental && opt.current == nullptr) {
    return absl::InvalidArgumentError("the incremental algorithm needs the current placement");
  }
  std::vector<char> dead(pr.ep_size, 0);
  for (int r : pr.dead_ranks) dead[r] = 1;
  std::vector<int> live;
  for (int g = 0; g < pr.ep_size; ++g) {
    if (!dead[g]) live.push_back(g);
  }
  const int w_live = static_cast<int>(live.size());
  if (static_cast<int64_t>(w_live) * rows < e_count) {
    // The coldest experts are the ones left without a replica.
    std::vector<double> total(e_count, 0);
    for (const auto& layer : *pr.load) {
      for (int e = 0; e < e_count; ++e) total[e] += layer[e];
    }
    std::vector<int> order(e_count);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return total[a] > total[b]; });
    std::vector<int> lost(order.begin() + w_live * rows, order.end());
    std::sort(lost.begin(), lost.end());
    return absl::FailedPreconditionError(absl::StrCat(
        w_live, " live ranks x ", rows, " rows = ", w_live * rows, " rows cannot hold all ",
        e_count, " logical experts; experts [", absl::StrJoin(lost, ","),
        "] would have no replica. Revive ranks or add redundant slots"));
  }
  const bool hierarchical_ok = pr.num_groups % pr.num_nodes == 0 && pr.dead_ranks.empty();
  const bool keep_locality =
      opt.locality == NodeLocality::kKeep ||
      (opt.locality == NodeLocality::kAuto && hierarchical_ok && pr.num_nodes > 1);
  if (keep_locality && !hierarchical_ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "node locality needs num_groups G=", pr.num_groups, " divisible by num_nodes N=",
        pr.num_nodes, " and no dead ranks; pass --node-locality relax"));
  }

  Plan plan;
  plan.dead_ranks = pr.dead_ranks;
  std::sort(plan.dead_ranks.begin(), plan.dead_ranks.end());
  plan.physical_to_logical.resize(layers);
  std::vector<std::vector<int32_t>> replica_rank(layers);  // deepseek only
  const int p_live = w_live * rows;
  std::vector<int> dense(w_live);  // GPU indices of a plan over the live GPUs only
  std::iota(dense.begin(), dense.end(), 0);

  for (int l = 0; l < layers; ++l) {
    const std::vector<double>& w = (*pr.load)[l];
    std::vector<int32_t>& row = plan.physical_to_logical[l];
    const std::vector<int32_t>* old_row =
        opt.current != nullptr ? &opt.current->physical_to_logical(l) : nullptr;
    // Dead ranks keep what they had (they serve nothing; their rows carry no replicas).
    row.resize(pr.num_physical);
    for (int p = 0; p < pr.num_physical; ++p) row[p] = old_row ? (*old_row)[p] : p % e_count;
    if (opt.algorithm == Algorithm::kIncremental) continue;

    // DeepSeek's layer on the live GPUs (also the floor `balanced` never goes below).
    const std::vector<float> wf(w.begin(), w.end());
    const bool hier = hierarchical_ok && (keep_locality || opt.algorithm == Algorithm::kDeepSeek);
    DeepSeekLayer ds = hier
                           ? DeepSeekRebalanceLayer(wf, p_live, pr.num_groups, pr.num_nodes, w_live)
                           : DeepSeekRebalanceLayer(wf, p_live, 1, 1, w_live);
    if (opt.algorithm == Algorithm::kDeepSeek) {
      // Exact positions (no row alignment): this mode reproduces the reference.
      replica_rank[l].assign(pr.num_physical, -1);
      for (int i = 0; i < w_live; ++i) {
        for (int r = 0; r < rows; ++r) {
          row[live[i] * rows + r] = ds.physical_to_logical[i * rows + r];
          replica_rank[l][live[i] * rows + r] = ds.replica_rank[i * rows + r];
        }
      }
      continue;
    }
    const std::vector<std::vector<int32_t>> ds_gpus =
        SplitByGpu(ds.physical_to_logical, dense, rows);
    GpuAssignment ours;
    if (keep_locality) {
      // Groups to nodes as DeepSeek packs them, then each node on its own GPUs.
      const int group_size = e_count / pr.num_groups;
      std::vector<int> pack, rank;
      PackGroupsToNodes(wf, pr.num_groups, pr.num_nodes, pack, rank);
      const int gpus_per_node = pr.ep_size / pr.num_nodes;
      ours.gpu_experts.resize(w_live);
      for (int node = 0; node < pr.num_nodes; ++node) {
        std::vector<int32_t> experts;
        for (int g = 0; g < pr.num_groups; ++g) {
          if (pack[g] != node) continue;
          for (int j = 0; j < group_size; ++j) experts.push_back(g * group_size + j);
        }
        std::vector<double> nw;
        for (int32_t e : experts) nw.push_back(w[e]);
        GpuAssignment a = SolveBalancedLayer(nw, gpus_per_node, rows, opt.forbid_duplicate_on_gpu);
        for (int i = 0; i < gpus_per_node; ++i) {
          for (int32_t local : a.gpu_experts[i]) {
            ours.gpu_experts[node * gpus_per_node + i].push_back(experts[local]);
          }
        }
      }
      ours.max_load = MaxGpuLoad(w, ours.gpu_experts);
    } else {
      ours = SolveBalancedLayer(w, w_live, rows, opt.forbid_duplicate_on_gpu);
    }
    // Never worse than DeepSeek: keep the best of ours and its layer (both policies when the
    // hierarchical one is allowed; a relaxed plan may take either).
    const std::vector<std::vector<int32_t>>* pick = &ours.gpu_experts;
    double pick_max = ours.max_load;
    const double ds_max = MaxGpuLoad(w, ds_gpus);
    if (ds_max < pick_max) {
      pick = &ds_gpus;
      pick_max = ds_max;
    }
    std::vector<std::vector<int32_t>> ds_hier_gpus;
    if (!keep_locality && hierarchical_ok && pr.num_nodes > 1) {
      DeepSeekLayer h = DeepSeekRebalanceLayer(wf, p_live, pr.num_groups, pr.num_nodes, w_live);
      ds_hier_gpus = SplitByGpu(h.physical_to_logical, dense, rows);
      if (MaxGpuLoad(w, ds_hier_gpus) < pick_max) pick = &ds_hier_gpus;
    }
    // Node-local plans may only relabel GPUs inside a node.
    Scatter(*pick, live, rows, keep_locality ? pr.ep_size / pr.num_nodes : w_live, old_row, row);
  }

  bool target_met = true;
  if (opt.algorithm == Algorithm::kIncremental) {
    std::vector<LayerState> states;
    std::vector<double> targets(layers);
    states.reserve(layers);
    for (int l = 0; l < layers; ++l) {
      states.emplace_back((*pr.load)[l], w_live, rows,
                          LiveRows(opt.current->physical_to_logical(l), live, rows),
                          opt.forbid_duplicate_on_gpu);
      if (absl::Status s = states[l].EnsureEveryExpertPlaced(); !s.ok()) {
        return absl::FailedPreconditionError(absl::StrCat("layer ", l, ": ", s.message()));
      }
      if (opt.target_balancedness > 0) {
        targets[l] = opt.target_balancedness;
      } else {
        const GpuAssignment best =
            SolveBalancedLayer((*pr.load)[l], w_live, rows, opt.forbid_duplicate_on_gpu);
        const double mean = states[l].mean_load();
        targets[l] = best.max_load > 0 ? 0.99 * mean / best.max_load : 1.0;
      }
    }
    int64_t used = 0;
    for (const auto& s : states) used += s.moves();
    std::vector<char> stuck(layers, 0);
    // Each layer's balancedness, recomputed only for the layer a step changed (it is O(W)).
    std::vector<double> bal(layers);
    for (int l = 0; l < layers; ++l) bal[l] = states[l].balancedness();
    while (true) {
      // One step on the worst layer that is below its target and can still improve.
      int worst = -1;
      for (int l = 0; l < layers; ++l) {
        if (stuck[l] || bal[l] >= targets[l]) continue;
        if (worst < 0 || bal[l] < bal[worst]) worst = l;
      }
      if (worst < 0) break;
      const int64_t budget = opt.max_moves < 0 ? int64_t{1} << 40 : opt.max_moves - used;
      const int64_t before = states[worst].moves();
      if (!states[worst].Step(budget)) {
        stuck[worst] = 1;
        continue;
      }
      bal[worst] = states[worst].balancedness();
      used += states[worst].moves() - before;
    }
    for (int l = 0; l < layers; ++l) {
      if (states[l].balancedness() < targets[l]) target_met = false;
      const std::vector<int32_t>& lr = states[l].rows();
      for (int i = 0; i < w_live; ++i) {
        std::copy(lr.begin() + i * rows, lr.begin() + (i + 1) * rows,
                  plan.physical_to_logical[l].begin() + live[i] * rows);
      }
    }
  }

  // Derived outputs over live rows: counts and logical_to_all_physical.
  plan.replica_count.assign(layers, std::vector<int32_t>(e_count, 0));
  plan.logical_to_all_physical.data.resize(layers);
  int width = 1;
  for (int l = 0; l < layers; ++l) {
    for (int g : live) {
      for (int p = g * rows; p < (g + 1) * rows; ++p)
        ++plan.replica_count[l][plan.physical_to_logical[l][p]];
    }
    for (int c : plan.replica_count[l]) width = std::max(width, c);
  }
  plan.logical_to_all_physical.width = width;
  std::vector<int> fill(e_count);
  for (int l = 0; l < layers; ++l) {
    auto& l2p = plan.logical_to_all_physical.data[l];
    l2p.assign(static_cast<size_t>(e_count) * width, -1);
    std::fill(fill.begin(), fill.end(), 0);
    for (int g : live) {
      for (int p = g * rows; p < (g + 1) * rows; ++p) {
        const int32_t e = plan.physical_to_logical[l][p];
        // DeepSeek orders a row by replica rank (0 = the original); ours by physical id.
        const int pos = opt.algorithm == Algorithm::kDeepSeek ? replica_rank[l][p] : fill[e];
        l2p[static_cast<size_t>(e) * width + pos] = p;
        ++fill[e];
      }
    }
  }
  plan.stats = EvaluatePlacement(pr, plan.physical_to_logical, opt.current, opt.bytes_per_expert);
  plan.stats.target_met = target_met;
  return plan;
}

std::vector<std::vector<std::vector<int32_t>>> ReplicaTable::Nested() const {
  std::vector<std::vector<std::vector<int32_t>>> out(data.size());
  for (size_t l = 0; l < data.size(); ++l) {
    for (size_t i = 0; width > 0 && i < data[l].size(); i += width) {
      out[l].emplace_back(data[l].begin() + i, data[l].begin() + i + width);
    }
  }
  return out;
}

}  // namespace placement
}  // namespace eplb
