// HostExpertStore: one rank's expert weights in host memory (the CPU backend, used by tests and
// the simulator; the GPU store keeps the same layout in device memory).
//
// Per layer the rank holds L routed rows then S shared rows (spec/DOMAIN.md §7.2); a row is one
// expert's tensors, described by TensorSpecs, stored back to back. Rows are loaded from a
// checkpoint through CheckpointTargets (shared experts into rows L..L+S-1 on every rank, routed
// experts into every replica the rank owns, two replicas on one GPU both loaded).
//
//   HostExpertStore store(layout, /*num_layers=*/2, /*rank=*/3, {{"w1", 4096}, {"w2", 4096}});
//   EPLB_RETURN_IF_ERROR(store.LoadCheckpoint(map, SyntheticCheckpoint));
//   uint64_t fp = store.Fingerprint(/*layer=*/0, /*row=*/1);
//
// Not thread-safe; a rank's worker owns its store.
#ifndef EPLB_WORKER_EXPERT_STORE_H_
#define EPLB_WORKER_EXPERT_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/expert_layout.h"
#include "core/placement_map.h"

namespace eplb {

struct TensorSpec {
  std::string name;
  int64_t bytes = 0;
};

// Writes the weights of checkpoint expert `checkpoint_id` (routed [0, E), shared E + s) of
// `layer` into `out` (row_bytes long).
using CheckpointReader =
    std::function<void(int layer, int64_t checkpoint_id, uint8_t* out, int64_t row_bytes)>;

// Deterministic synthetic weights: every (layer, checkpoint id) has distinct bytes.
void SyntheticCheckpoint(int layer, int64_t checkpoint_id, uint8_t* out, int64_t row_bytes);

// 64-bit FNV-1a of a row: the integrity fingerprint.
uint64_t RowFingerprint(const uint8_t* row, int64_t row_bytes);

class HostExpertStore {
 public:
  HostExpertStore(const ExpertLayout& layout, int num_layers, int rank,
                  std::vector<TensorSpec> tensors);
  ~HostExpertStore();
  HostExpertStore(const HostExpertStore&) = delete;
  HostExpertStore& operator=(const HostExpertStore&) = delete;

  // A store whose rows live in a shared file (e.g. under /dev/shm), so worker processes on one
  // machine reach each other's rows as NCCL peers would. Create makes (and sizes) the file for
  // this process's rank; OpenPeer maps another process's file read-only (NotFound until it
  // exists).
  static absl::StatusOr<std::unique_ptr<HostExpertStore>> CreateShared(
      const ExpertLayout& layout, int num_layers, int rank, std::vector<TensorSpec> tensors,
      const std::string& path);
  static absl::StatusOr<std::unique_ptr<HostExpertStore>> OpenPeer(const ExpertLayout& layout,
                                                                   int num_layers, int rank,
                                                                   std::vector<TensorSpec> tensors,
                                                                   const std::string& path);

  int rank() const { return rank_; }
  const ExpertLayout& layout() const { return layout_; }
  int num_layers() const { return num_layers_; }
  const std::vector<TensorSpec>& tensors() const { return tensors_; }
  int64_t row_bytes() const { return row_bytes_; }
  int rows_per_layer() const { return layout_.slots_per_rank(); }  // L + S
  uint8_t* Row(int layer, int row) { return base_ + Offset(layer, row); }
  const uint8_t* Row(int layer, int row) const { return base_ + Offset(layer, row); }
  // Overwrites a row; counted (tests prove unchanged rows are never written).
  void WriteRow(int layer, int row, const uint8_t* src);
  int64_t writes(int layer, int row) const { return writes_[layer * rows_per_layer() + row]; }
  uint64_t Fingerprint(int layer, int row) const {
    return RowFingerprint(Row(layer, row), row_bytes_);
  }

  // Loads every row of this rank from the checkpoint, for the given map.
  absl::Status LoadCheckpoint(const PlacementMap& map, const CheckpointReader& read);

  // Rows (routed and shared) whose fingerprint differs from the checkpoint's expert that `map`
  // puts there. Empty: the store holds exactly what the map says.
  std::vector<int> MismatchedRows(int layer, const PlacementMap& map,
                                  const CheckpointReader& read) const;

 private:
  size_t Offset(int layer, int row) const {
    return (static_cast<size_t>(layer) * rows_per_layer() + row) * row_bytes_;
  }
  ExpertLayout layout_;
  int num_layers_;
  int rank_;
  std::vector<TensorSpec> tensors_;
  int64_t row_bytes_ = 0;
  std::vector<uint8_t> data_;  // in-process storage, or empty when mapped
  uint8_t* base_ = nullptr;
  size_t mapped_bytes_ = 0;  // > 0: base_ is an mmap of a shared file
  std::vector<int64_t> writes_;
};

}  // namespace eplb

#endif  // EPLB_WORKER_EXPERT_STORE_H_
