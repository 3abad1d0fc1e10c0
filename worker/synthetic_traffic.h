// Synthetic routing for simulations: each step, tokens from random source ranks (of the whole
// cluster) pick K distinct logical experts from a Zipf distribution over a hot-expert order that
// drifts over time; each (token, k) goes through the source rank's static dispatch table to a
// physical id, and the worker owning that id, if it is in this process, records it as received
// load. Processes given the same seed generate the same global stream.
#ifndef EPLB_WORKER_SYNTHETIC_TRAFFIC_H_
#define EPLB_WORKER_SYNTHETIC_TRAFFIC_H_

#include <cstdint>
#include <random>
#include <vector>

#include "worker/runtime.h"

namespace eplb {

struct TrafficOptions {
  int tokens_per_step = 512;  // per layer, over the whole cluster
  int top_k = 4;
  double zipf = 1.2;
  double drift_fraction = 0.25;  // share of the hot order re-shuffled by Drift()
  uint64_t seed = 1;
  // Group locality: with this probability a token picks all its experts inside one expert group
  // (drawn by the group's weight), as group-limited routing does.
  int num_groups = 1;
  double group_locality = 0;
  // Bursts: each step, with this probability, one random expert's weight is multiplied by
  // burst_factor for burst_steps steps.
  double burst_probability = 0;
  double burst_factor = 4;
  int burst_steps = 50;
};

class SyntheticTraffic {
 public:
  SyntheticTraffic(const ExpertLayout& layout, int num_layers, TrafficOptions options);
  // One step of every layer, recorded into the workers that own the chosen physical ids.
  void Step(const std::vector<WorkerRuntime*>& workers);
  // Moves the hot experts: a fraction of each layer's order is re-shuffled.
  void Drift();
  // Replaces the Zipf model by explicit per-layer expert weights [layers][E] (a recorded load
  // step, e.g. SGLang's logical_count); Drift() has no effect while they are set.
  void SetWeights(const std::vector<std::vector<double>>& weights);
  // One token's K distinct logical experts for `layer` (what Step draws per token).
  std::vector<int32_t> SampleToken(int layer);

 private:
  double Weight(int layer, int32_t e) const;  // relative draw weight of expert e
  int32_t Draw(int layer);                    // one expert by weight (bursts included)

  ExpertLayout layout_;
  int num_layers_;
  TrafficOptions options_;
  std::mt19937_64 rng_;
  std::vector<std::vector<int32_t>> order_;  // [layer][rank in popularity] = logical id
  std::vector<double> cdf_;
  std::vector<std::vector<double>> layer_cdf_;  // explicit weights' CDF per layer, or empty
  int burst_expert_ = -1;
  int burst_left_ = 0;
};

}  // namespace eplb

#endif  // EPLB_WORKER_SYNTHETIC_TRAFFIC_H_
