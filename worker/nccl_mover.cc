#include "worker/nccl_mover.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cuda_status.h"

namespace eplb {
namespace {

absl::Status NcclStatus(ncclResult_t r, const char* expr, const char* file, int line) {
  if (r == ncclSuccess) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat(file, ":", line, ": ", expr, ": ", ncclGetErrorString(r)));
}

}  // namespace

#define EPLB_NCCL_RETURN_IF_ERROR(expr)                                               \
  do {                                                                                \
    ::absl::Status eplb_nccl_status_ = NcclStatus((expr), #expr, __FILE__, __LINE__); \
    if (!eplb_nccl_status_.ok()) return eplb_nccl_status_;                            \
  } while (false)

namespace {

absl::Status CheckOptions(const ExpertLayout& layout, const NcclMoverOptions& options) {
  if (options.row_bytes <= 0 || options.num_layers < 1 || options.window < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("row_bytes=", options.row_bytes, ", num_layers=", options.num_layers,
                     ", window=", options.window, " must all be positive"));
  }
  if (options.staging_rows < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("staging_rows=", options.staging_rows, " must be >= 0 (0: one layer)"));
  }
  (void)layout;
  return absl::OkStatus();
}

}  // namespace

absl::Status NcclMover::Allocate(int r) {
  const size_t live_bytes =
      static_cast<size_t>(options_.num_layers) * layout_.slots_per_rank() * options_.row_bytes;
  const size_t staging_bytes = static_cast<size_t>(staging_rows_) * options_.row_bytes;
  free_[r].clear();
  for (int i = staging_rows_ - 1; i >= 0; --i) free_[r].push_back(i);
  EPLB_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_[r]));
  EPLB_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&streams_[r], cudaStreamNonBlocking));
  EPLB_CUDA_RETURN_IF_ERROR(cudaMalloc(&live_[r], live_bytes));
  EPLB_CUDA_RETURN_IF_ERROR(cudaMalloc(&staging_[r], std::max<size_t>(staging_bytes, 1)));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<NcclMover>> NcclMover::CreateSingleProcess(
    const ExpertLayout& layout, const NcclMoverOptions& options) {
  if (absl::Status s = CheckOptions(layout, options); !s.ok()) return s;
  int devices = 0;
  EPLB_CUDA_RETURN_IF_ERROR(cudaGetDeviceCount(&devices));
  if (devices < layout.ep_size()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "single-process NCCL mover needs ", layout.ep_size(), " GPUs; ", devices, " visible"));
  }
  std::unique_ptr<NcclMover> m(new NcclMover(layout, options));
  const int w = layout.ep_size();
  for (int r = 0; r < w; ++r) m->device_[r] = r;
  EPLB_NCCL_RETURN_IF_ERROR(ncclCommInitAll(m->comms_.data(), w, m->device_.data()));
  for (int r = 0; r < w; ++r) {
    if (absl::Status s = m->Allocate(r); !s.ok()) return s;
  }
  return m;
}

absl::StatusOr<std::unique_ptr<NcclMover>> NcclMover::CreateForRank(const ExpertLayout& layout,
                                                                    const NcclMoverOptions& options,
                                                                    int rank,
                                                                    const ncclUniqueId& id) {
  if (absl::Status s = CheckOptions(layout, options); !s.ok()) return s;
  const int w = layout.ep_size();
  if (rank < 0 || rank >= w) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", rank, " is out of range [0, ", w, ")"));
  }
  std::unique_ptr<NcclMover> m(new NcclMover(layout, options));
  EPLB_CUDA_RETURN_IF_ERROR(cudaGetDevice(&m->device_[rank]));
  EPLB_NCCL_RETURN_IF_ERROR(ncclCommInitRank(&m->comms_[rank], w, id, rank));
  if (absl::Status s = m->Allocate(rank); !s.ok()) return s;
  return m;
}

NcclMover::~NcclMover() {
  for (size_t r = 0; r < comms_.size(); ++r) {
    if (comms_[r] == nullptr) continue;
    cudaSetDevice(device_[r]);
    if (r < streams_.size() && streams_[r] != nullptr) cudaStreamSynchronize(streams_[r]);
    if (r < live_.size() && live_[r] != nullptr) cudaFree(live_[r]);
    if (r < staging_.size() && staging_[r] != nullptr) cudaFree(staging_[r]);
    if (r < streams_.size() && streams_[r] != nullptr) cudaStreamDestroy(streams_[r]);
    if (comms_[r] != nullptr) ncclCommDestroy(comms_[r]);
  }
}

uint8_t* NcclMover::Row(int rank, int layer, int row) const {
  return live_[rank] +
         (static_cast<size_t>(layer) * layout_.slots_per_rank() + row) * options_.row_bytes;
}

uint8_t* NcclMover::Staging(int rank, int layer, int row) const {
  auto it = slot_.find({rank, layer, row});
  if (it == slot_.end()) return nullptr;
  return staging_[rank] + static_cast<size_t>(it->second) * options_.row_bytes;
}

void NcclMover::Release() {
  for (const auto& [key, slot] : slot_) free_[std::get<0>(key)].push_back(slot);
  slot_.clear();
}

