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
// The weights live in a WeightBackend: host memory with peers through a CpuFabric (tests, the
// simulator), or GPU memory with peers over NCCL (GpuWeightBackend). With a collective backend
// every rank must stage and switch at the same step boundary: PREPARE and COMMIT then wait in a
// queue (Submit) until the engine's step loop calls StepBoundary() and every rank holds the same
// one. Thread-safe.
#ifndef EPLB_WORKER_RUNTIME_H_
#define EPLB_WORKER_RUNTIME_H_

#include <cstdint>
#include <functional>
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
#include "worker/cpu_backend.h"
#include "worker/expert_store.h"
#include "worker/weight_backend.h"

namespace eplb {

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
  // CPU backend: host stores attached to `fabric` (shared files when it has a directory).
  static absl::StatusOr<std::unique_ptr<WorkerRuntime>> Create(WorkerOptions options,
                                                               CpuFabric* fabric);
  // Any backend (e.g. GpuWeightBackend); `options.tensors` must add up to its row size.
  static absl::StatusOr<std::unique_ptr<WorkerRuntime>> Create(
      WorkerOptions options, std::unique_ptr<WeightBackend> backend);

  const WorkerOptions& options() const { return options_; }
  const ExpertLayout& layout() const { return layout_; }
  v1::RegisterRequest RegisterRequest() const;

  // Adopts the controller's placement (a resync, or the first one) and loads the checkpoint.
  absl::Status Resync(const v1::Placement& placement);
  // The same for a map at hand (e.g. the identity map when there is no controller).
  absl::Status Adopt(const PlacementMap& map, uint64_t version);

  // Load: physical ids of (token, k) pairs routed to this worker's ranks in one step of `layer`;
  // ids of other ranks and padding are ignored.
  void RecordReceived(int layer, absl::Span<const int64_t> physical_ids);
  // Drains the counters into a report (map version = the one they were counted under).
  v1::LoadReport TakeReport(const std::string& session_id, int64_t first_step, int64_t last_step);

  // Handles an update at once (for a collective backend the caller must make every rank call it
  // at the same point).
  v1::PlacementAnswer OnUpdate(const v1::PlacementUpdate& update);

  // What the controller client calls: with a local backend, OnUpdate and `done` at once. With a
  // collective backend a valid PREPARE or COMMIT waits for StepBoundary, which runs `done`; an
  // invalid one is answered (NACK) at once, so that no rank enters a collective alone; ABORT
  // drops a waiting or staged version at once.
  using AnswerFn = std::function<void(const v1::PlacementAnswer&)>;
  void Submit(const v1::PlacementUpdate& update, AnswerFn done);

  // Element-wise minimum of a vector over every rank (the engine's all-reduce), the same on all.
  using AllMin = std::function<absl::StatusOr<std::vector<int64_t>>(const std::vector<int64_t>&)>;
  // Called by the engine between two forward steps on every rank (collective backends). Runs the
  // PREPARE or COMMIT that every rank holds, so all stage together and all switch at this
  // boundary. Returns what ran: "", "prepare" or "commit" (errors are NACKs, not statuses; the
  // status is the all-reduce's).
  absl::StatusOr<std::string> StepBoundary(const AllMin& all_min);

  uint64_t applied_version() const;
  std::shared_ptr<const PlacementMap> map() const;
  // This rank's static dispatch row for a layer (rebuilt at every commit).
  std::vector<int32_t> DispatchRow(int rank, int layer) const;
  // Rows of this worker whose weights disagree with the map in force (empty: consistent).
  std::vector<std::string> Inconsistencies() const;
  // Load counted elsewhere (e.g. by the histogram kernel): counts[p] for p in [0, P) of one
  // layer; only this worker's rows are taken, shared slots have no physical id.
  void RecordCounts(int layer, absl::Span<const int64_t> counts_by_physical);
  // The counters recorded since the last report, [own rank][layers * L] (tests compare them with
  // the router's choices).
  std::vector<std::vector<int64_t>> PendingCounts() const;

 private:
  WorkerRuntime(WorkerOptions options, ExpertLayout layout, std::unique_ptr<WeightBackend> backend);
  v1::PlacementAnswer Answer(const v1::PlacementUpdate& u, const absl::Status& s) const;
  // The non-collective half of PREPARE: checks, the new map and the move plan.
  struct Planned {
    v1::PlacementUpdate update;
    std::shared_ptr<const PlacementMap> next;
    MovePlan plan;
    std::vector<int> dead;
    AnswerFn done;
  };
  absl::StatusOr<Planned> PlanPrepare(const v1::PlacementUpdate& u) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::PlacementAnswer RunPrepare(Planned p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::PlacementAnswer RunCommit(const v1::PlacementUpdate& u) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RunAbort(const v1::PlacementUpdate& u) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

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
  Metrics metrics_;
  mutable Mutex mu_;
  std::unique_ptr<WeightBackend> backend_ ABSL_GUARDED_BY(mu_);
  uint64_t version_ ABSL_GUARDED_BY(mu_) = 0;
  std::shared_ptr<const PlacementMap> map_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<StaticDispatch> dispatch_ ABSL_GUARDED_BY(mu_);
  std::vector<std::vector<int64_t>> counts_ ABSL_GUARDED_BY(mu_);  // [own rank][layers * L]
  // Staged version (0: none).
  uint64_t staged_version_ ABSL_GUARDED_BY(mu_) = 0;
  std::shared_ptr<const PlacementMap> staged_map_ ABSL_GUARDED_BY(mu_);
  // Collective backends: updates waiting for a step boundary.
  std::unique_ptr<Planned> waiting_prepare_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<std::pair<v1::PlacementUpdate, AnswerFn>> waiting_commit_ ABSL_GUARDED_BY(mu_);
};

}  // namespace eplb

#endif  // EPLB_WORKER_RUNTIME_H_
