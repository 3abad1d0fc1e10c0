#include "tests/e2e/moe_cpu_harness.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "core/dispatch.h"
#include "core/topk_postprocess.h"

namespace eplb {
namespace e2e {
namespace {

// y = W2 * silu(W1 * x), weights as stored in a row.
std::vector<float> Ffn(const MoeShape& s, const uint8_t* row, const std::vector<float>& x) {
  const float* w1 = reinterpret_cast<const float*>(row);
  const float* w2 = w1 + static_cast<size_t>(s.intermediate) * s.hidden;
  std::vector<float> h(s.intermediate);
  for (int i = 0; i < s.intermediate; ++i) {
    float acc = 0;
    for (int j = 0; j < s.hidden; ++j) acc += w1[i * s.hidden + j] * x[j];
    h[i] = acc / (1.0f + std::exp(-acc));
  }
  std::vector<float> y(s.hidden);
  for (int j = 0; j < s.hidden; ++j) {
    float acc = 0;
    for (int i = 0; i < s.intermediate; ++i) acc += w2[j * s.intermediate + i] * h[i];
    y[j] = acc;
  }
  return y;
}

}  // namespace

int64_t ExpertRowBytes(const MoeShape& s) {
  return static_cast<int64_t>(2) * s.hidden * s.intermediate * sizeof(float);
}

CheckpointReader FfnCheckpoint(const MoeShape& shape) {
  return [shape](int layer, int64_t id, uint8_t* out, int64_t bytes) {
    std::mt19937 rng(static_cast<uint32_t>(layer * 7919 + id * 104729 + 17));
    std::normal_distribution<float> d(0.0f, 0.3f);
    float* w = reinterpret_cast<float*>(out);
    for (int64_t i = 0; i < bytes / static_cast<int64_t>(sizeof(float)); ++i) w[i] = d(rng);
  };
}

StepResult RunStep(const MoeShape& shape, const std::vector<WorkerRuntime*>& workers,
                   CpuFabric* fabric, int step, int tokens_per_rank, int hot,
                   bool plant_logical_count_bug) {
  const ExpertLayout& layout = workers.front()->layout();
  const int w = layout.ep_size();
  const int e_count = layout.num_logical();
  const int k_count = shape.top_k;
  const int layers = workers.front()->options().num_layers;
  const int slots_per_rank = layout.slots_per_rank();
  // The buggy remap uses the logical count: L' = E / W.
  const int bug_l = e_count / w;
  std::vector<int> worker_of(w, -1);
  for (size_t i = 0; i < workers.size(); ++i) {
    for (int r : workers[i]->options().ranks) worker_of[r] = static_cast<int>(i);
  }
  const CheckpointReader ckpt = FfnCheckpoint(shape);
  std::vector<uint8_t> ref_row(ExpertRowBytes(shape));
  StepResult result;
  result.logical_choices.assign(static_cast<size_t>(layers) * e_count, 0);
  // Maps first (worker locks), then the weights (fabric lock), then the load records (worker
  // locks again): the same lock order as the runtime's.
  std::vector<std::shared_ptr<const PlacementMap>> maps(w);
  for (int r = 0; r < w; ++r) maps[r] = workers[worker_of[r]]->map();
  std::vector<std::vector<std::vector<int64_t>>> received(
      layers, std::vector<std::vector<int64_t>>(workers.size()));
  {
    MutexLock data(fabric->data_mutex());
    const std::vector<HostExpertStore*> stores = fabric->stores();
    for (int layer = 0; layer < layers; ++layer) {
      for (int src = 0; src < w; ++src) {
        std::shared_ptr<const PlacementMap> map = maps[src];
        // Seeded tokens and router.
        std::mt19937 rng(static_cast<uint32_t>(step * 1000003 + layer * 8191 + src * 131 + 7));
        std::normal_distribution<float> d(0.0f, 1.0f);
        std::vector<std::vector<float>> x(tokens_per_rank, std::vector<float>(shape.hidden));
        std::vector<int64_t> logical(static_cast<size_t>(tokens_per_rank) * k_count);
        std::vector<float> weight(logical.size());
        for (int t = 0; t < tokens_per_rank; ++t) {
          for (float& v : x[t]) v = d(rng);
          std::vector<float> logits(e_count);
          for (int e = 0; e < e_count; ++e) logits[e] = d(rng) + (e == hot ? 2.5f : 0.0f);
          std::vector<int> idx(e_count);
          std::iota(idx.begin(), idx.end(), 0);
          std::partial_sort(idx.begin(), idx.begin() + k_count, idx.end(),
                            [&](int a, int b) { return logits[a] > logits[b]; });
          float norm = 0;
          for (int k = 0; k < k_count; ++k) norm += std::exp(logits[idx[k]]);
          for (int k = 0; k < k_count; ++k) {
            logical[t * k_count + k] = idx[k];
            weight[t * k_count + k] = std::exp(logits[idx[k]]) / norm;
            ++result.logical_choices[static_cast<size_t>(layer) * e_count + idx[k]];
          }
        }
        // Dispatch, remap, Waterfill: the core's post-processing with this rank's tables.
        auto tables = StaticDispatch::Build(layout, *map);
        TopkOptions o;
        o.layer = layer;
        o.rank = src;
        o.top_k = k_count;
        o.routed_scaling_factor = shape.routed_scaling_factor;
        o.waterfill_min_batch = 0;  // exercise Waterfill on every batch
        auto post = PostprocessTopk(layout, *map, *tables, o, logical, weight);
        const int width = k_count + layout.num_shared();
        for (int t = 0; t < tokens_per_rank; ++t) {
          // "All-to-all": each slot's owner computes its expert on the token; results come back in
          // column order and are combined in that order.
          std::vector<float> out(shape.hidden, 0.0f);
          for (int c = 0; c < width; ++c) {
            const int64_t slot = post->slots[t * width + c];
            if (slot < 0) continue;
            int rank = static_cast<int>(slot / slots_per_rank);
            int row = static_cast<int>(slot % slots_per_rank);
            if (plant_logical_count_bug) {  // slots laid out with L' = E / W
              const int64_t p = c < k_count ? post->physical[t * k_count + c] : -1;
              if (p >= 0) {
                const int64_t bad_slot = p + (p / bug_l) * layout.num_shared();
                rank = std::min<int>(static_cast<int>(bad_slot / (bug_l + 1)), w - 1);
                row = static_cast<int>(bad_slot % (bug_l + 1));
              } else {
                rank = post->shared_rank[t];
                row = bug_l;
              }
            }
            if (c < k_count) {
              received[layer][worker_of[rank]].push_back(post->physical[t * k_count + c]);
            }
            const std::vector<float> y = Ffn(shape, stores[rank]->Row(layer, row), x[t]);
            const float wgt = post->weights[t * width + c];
            for (int j = 0; j < shape.hidden; ++j) out[j] += wgt * y[j];
          }
          // Reference: no expert parallelism, weights from the checkpoint, same order.
          std::vector<float> ref(shape.hidden, 0.0f);
          for (int k = 0; k < k_count; ++k) {
            ckpt(layer, logical[t * k_count + k], ref_row.data(), ref_row.size());
            const std::vector<float> y = Ffn(shape, ref_row.data(), x[t]);
            for (int j = 0; j < shape.hidden; ++j) ref[j] += weight[t * k_count + k] * y[j];
          }
          ckpt(layer, e_count, ref_row.data(), ref_row.size());
          const std::vector<float> ys = Ffn(shape, ref_row.data(), x[t]);
          const float sw = 1.0f / shape.routed_scaling_factor;
          for (int j = 0; j < shape.hidden; ++j) ref[j] += sw * ys[j];
          bool same = true;
          for (int j = 0; j < shape.hidden; ++j) {
            same &= out[j] == ref[j];
            result.max_abs_diff = std::max<double>(result.max_abs_diff, std::fabs(out[j] - ref[j]));
          }
          result.mismatches += !same;
        }
      }
    }
  }
  for (int layer = 0; layer < layers; ++layer) {
    for (size_t i = 0; i < workers.size(); ++i)
      workers[i]->RecordReceived(layer, received[layer][i]);
  }
  return result;
}

}  // namespace e2e
}  // namespace eplb