absl::Status NcclMover::Stage(const MovePlan& plan, int layer) {
  const int64_t n = options_.row_bytes;
  // Staging rows for everything this process receives in the layer, before enqueuing anything.
  std::map<int, int> need;
  for (const Transfer& t : plan.transfers) {
    if (t.layer == layer && is_local(t.dst_rank) && !slot_.count({t.dst_rank, layer, t.dst_row})) {
      ++need[t.dst_rank];
    }
  }
  for (const auto& [rank, rows] : need) {
    if (rows > static_cast<int>(free_[rank].size())) {
      return absl::ResourceExhaustedError(
          absl::StrCat("layer ", layer, " stages ", rows, " rows on rank ", rank, "; ",
                       free_[rank].size(), " of ", staging_rows_, " staging rows are free"));
    }
  }
  for (const Transfer& t : plan.transfers) {
    if (t.layer == layer && is_local(t.dst_rank) && !slot_.count({t.dst_rank, layer, t.dst_row})) {
      slot_[{t.dst_rank, layer, t.dst_row}] = free_[t.dst_rank].back();
      free_[t.dst_rank].pop_back();
    }
  }
  std::vector<const Transfer*> peers;
  for (const Transfer& t : plan.transfers) {
    if (t.layer != layer) continue;
    if (t.kind == TransferKind::kLocal) {
      if (!is_local(t.dst_rank)) continue;
      EPLB_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_[t.dst_rank]));
      EPLB_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(Staging(t.dst_rank, layer, t.dst_row),
                                                Row(t.src_rank, layer, t.src_row), n,
                                                cudaMemcpyDeviceToDevice, streams_[t.dst_rank]));
    } else if (t.kind == TransferKind::kPeer && (is_local(t.src_rank) || is_local(t.dst_rank))) {
      peers.push_back(&t);
    }
  }
  // Peer transfers in bounded windows; every rank walks the same ordered list.
  for (size_t begin = 0; begin < peers.size(); begin += options_.window) {
    const size_t end = std::min(peers.size(), begin + options_.window);
    EPLB_NCCL_RETURN_IF_ERROR(ncclGroupStart());
    for (size_t i = begin; i < end; ++i) {
      const Transfer& t = *peers[i];
      if (is_local(t.src_rank)) {
        EPLB_NCCL_RETURN_IF_ERROR(ncclSend(Row(t.src_rank, layer, t.src_row), n, ncclUint8,
                                           t.dst_rank, comms_[t.src_rank], streams_[t.src_rank]));
      }
      if (is_local(t.dst_rank)) {
        EPLB_NCCL_RETURN_IF_ERROR(ncclRecv(Staging(t.dst_rank, layer, t.dst_row), n, ncclUint8,
                                           t.src_rank, comms_[t.dst_rank], streams_[t.dst_rank]));
        bytes_received_ += n;
      }
    }
    EPLB_NCCL_RETURN_IF_ERROR(ncclGroupEnd());
  }
  for (const Transfer& t : plan.transfers) {
    if (t.layer != layer || t.kind != TransferKind::kAfterPeer || !is_local(t.dst_rank)) continue;
    EPLB_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_[t.dst_rank]));
    EPLB_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(Staging(t.dst_rank, layer, t.dst_row),
                                              Staging(t.dst_rank, layer, t.src_row), n,
                                              cudaMemcpyDeviceToDevice, streams_[t.dst_rank]));
  }
  return absl::OkStatus();
}

absl::Status NcclMover::Commit(const MovePlan& plan, int layer) {
  // A rank's live rows are written only after every rank staged (sources read old weights).
  // (Single process: synchronizing every stream proves it. Multi-process: the caller commits
  // after every rank finished staging, e.g. after the PREPARE answers.)
  if (absl::Status s = Synchronize(); !s.ok()) return s;
  for (const Transfer& t : plan.transfers) {
    if (t.layer != layer || !is_local(t.dst_rank)) continue;
    EPLB_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_[t.dst_rank]));
    uint8_t* staged = Staging(t.dst_rank, layer, t.dst_row);
    if (staged == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat("rank ", t.dst_rank, " layer ", layer,
                                                        " row ", t.dst_row, " was not staged"));
    }
    EPLB_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(Row(t.dst_rank, layer, t.dst_row), staged,
                                              options_.row_bytes, cudaMemcpyDeviceToDevice,
                                              streams_[t.dst_rank]));
  }
  // The copies are stream-ordered before any later staging into these rows: free them now.
  for (auto it = slot_.begin(); it != slot_.end();) {
    if (std::get<1>(it->first) == layer) {
      free_[std::get<0>(it->first)].push_back(it->second);
      it = slot_.erase(it);
    } else {
      ++it;
    }
  }
  return absl::OkStatus();
}

absl::Status NcclMover::Synchronize() {
  for (size_t r = 0; r < streams_.size(); ++r) {
    if (comms_[r] == nullptr) continue;
    EPLB_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_[r]));
    EPLB_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(streams_[r]));
  }
  return absl::OkStatus();
}

}  // namespace eplb
