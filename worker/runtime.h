// WorkerRuntime: what runs beside the GPU ranks of one worker process, as a library an inference
// engine embeds (the daemon `eplb_worker` and the simulator use it too).
//
//   * load recording: the physical ids of tokens routed to this worker's ranks, per layer and
//     local row, tagged with the map version in force; TakeReport() drains them for the
//     controller.
//   * updates: PREPARE builds the new map (base version + changed layers), derives the move plan
//     (identical on every rank), stages this worker's rows from the live weights of the old map
//     and verifies every staged row's fingerprint against the checkpoint before answering; any
//     failure is a NACK naming it, and the old map stays in force. COMMIT writes the staged rows
//     in place and then switches the map and the static dispatch tables; ABORT drops the stage.
//
// CPU backend: stores in host memory, peers reached through a CpuFabric: the workers of one
// process, and with a shared directory the workers of other processes on the machine (tests,
// simulator). Thread-safe.
#ifndef EPLB_WORKER_RUNTIME_H_
#define EPLB_WORKER_RUNTIME_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/mutex.h"
#include "core/dispatch.h"
#include "core/expert_layout.h"
#include "core/move_plan.h"
#include "core/placement_map.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "proto/eplb.pb.h"
#include "worker/cpu_mover.h"
#include "worker/expert_store.h"

namespace eplb {

// The stores of every rank in this process, by rank (what NCCL peers are on GPUs). Row data of
// all stores is read and written under data_mutex(): staging reads peers' live rows, commits and
// checkpoint loads write them (the rollout protocol already orders them; the lock makes that
// visible, e.g. to ThreadSanitizer, and safe if a caller breaks the protocol).
class CpuFabric {
 public:
  explicit CpuFabric(int ep_size) : stores_(ep_size, nullptr), alive_(ep_size, true) {}
  Mutex* data_mutex() { return &data_mu_; }

  // Cross-process mode: local stores live in files `dir/rank-<r>` and the ranks of other
  // processes are reached by mapping their files (see HostExpertStore::CreateShared).
  void SetSharedDirectory(std::string dir) {
    MutexLock l(&mu_);
    dir_ = std::move(dir);
  }
  std::string shared_directory() {
    MutexLock l(&mu_);
    return dir_;
  }
  void Attach(int rank, HostExpertStore* store) {
    MutexLock l(&mu_);
    stores_[rank] = store;
  }
  void SetAlive(int rank, bool alive) {
    MutexLock l(&mu_);
    alive_[rank] = alive;
  }
  // Every rank's store: local ones, and in cross-process mode the peers' mapped files (shaped
  // like `like`; ranks whose file does not exist yet stay null).
  std::vector<HostExpertStore*> stores(const HostExpertStore* like = nullptr);
  std::vector<bool> alive(const HostExpertStore* like = nullptr);

 private:
  Mutex mu_;
  Mutex data_mu_;
  std::string dir_ ABSL_GUARDED_BY(mu_);
  std::vector<HostExpertStore*> stores_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<HostExpertStore>> peers_ ABSL_GUARDED_BY(mu_);
  std::vector<bool> alive_ ABSL_GUARDED_BY(mu_);
};

struct WorkerOptions {
  std::string worker_id;
  std::vector<int> ranks;
  int node = 0;
  LayoutConfig layout;
  int num_layers = 1;
  std::vector<TensorSpec> tensors = {{"w13", 256}, {"w2", 128}};
  CheckpointReader checkpoint = SyntheticCheckpoint;
  // Where the worker's metrics go (eplb_worker_*, labelled by worker id); null: none.
  std::shared_ptr<prometheus::Registry> registry;
};

class WorkerRuntime {
 public:
  static absl::StatusOr<std::unique_ptr<WorkerRuntime>> Create(WorkerOptions options,
                                                               CpuFabric* fabric);

  const WorkerOptions& options() const { return options_; }
  const ExpertLayout& layout() const { return layout_; }
  v1::RegisterRequest RegisterRequest() const;

  // Adopts the controller's placement (a resync, or the first one) and loads the checkpoint.
  absl::Status Resync(const v1::Placement& placement);

  // Load: physical ids of (token, k) pairs routed to this worker's ranks in one step of `layer`;
  // ids of other ranks and padding are ignored.
  void RecordReceived(int layer, absl::Span<const int64_t> physical_ids);
  // Drains the counters into a report (map version = the one they were counted under).
  v1::LoadReport TakeReport(const std::string& session_id, int64_t first_step, int64_t last_step);

  v1::PlacementAnswer OnUpdate(const v1::PlacementUpdate& update);

  uint64_t applied_version() const;
  std::shared_ptr<const PlacementMap> map() const;
  // This rank's static dispatch row for a layer (rebuilt at every commit).
  std::vector<int32_t> DispatchRow(int rank, int layer) const;
  // Rows of this worker whose weights disagree with the map in force (empty: consistent).
  std::vector<std::string> Inconsistencies() const;
  // The counters recorded since the last report, [own rank][layers * L] (tests compare them with
  // the router's choices).
  std::vector<std::vector<int64_t>> PendingCounts() const;

 private:
  WorkerRuntime(WorkerOptions options, ExpertLayout layout, CpuFabric* fabric);
  v1::PlacementAnswer Answer(const v1::PlacementUpdate& u, const absl::Status& s) const;
  absl::Status Prepare(const v1::PlacementUpdate& u) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  struct Metrics {
    prometheus::Gauge* map_version = nullptr;
    prometheus::Counter* prepare_ack = nullptr;
    prometheus::Counter* prepare_nack = nullptr;
    prometheus::Counter* commits = nullptr;
    prometheus::Counter* rows_moved = nullptr;
    prometheus::Counter* bytes_received = nullptr;
    prometheus::Counter* reports = nullptr;
  };

  const WorkerOptions options_;
  const ExpertLayout layout_;
  CpuFabric* fabric_;
  Metrics metrics_;
  std::vector<std::unique_ptr<HostExpertStore>> stores_;  // per own rank, owned
  mutable Mutex mu_;
  uint64_t version_ ABSL_GUARDED_BY(mu_) = 0;
  std::shared_ptr<const PlacementMap> map_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<StaticDispatch> dispatch_ ABSL_GUARDED_BY(mu_);
  std::vector<std::vector<int64_t>> counts_ ABSL_GUARDED_BY(mu_);  // [own rank][layers * L]
  // Staged version.
  uint64_t staged_version_ ABSL_GUARDED_BY(mu_) = 0;
  std::shared_ptr<const PlacementMap> staged_map_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<CpuMover> mover_ ABSL_GUARDED_BY(mu_);
};

}  // namespace eplb

#endif  // EPLB_WORKER_RUNTIME_H_
