// Incremental rebalancing: change as few rows of the current placement as it takes.
//
// One layer's live rows are a LayerState. Each Step applies the single change with the best
// max-GPU-load reduction per moved replica: a swap of two replicas between the heaviest GPU and
// another (cost 0 to 2), or re-pointing one row from an expert with a spare replica to the
// biggest expert of the heaviest GPU (cost 0 or 1). Rows that keep their expert never move.
#ifndef EPLB_EPLB_CONTROLLER_PLACEMENT_INCREMENTAL_H_
#define EPLB_EPLB_CONTROLLER_PLACEMENT_INCREMENTAL_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"

namespace eplb {
namespace placement {

class LayerState {
 public:
  // rows: [num_gpus * rows_per_gpu] logical ids of the live GPUs' rows, GPU-major.
  LayerState(std::vector<double> weight, int num_gpus, int rows_per_gpu, std::vector<int32_t> rows,
             bool forbid_duplicate_on_gpu);

  // Gives every expert without a live replica one, re-pointing the row whose loss hurts least.
  // FailedPrecondition naming the experts when no row can be freed. Each costs a move.
  absl::Status EnsureEveryExpertPlaced();

  // Applies the best improving change costing at most `budget` moves; false if there is none.
  bool Step(int64_t budget);

  double max_load() const;
  double mean_load() const { return total_ / num_gpus_; }
  double balancedness() const;
  int64_t moves() const { return moves_; }
  const std::vector<int32_t>& rows() const { return rows_; }

 private:
  double Size(int32_t e) const { return weight_[e] / count_[e]; }
  int& Held(int g, int32_t e) { return held_[static_cast<size_t>(g) * num_experts_ + e]; }
  int HeldOld(int g, int32_t e) const {
    return held_old_[static_cast<size_t>(g) * num_experts_ + e];
  }
  // Move-count change of taking one `e` into (+1) or out of (-1) GPU g.
  int InCost(int g, int32_t e) { return Held(g, e) >= HeldOld(g, e) ? 1 : 0; }
  int OutCost(int g, int32_t e) { return Held(g, e) > HeldOld(g, e) ? -1 : 0; }
  void Replace(int g, int r, int32_t e);
  void RecomputeLoads();

  std::vector<double> weight_;
  int num_experts_;
  int num_gpus_;
  int rows_per_gpu_;
  bool no_dup_;
  std::vector<int32_t> rows_;
  std::vector<int> count_;
  std::vector<int> held_;
  std::vector<int> held_old_;
  std::vector<double> load_;
  double total_ = 0;
  int64_t moves_ = 0;
};

}  // namespace placement
}  // namespace eplb

#endif  // EPLB_EPLB_CONTROLLER_PLACEMENT_INCREMENTAL_H_
