#include "worker/gpu_backend.h"

#include <cuda_runtime_api.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/checkpoint.h"
#include "kernels/cuda_status.h"

namespace eplb {

absl::StatusOr<std::unique_ptr<GpuWeightBackend>> GpuWeightBackend::Create(
    const ExpertLayout& layout, int num_layers, int rank, int64_t row_bytes,
    CheckpointReader checkpoint, const ncclUniqueId& id, int window, int staging_rows) {
  NcclMoverOptions o;
  o.num_layers = num_layers;
  o.row_bytes = row_bytes;
  o.window = window;
  o.staging_rows = staging_rows;
  auto mover = NcclMover::CreateForRank(layout, o, rank, id);
  if (!mover.ok()) return mover.status();
  std::unique_ptr<GpuWeightBackend> b(
      new GpuWeightBackend(layout, num_layers, rank, std::move(checkpoint)));
  b->mover_ = *std::move(mover);
  b->host_row_.resize(row_bytes);
  return b;
}

uint64_t GpuWeightBackend::ExpectedFingerprint(int layer, int64_t checkpoint_id) {
  auto [it, inserted] = fingerprints_.try_emplace({layer, checkpoint_id}, 0);
  if (inserted) {
    checkpoint_(layer, checkpoint_id, host_row_.data(), static_cast<int64_t>(host_row_.size()));
    it->second = RowFingerprint(host_row_.data(), static_cast<int64_t>(host_row_.size()));
  }
  return it->second;
}

absl::StatusOr<uint64_t> GpuWeightBackend::DeviceFingerprint(const uint8_t* device_row) {
  EPLB_CUDA_RETURN_IF_ERROR(
      cudaMemcpy(host_row_.data(), device_row, host_row_.size(), cudaMemcpyDeviceToHost));
  return RowFingerprint(host_row_.data(), static_cast<int64_t>(host_row_.size()));
}

absl::Status GpuWeightBackend::Load(const PlacementMap& map) {
  for (int layer = 0; layer < num_layers_; ++layer) {
    for (int row = 0; row < layout_.slots_per_rank(); ++row) {
      const int64_t id = CheckpointIdOfRow(layout_, map, layer, rank_, row);
      checkpoint_(layer, id, host_row_.data(), static_cast<int64_t>(host_row_.size()));
      EPLB_CUDA_RETURN_IF_ERROR(
          cudaMemcpy(Row(layer, row), host_row_.data(), host_row_.size(), cudaMemcpyHostToDevice));
    }
  }
  return absl::OkStatus();
}

absl::Status GpuWeightBackend::Stage(const MovePlan& plan, const PlacementMap& next,
                                     const std::vector<int>& dead) {
  if (!dead.empty()) {
    return absl::UnimplementedError(
        absl::StrCat("the NCCL backend cannot plan around dead ranks (", absl::StrJoin(dead, ","),
                     "): the communicator spans them; restart the job without them"));
  }
  Abort();
  // Every rank computes the same need from the same plan, so all refuse together (before any
  // NCCL call) or none does.
  const int64_t need = plan.MaxRowsPerRank();
  if (need > mover_->staging_rows()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "this rollout stages up to ", need, " rows on one rank; staging holds ",
        mover_->staging_rows(), " (", mover_->staging_rows() / layout_.routed_slots_per_rank(),
        " layers' worth): roll out fewer layers at a time (controller layers_per_rollout)"));
  }
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t before = mover_->bytes_received();
  for (int layer = 0; layer < num_layers_; ++layer) {
    if (absl::Status s = mover_->Stage(plan, layer); !s.ok()) return s;
  }
  if (absl::Status s = mover_->Synchronize(); !s.ok()) return s;
  last_stage_seconds_ =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  staged_bytes_ = mover_->bytes_received() - before;
  // Integrity of what this rank received.
  std::vector<std::string> bad;
  for (const Transfer& t : plan.transfers) {
    if (t.dst_rank != rank_) continue;
    staged_.transfers.push_back(t);
    auto got = DeviceFingerprint(mover_->StagedRow(rank_, t.layer, t.dst_row));
    if (!got.ok()) return got.status();
    const int32_t e = next.LogicalOf(t.layer, layout_.PhysicalAt(rank_, t.dst_row)).value();
    if (*got != ExpectedFingerprint(t.layer, e)) {
      bad.push_back(absl::StrCat("rank ", rank_, " layer ", t.layer, " row ", t.dst_row));
    }
  }
  if (!bad.empty()) {
    Abort();
    return absl::DataLossError(
        absl::StrCat("staged rows do not match their experts: ", absl::StrJoin(bad, ", ")));
  }
  has_staged_ = true;
  return absl::OkStatus();
}

absl::StatusOr<int64_t> GpuWeightBackend::Commit() {
  if (!has_staged_) return absl::FailedPreconditionError("nothing staged");
  for (int layer = 0; layer < num_layers_; ++layer) {
    if (absl::Status s = mover_->Commit(staged_, layer); !s.ok()) return s;
  }
  if (absl::Status s = mover_->Synchronize(); !s.ok()) return s;
  const int64_t rows = static_cast<int64_t>(staged_.transfers.size());
  Abort();
  return rows;
}

void GpuWeightBackend::Abort() {
  mover_->Release();
  staged_ = MovePlan();
  has_staged_ = false;
}

std::vector<std::string> GpuWeightBackend::Inconsistencies(const PlacementMap& map) {
  std::vector<std::string> out;
  for (int layer = 0; layer < num_layers_; ++layer) {
    for (int row = 0; row < layout_.slots_per_rank(); ++row) {
      const int64_t id = CheckpointIdOfRow(layout_, map, layer, rank_, row);
      auto got = DeviceFingerprint(Row(layer, row));
      if (!got.ok() || *got != ExpectedFingerprint(layer, id)) {
        out.push_back(absl::StrCat("rank ", rank_, " layer ", layer, " row ", row));
      }
    }
  }
  return out;
}

}  // namespace eplb
