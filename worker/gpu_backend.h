// GpuWeightBackend: one rank's expert rows in GPU memory, moved over NCCL (one process per GPU,
// as in a serving engine). The rows are [layers][L + S][row_bytes] in device memory at stable
// addresses (the engine's kernels and captured CUDA graphs read them in place); staging is a
// pool of `staging_rows` rows (default L: one layer's worth) that holds a rollout's received rows
// between PREPARE and COMMIT. A rollout that needs more is refused (ResourceExhausted) on every
// rank alike, before any transfer; the controller's layers_per_rollout keeps rollouts within it.
//
// Staging is collective (NCCL send/recv between ranks), so WorkerRuntime runs PREPARE and COMMIT
// at step boundaries all ranks agree on. Integrity: every staged row is copied back and its
// fingerprint compared with the checkpoint's expert (fingerprints cached per expert); a mismatch
// is DataLoss naming the rows, and nothing live was written.
//
//   EPLB_ASSIGN_OR_RETURN(auto backend, GpuWeightBackend::Create(layout, layers, rank, row_bytes,
//                                                                ckpt, nccl_id));
//   auto runtime = WorkerRuntime::Create(options, std::move(backend));
#ifndef EPLB_WORKER_GPU_BACKEND_H_
#define EPLB_WORKER_GPU_BACKEND_H_

#include <nccl.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "core/expert_layout.h"
#include "worker/expert_store.h"
#include "worker/nccl_mover.h"
#include "worker/weight_backend.h"

namespace eplb {

class GpuWeightBackend : public WeightBackend {
 public:
  // On the current CUDA device; every rank calls it with the same `id` (ncclGetUniqueId).
  static absl::StatusOr<std::unique_ptr<GpuWeightBackend>> Create(
      const ExpertLayout& layout, int num_layers, int rank, int64_t row_bytes,
      CheckpointReader checkpoint, const ncclUniqueId& id, int window = 32, int staging_rows = 0);

  int64_t row_bytes() const override { return mover_->row_bytes(); }
  bool collective() const override { return true; }
  absl::Status Load(const PlacementMap& map) override;
  absl::Status Stage(const MovePlan& plan, const PlacementMap& next,
                     const std::vector<int>& dead) override;
  absl::StatusOr<int64_t> Commit() override;
  void Abort() override;
  int64_t staged_bytes_received() const override { return staged_bytes_; }
  std::vector<std::string> Inconsistencies(const PlacementMap& map) override;

  // Device pointer of a live row of this rank (stable for the backend's lifetime).
  uint8_t* Row(int layer, int row) const { return mover_->Row(rank_, layer, row); }
  // Seconds the last Stage spent moving (before verification), for benchmarks.
  double last_stage_seconds() const { return last_stage_seconds_; }

 private:
  GpuWeightBackend(const ExpertLayout& layout, int num_layers, int rank, CheckpointReader ckpt)
      : layout_(layout), num_layers_(num_layers), rank_(rank), checkpoint_(std::move(ckpt)) {}
  uint64_t ExpectedFingerprint(int layer, int64_t checkpoint_id);
  absl::StatusOr<uint64_t> DeviceFingerprint(const uint8_t* device_row);

  ExpertLayout layout_;
  int num_layers_;
  int rank_;
  CheckpointReader checkpoint_;
  std::unique_ptr<NcclMover> mover_;
  std::map<std::pair<int, int64_t>, uint64_t> fingerprints_;
  std::vector<uint8_t> host_row_;
  MovePlan staged_;  // this rank's received rows of the staged version
  bool has_staged_ = false;
  int64_t staged_bytes_ = 0;
  double last_stage_seconds_ = 0;
};

}  // namespace eplb

#endif  // EPLB_WORKER_GPU_BACKEND_H_
