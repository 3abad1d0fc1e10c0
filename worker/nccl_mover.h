// NcclMover: applies a move plan between GPUs over NCCL (the GPU twin of CpuMover).
//
// Per rank: the live expert rows of every layer in device memory ([layers][L + S][row_bytes]) and
// a pool of staging rows (default L: one layer's worth). Stage(layer) takes a staging row for
// every row the rank receives in that layer (ResourceExhausted, before anything is enqueued, if
// the pool is short) and enqueues, in the plan's order, which every rank derives identically:
// local copies from live rows into staging; peer transfers as grouped ncclSend/ncclRecv in
// bounded windows (`window` transfers per group: one huge group can hang NCCL); then the
// after-peer copies inside staging. Live rows are only read. Commit(layer) then copies the
// changed rows from staging into the live rows, in place, so pointers captured in CUDA graphs
// stay valid, and returns the layer's staging rows to the pool. Shared rows are never touched.
//
// Either one process drives all GPUs (CreateSingleProcess: ncclCommInitAll, tests and
// benchmarks), or each process drives one rank on its current device (CreateForRank: every rank
// calls it with the same ncclUniqueId, as in a serving engine); then each process enqueues only
// the transfers it takes part in, in the plan's order, which is the same on every rank.
//
// CUDA/NCCL errors come back as absl::Status with the call and file:line.
#ifndef EPLB_WORKER_NCCL_MOVER_H_
#define EPLB_WORKER_NCCL_MOVER_H_

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/expert_layout.h"
#include "core/move_plan.h"

namespace eplb {

struct NcclMoverOptions {
  int num_layers = 1;
  int64_t row_bytes = 0;
  int window = 32;  // peer transfers per NCCL group
  // Staging rows per rank (0: L, one layer). Stage then commit layer by layer needs L; a
  // PREPARE that stages several layers before COMMIT needs the plan's MaxRowsPerRank().
  int staging_rows = 0;
};

class NcclMover {
 public:
  // All ranks of the layout in this process, rank r on device r (needs W visible GPUs).
  static absl::StatusOr<std::unique_ptr<NcclMover>> CreateSingleProcess(
      const ExpertLayout& layout, const NcclMoverOptions& options);
  // One rank of a multi-process job, on the current CUDA device; collective over all ranks.
  static absl::StatusOr<std::unique_ptr<NcclMover>> CreateForRank(const ExpertLayout& layout,
                                                                  const NcclMoverOptions& options,
                                                                  int rank, const ncclUniqueId& id);
  ~NcclMover();
  bool is_local(int rank) const { return comms_[rank] != nullptr; }
  cudaStream_t stream(int rank) const { return streams_[rank]; }
  // Device pointer of a staged row (valid between Stage and Commit), or null.
  uint8_t* StagedRow(int rank, int layer, int row) const { return Staging(rank, layer, row); }
  int staging_rows() const { return staging_rows_; }
  // Returns every staging row to the pool (an aborted version).
  void Release();

  // Device pointer of a live row.
  uint8_t* Row(int rank, int layer, int row) const;
  int64_t row_bytes() const { return options_.row_bytes; }

  absl::Status Stage(const MovePlan& plan, int layer);
  absl::Status Commit(const MovePlan& plan, int layer);
  absl::Status Synchronize();
  int64_t bytes_received() const { return bytes_received_; }

 private:
  // Per-rank state for every rank of the layout (null/-1 until a creator fills this process's).
  NcclMover(const ExpertLayout& layout, const NcclMoverOptions& options)
      : layout_(layout),
        options_(options),
        comms_(layout.ep_size(), nullptr),
        device_(layout.ep_size(), -1),
        streams_(layout.ep_size(), nullptr),
        live_(layout.ep_size(), nullptr),
        staging_(layout.ep_size(), nullptr),
        staging_rows_(options.staging_rows > 0 ? options.staging_rows
                                               : layout.routed_slots_per_rank()),
        free_(layout.ep_size()) {}
  uint8_t* Staging(int rank, int layer, int row) const;
  absl::Status Allocate(int rank);

  ExpertLayout layout_;
  NcclMoverOptions options_;
  std::vector<ncclComm_t> comms_;  // per rank; null for ranks of other processes
  std::vector<int> device_;        // per rank
  std::vector<cudaStream_t> streams_;
  std::vector<uint8_t*> live_;     // per rank: [layers][L + S][row_bytes]
  std::vector<uint8_t*> staging_;  // per rank: [staging_rows][row_bytes]
  int staging_rows_ = 0;
  // (rank, layer, row) -> staging row in use; free staging rows per rank.
  std::map<std::tuple<int, int, int>, int> slot_;
  std::vector<std::vector<int>> free_;
  int64_t bytes_received_ = 0;
};

}  // namespace eplb

#endif  // EPLB_WORKER_NCCL_MOVER_H_
