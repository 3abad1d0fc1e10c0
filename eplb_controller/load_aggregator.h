// LoadAggregator: the controller's view of expert load, per MoE layer.
//
// Workers report per-physical-slot counts of their ranks, tagged with the map version they were
// counted under. Each report is converted to logical load with *that* version's map (never the
// newest: a report counted under version 7 and converted with version 8's map would credit the
// wrong experts), then summed over a sliding window (time buckets) or with exponential decay.
// The GPU load under the map in force is kept beside it, for the observed balancedness.
//
// Not thread-safe: the Controller serialises access.
#ifndef EPLB_EPLB_CONTROLLER_LOAD_AGGREGATOR_H_
#define EPLB_EPLB_CONTROLLER_LOAD_AGGREGATOR_H_

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "core/expert_layout.h"
#include "core/formats.h"
#include "core/placement_map.h"

namespace eplb {

struct AggregationOptions {
  // > 0: sum over the last `window` (in 10 buckets). 0: exponential decay with `half_life`.
  absl::Duration window = absl::Seconds(60);
  absl::Duration half_life = absl::Seconds(30);
  int versions_kept = 8;  // maps of recent versions, for reports counted under them
};

// One rank's counts: [num_layers][L] flattened, layer-major.
struct RankCounts {
  int rank = 0;
  absl::Span<const int64_t> counts;  // not owned: valid for the Add call
};

class LoadAggregator {
 public:
  LoadAggregator(const ExpertLayout& layout, int num_layers, AggregationOptions options);

  // Makes `map` known as `version` (and the one in force). Older versions beyond
  // versions_kept are forgotten; reports counted under them are then rejected.
  void SetMap(uint64_t version, std::shared_ptr<const PlacementMap> map);

  // Validates everything first (known version, ranks in range, shapes, counts >= 0), then adds.
  // On error nothing changes. InvalidArgument / FailedPrecondition name the offending value.
  absl::Status Add(uint64_t map_version, const std::vector<RankCounts>& ranks, absl::Time now);

  // Logical load [layers][E] over the window (or decayed) as of `now`.
  LoadMatrix LogicalLoad(absl::Time now) const;
  // GPU load [layers][W] under the map in force, same window.
  std::vector<std::vector<double>> GpuLoad(absl::Time now) const;
  double TotalLoad(absl::Time now) const;
  bool HasVersion(uint64_t version) const { return maps_.count(version) > 0; }

 private:
  struct Bucket {
    absl::Time start;
    LoadMatrix logical;                    // [layers][E]
    std::vector<std::vector<double>> gpu;  // [layers][W]
  };
  void Advance(absl::Time now);
  Bucket NewBucket(absl::Time start) const;
  double Weight(const Bucket& b, absl::Time now) const;

  ExpertLayout layout_;
  int num_layers_;
  AggregationOptions options_;
  uint64_t current_version_ = 0;
  std::map<uint64_t, std::shared_ptr<const PlacementMap>> maps_;
  std::deque<Bucket> buckets_;  // sliding window: newest last; decay: one bucket
  absl::Time decay_time_ = absl::InfinitePast();
};

}  // namespace eplb

#endif  // EPLB_EPLB_CONTROLLER_LOAD_AGGREGATOR_H_
