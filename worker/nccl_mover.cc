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

absl::StatusOr<std::unique_ptr<NcclMover>> NcclMover::CreateSingleProcess(
    const ExpertLayout& layout, const NcclMoverOptions& options) {
  if (options.row_bytes <= 0 || options.num_layers < 1 || options.window < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("row_bytes=", options.row_bytes, ", num_layers=", options.num_layers,
                     ", window=", options.window, " must all be positive"));
  }
  int devices = 0;
  EPLB_CUDA_RETURN_IF_ERROR(cudaGetDeviceCount(&devices));
  if (devices < layout.ep_size()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "single-process NCCL mover needs ", layout.ep_size(), " GPUs; ", devices, " visible"));
  }
  std::unique_ptr<NcclMover> m(new NcclMover(layout, options));
  const int w = layout.ep_size();
  m->comms_.resize(w);
  std::vector<int> devs(w);
  for (int r = 0; r < w; ++r) devs[r] = r;
  EPLB_NCCL_RETURN_IF_ERROR(ncclCommInitAll(m->comms_.data(), w, devs.data()));
  const size_t live_bytes =
      static_cast<size_t>(options.num_layers) * layout.slots_per_rank() * options.row_bytes;
  const size_t staging_bytes =
      static_cast<size_t>(layout.routed_slots_per_rank()) * options.row_bytes;
  m->streams_.resize(w);
  m->live_.resize(w, nullptr);
  m->staging_.resize(w, nullptr);
  for (int r = 0; r < w; ++r) {
    EPLB_CUDA_RETURN_IF_ERROR(cudaSetDevice(r));
    EPLB_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&m->streams_[r], cudaStreamNonBlocking));
    EPLB_CUDA_RETURN_IF_ERROR(cudaMalloc(&m->live_[r], live_bytes));
    EPLB_CUDA_RETURN_IF_ERROR(cudaMalloc(&m->staging_[r], staging_bytes));
  }
  return m;
}

NcclMover::~NcclMover() {
  for (size_t r = 0; r < comms_.size(); ++r) {
    cudaSetDevice(static_cast<int>(r));
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

uint8_t* NcclMover::Staging(int rank, int row) const {
  return staging_[rank] + static_cast<size_t>(row) * options_.row_bytes;
}

absl::Status NcclMover::Stage(const MovePlan& plan, int layer) {
  const int64_t n = options_.row_bytes;
  std::vector<const Transfer*> peers;
  for (const Transfer& t : plan.transfers) {
    if (t.layer != layer) continue;
    if (t.kind == TransferKind::kLocal) {
      EPLB_CUDA_RETURN_IF_ERROR(cudaSetDevice(t.dst_rank));
      EPLB_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(Staging(t.dst_rank, t.dst_row),
                                                Row(t.src_rank, layer, t.src_row), n,
                                                cudaMemcpyDeviceToDevice, streams_[t.dst_rank]));
    } else if (t.kind == TransferKind::kPeer) {
      peers.push_back(&t);
    }
  }
  // Peer transfers in bounded windows; every rank walks the same ordered list.
  for (size_t begin = 0; begin < peers.size(); begin += options_.window) {
    const size_t end = std::min(peers.size(), begin + options_.window);
    EPLB_NCCL_RETURN_IF_ERROR(ncclGroupStart());
    for (size_t i = begin; i < end; ++i) {
      const Transfer& t = *peers[i];
      EPLB_NCCL_RETURN_IF_ERROR(ncclSend(Row(t.src_rank, layer, t.src_row), n, ncclUint8,
                                         t.dst_rank, comms_[t.src_rank], streams_[t.src_rank]));
      EPLB_NCCL_RETURN_IF_ERROR(ncclRecv(Staging(t.dst_rank, t.dst_row), n, ncclUint8, t.src_rank,
                                         comms_[t.dst_rank], streams_[t.dst_rank]));
      bytes_received_ += n;
    }
    EPLB_NCCL_RETURN_IF_ERROR(ncclGroupEnd());
  }
  for (const Transfer& t : plan.transfers) {
    if (t.layer != layer || t.kind != TransferKind::kAfterPeer) continue;
    EPLB_CUDA_RETURN_IF_ERROR(cudaSetDevice(t.dst_rank));
    EPLB_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(Staging(t.dst_rank, t.dst_row),
                                              Staging(t.dst_rank, t.src_row), n,
                                              cudaMemcpyDeviceToDevice, streams_[t.dst_rank]));
  }
  return absl::OkStatus();
}

absl::Status NcclMover::Commit(const MovePlan& plan, int layer) {
  // A rank's live rows are written only after every rank staged (sources read old weights).
  for (size_t r = 0; r < streams_.size(); ++r) {
    EPLB_CUDA_RETURN_IF_ERROR(cudaSetDevice(static_cast<int>(r)));
    EPLB_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(streams_[r]));
  }
  for (const Transfer& t : plan.transfers) {
    if (t.layer != layer) continue;
    EPLB_CUDA_RETURN_IF_ERROR(cudaSetDevice(t.dst_rank));
    EPLB_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(Row(t.dst_rank, layer, t.dst_row),
                                              Staging(t.dst_rank, t.dst_row), options_.row_bytes,
                                              cudaMemcpyDeviceToDevice, streams_[t.dst_rank]));
  }
  return absl::OkStatus();
}

absl::Status NcclMover::Synchronize() {
  for (size_t r = 0; r < streams_.size(); ++r) {
    EPLB_CUDA_RETURN_IF_ERROR(cudaSetDevice(static_cast<int>(r)));
    EPLB_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(streams_[r]));
  }
  return absl::OkStatus();
}

}  // namespace eplb
