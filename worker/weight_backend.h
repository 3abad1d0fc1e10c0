// WeightBackend: where a worker's expert rows live and how they move. WorkerRuntime owns the
// protocol (maps, versions, load, PREPARE/COMMIT/ABORT); a backend owns the bytes:
//
//   * CpuWeightBackend (worker/runtime.h): host stores, peers through a CpuFabric (tests, the
//     simulator, the CPU end-to-end harness);
//   * GpuWeightBackend (worker/gpu_backend.h): device memory, peers over NCCL.
//
// Stage reads only live rows of the old map and writes only staging memory, so until Commit the
// old map stays fully in force; it verifies every staged row against the checkpoint (row
// fingerprints) and fails with DataLoss naming the rows. Commit writes the staged rows in place.
// A backend whose Stage is collective (NCCL) says so: the runtime then runs PREPARE and COMMIT
// only at step boundaries every rank agreed on (WorkerRuntime::StepBoundary).
#ifndef EPLB_WORKER_WEIGHT_BACKEND_H_
#define EPLB_WORKER_WEIGHT_BACKEND_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/move_plan.h"
#include "core/placement_map.h"

namespace eplb {

class WeightBackend {
 public:
  virtual ~WeightBackend() = default;

  virtual int64_t row_bytes() const = 0;
  // True: Stage/Commit must run on every rank at the same step boundary (collectives).
  virtual bool collective() const = 0;
  // Loads every own row (routed and shared) from the checkpoint, for `map`.
  virtual absl::Status Load(const PlacementMap& map) = 0;
  // Stages every layer of `plan` (the whole plan, identical on every rank) for the new map
  // `next`, and verifies what this worker staged. dead[r]: rank r cannot send.
  virtual absl::Status Stage(const MovePlan& plan, const PlacementMap& next,
                             const std::vector<int>& dead) = 0;
  // Writes the staged rows into the live rows, in place. Returns rows written.
  virtual absl::StatusOr<int64_t> Commit() = 0;
  virtual void Abort() = 0;
  // Bytes received from peers by the last Stage.
  virtual int64_t staged_bytes_received() const = 0;
  // Rows whose weights disagree with `map` ("rank R layer L row W"); empty: consistent.
  virtual std::vector<std::string> Inconsistencies(const PlacementMap& map) = 0;
};

}  // namespace eplb

#endif  // EPLB_WORKER_WEIGHT_BACKEND_H_
