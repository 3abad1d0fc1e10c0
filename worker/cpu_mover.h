// CpuMover: applies a move plan to in-process ranks' host stores (the CPU backend of the
// weight movers; the NCCL mover does the same between GPUs).
//
// Two steps, as on GPUs: Stage reads every source from the live (old) weights into one layer of
// staging memory per rank, without touching any live row, so the old map stays fully in force;
// Commit then writes only the rows that change. A peer that is gone during Stage makes it fail
// with Unavailable naming the peer, and nothing has been written: the caller NACKs.
//
//   CpuMover mover(stores);                       // stores[r] is rank r's store
//   EPLB_RETURN_IF_ERROR(mover.Stage(plan, layer, alive));
//   mover.Commit();
#ifndef EPLB_WORKER_CPU_MOVER_H_
#define EPLB_WORKER_CPU_MOVER_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "core/move_plan.h"
#include "worker/expert_store.h"

namespace eplb {

class CpuMover {
 public:
  explicit CpuMover(std::vector<HostExpertStore*> stores) : stores_(std::move(stores)) {}

  // Stages one layer's transfers for every rank (layers accumulate until Commit or Abort).
  // alive[r] false: rank r cannot send; that layer then stages nothing.
  absl::Status Stage(const MovePlan& plan, int layer, const std::vector<bool>& alive);
  // Writes the staged rows; no-op if nothing is staged.
  void Commit();
  // Drops what was staged (an aborted version).
  void Abort() { staged_.clear(); }
  int64_t bytes_received() const { return bytes_received_; }
  // What Stage staged, for integrity checks before Commit.
  struct StagedRow {
    int rank, layer, row;
    const std::vector<uint8_t>* data;
  };
  std::vector<StagedRow> staged() const;

 private:
  struct Staged {
    int rank, layer, row;
    std::vector<uint8_t> data;
  };
  std::vector<HostExpertStore*> stores_;
  std::vector<Staged> staged_;
  int64_t bytes_received_ = 0;
};

}  // namespace eplb

#endif  // EPLB_WORKER_CPU_MOVER_H_
