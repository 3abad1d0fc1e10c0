// One rank of the GPU end-to-end proof (tests/e2e/moe_gpu_e2e.py starts one per GPU, and the
// real controller): a worker runtime with its weights in GPU memory moved over NCCL, and a real
// expert-parallel MoE forward every step, for every layer:
//
//   seeded tokens and router logits -> top-k logical ids and weights -> the routing kernel
//   (static dispatch to physical ids, slot remap with the shared column, Waterfill) -> tokens
//   sent to the ranks owning their slots (NCCL grouped send/recv: an all-to-all) -> the
//   receiving rank runs the expert FFN (SwiGLU, fp32) with the weights in its slot's row and
//   counts the physical ids it served with the histogram kernel -> results sent back ->
//   combined with the routing weights, shared expert included.
//
// The reference computes the same tokens without expert parallelism: every logical expert and
// the shared expert loaded from the checkpoint on this device. Every reduction has a fixed
// order (see moe_gpu_kernels.h), so outputs are compared bit for bit. The recorded load (fed to
// the runtime's load recorder and reported to the controller) is checked against the router's
// choices every step, summed over ranks. The controller rolls out new maps as the hot experts
// drift; PREPARE and COMMIT run at step boundaries every rank agrees on.
//
// Prints one JSON line of results (and writes it to --out).
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/expert_layout.h"
#include "core/placement_map.h"
#include "kernels/cuda_status.h"
#include "kernels/load_histogram.h"
#include "kernels/route_topk.h"
#include "tests/e2e/moe_gpu_kernels.h"
#include "worker/controller_client.h"
#include "worker/gpu_backend.h"
#include "worker/runtime.h"

ABSL_FLAG(int, rank, 0, "this rank (also its CUDA device)");
ABSL_FLAG(int, world, 2, "W: ranks");
ABSL_FLAG(int, nodes, 1, "N: nodes in the layout");
ABSL_FLAG(std::string, controller, "", "controller address (empty: keep the identity map)");
ABSL_FLAG(std::string, id_file, "", "file through which rank 0 shares the NCCL ids");
ABSL_FLAG(int, steps, 120, "forward steps");
ABSL_FLAG(int, tokens, 512, "tokens per rank and step");
ABSL_FLAG(int, hidden, 1024, "hidden size");
ABSL_FLAG(int, inter, 512, "expert intermediate size");
ABSL_FLAG(int, layers, 4, "MoE layers");
ABSL_FLAG(int, experts, 16, "E: routed experts");
ABSL_FLAG(int, redundant, 8, "R: redundant replicas");
ABSL_FLAG(int, top_k, 4, "K");
ABSL_FLAG(int, drift_every, 10, "the hot experts move every this many steps");
ABSL_FLAG(int, report_every, 2, "report load every this many steps");
ABSL_FLAG(uint64_t, seed, 1, "seed of inputs and weights");
ABSL_FLAG(bool, plant_bug, false, "route slots with the logical count (L = E / W): must fail");
ABSL_FLAG(std::string, waterfill, "exact", "exact or sglang");
ABSL_FLAG(bool, overlap, false,
          "launch the routing kernel with programmatic dependent launch, overlapping the top-k "
          "kernel before it");
ABSL_FLAG(bool, check, true, "compute the reference and compare");
ABSL_FLAG(std::string, out, "", "write the result JSON here too");
ABSL_FLAG(int, staging_rows, 0, "weight staging rows (0: one layer, L)");

namespace eplb {
namespace e2e {
namespace {

#define NCCL_OK(expr)                                                                \
  do {                                                                               \
    ncclResult_t r_ = (expr);                                                        \
    if (r_ != ncclSuccess)                                                           \
      return absl::InternalError(absl::StrCat(#expr, ": ", ncclGetErrorString(r_))); \
  } while (false)

template <typename T>
class Dev {
 public:
  Dev() = default;
  ~Dev() {
    if (p_ != nullptr) cudaFree(p_);
  }
  absl::Status Alloc(size_t n) {
    EPLB_CUDA_RETURN_IF_ERROR(cudaMalloc(&p_, std::max<size_t>(n, 1) * sizeof(T)));
    EPLB_CUDA_RETURN_IF_ERROR(cudaMemset(p_, 0, std::max<size_t>(n, 1) * sizeof(T)));
    return absl::OkStatus();
  }
  T* get() const { return p_; }

 private:
  T* p_ = nullptr;
};

template <typename T>
absl::Status Up(T* dst, const std::vector<T>& src, cudaStream_t s) {
  if (src.empty()) return absl::OkStatus();
  EPLB_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(dst, src.data(), src.size() * sizeof(T), cudaMemcpyHostToDevice, s));
  return absl::OkStatus();
}

template <typename T>
absl::Status Down(std::vector<T>& dst, const T* src, size_t n, cudaStream_t s) {
  dst.resize(n);
  if (n == 0) return absl::OkStatus();
  EPLB_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(dst.data(), src, n * sizeof(T), cudaMemcpyDeviceToHost, s));
  EPLB_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(s));
  return absl::OkStatus();
}

uint64_t Mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Expert weights: W13 [2I][H] then W2 [H][I], fp32, uniform with unit-variance-preserving scale.
CheckpointReader FfnCheckpoint(int hidden, int inter, uint64_t seed) {
  return [=](int layer, int64_t id, uint8_t* out, int64_t bytes) {
    float* w = reinterpret_cast<float*>(out);
    const int64_t n13 = 2LL * inter * hidden;
    const int64_t n = bytes / static_cast<int64_t>(sizeof(float));
    const float s13 = std::sqrt(3.0f / hidden), s2 = std::sqrt(3.0f / inter);
    const uint64_t base =
        Mix(seed * 7919 + layer * 104729ull + static_cast<uint64_t>(id) * 15485863ull);
    for (int64_t i = 0; i < n; ++i) {
      const float u = static_cast<float>(Mix(base + i) >> 40) * (2.0f / 16777216.0f) - 1.0f;
      w[i] = u * (i < n13 ? s13 : s2);
    }
  };
}

struct NcclIds {
  ncclUniqueId mover, forward;
};

absl::StatusOr<NcclIds> ShareIds(const std::string& path, int rank) {
  NcclIds ids;
  if (rank == 0) {
    NCCL_OK(ncclGetUniqueId(&ids.mover));
    NCCL_OK(ncclGetUniqueId(&ids.forward));
    const std::string tmp = path + ".tmp";
    std::ofstream f(tmp, std::ios::binary);
    f.write(reinterpret_cast<const char*>(&ids), sizeof(ids));
    f.close();
    if (!f || std::rename(tmp.c_str(), path.c_str()) != 0) {
      return absl::InternalError(absl::StrCat("cannot write ", path));
    }
    return ids;
  }
  for (int i = 0; i < 600; ++i) {
    std::ifstream f(path, std::ios::binary);
    if (f && f.read(reinterpret_cast<char*>(&ids), sizeof(ids))) return ids;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return absl::DeadlineExceededError(absl::StrCat("no NCCL ids in ", path, " after 60 s"));
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

class Rank {
 public:
  absl::Status Run();

 private:
  absl::Status Setup();
  absl::Status Forward(int layer, int step);
  absl::Status Ffn(const float* x_rows, int n, const uint8_t* weights, float* y_rows);
  absl::Status Reference(int layer, int64_t& mismatched, double& max_diff,
                         std::vector<int64_t>& chosen);
  absl::Status AllToAll(const std::vector<int>& send_counts, const std::vector<int>& recv_counts,
                        const float* send, float* recv, int width);

  // Shapes.
  int rank_ = 0, w_ = 0, t_ = 0, h_ = 0, i_ = 0, layers_ = 0, e_ = 0, k_ = 0, l_ = 0, p_ = 0;
  int cols_ = 0;  // K + 1 (the shared column)
  uint64_t seed_ = 1;
  int hot1_ = 0, hot2_ = 0;
  std::unique_ptr<ExpertLayout> layout_;
  CheckpointReader ckpt_;
  GpuWeightBackend* gpu_ = nullptr;
  std::unique_ptr<WorkerRuntime> runtime_;
  std::unique_ptr<ControllerClient> client_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  uint64_t table_version_ = ~0ull;
  cudaEvent_t ffn_start_ = nullptr, ffn_end_ = nullptr;
  double ffn_ms_ = 0;  // expert FFN time of this rank in the current step

  // Device buffers.
  Dev<float> x_, logits_, rw_, weights_, sendx_, recvx_, gx_, h13_, act_, gy_, ry_, backy_, ybuf_,
      out_, refy_, refw_, refout_, ref_weights_;
  Dev<int32_t> ids_, physical_, slots_, shared_rank_, tables_, idx_, idx2_, send_phys_, recv_phys_,
      counts_send_, counts_recv_, valid_, ref_valid_;
  Dev<int64_t> counts_, reduce_;
  Dev<uint8_t> workspace_;
};

absl::Status Rank::Setup() {
  rank_ = absl::GetFlag(FLAGS_rank);
  w_ = absl::GetFlag(FLAGS_world);
  t_ = absl::GetFlag(FLAGS_tokens);
  h_ = absl::GetFlag(FLAGS_hidden);
  i_ = absl::GetFlag(FLAGS_inter);
  layers_ = absl::GetFlag(FLAGS_layers);
  e_ = absl::GetFlag(FLAGS_experts);
  k_ = absl::GetFlag(FLAGS_top_k);
  seed_ = absl::GetFlag(FLAGS_seed);
  cols_ = k_ + 1;
  EPLB_CUDA_RETURN_IF_ERROR(cudaSetDevice(rank_));
  auto layout =
      ExpertLayout::Create({e_, absl::GetFlag(FLAGS_redundant), w_, 1, absl::GetFlag(FLAGS_nodes)});
  if (!layout.ok()) return layout.status();
  layout_ = std::make_unique<ExpertLayout>(*layout);
  l_ = layout_->routed_slots_per_rank();
  p_ = layout_->num_physical();
  auto ids = ShareIds(absl::GetFlag(FLAGS_id_file), rank_);
  if (!ids.ok()) return ids.status();
  const int64_t row_bytes = (3LL * h_ * i_) * static_cast<int64_t>(sizeof(float));
  ckpt_ = FfnCheckpoint(h_, i_, seed_);
  auto backend = GpuWeightBackend::Create(*layout_, layers_, rank_, row_bytes, ckpt_, ids->mover,
                                          /*window=*/32, absl::GetFlag(FLAGS_staging_rows));
  if (!backend.ok()) return backend.status();
  gpu_ = backend->get();
  WorkerOptions o;
  o.worker_id = absl::StrCat("rank-", rank_);
  o.ranks = {rank_};
  o.node = rank_ / (w_ / absl::GetFlag(FLAGS_nodes));
  o.layout = {e_, absl::GetFlag(FLAGS_redundant), w_, 1, absl::GetFlag(FLAGS_nodes)};
  o.num_layers = layers_;
  o.tensors = {{"w13", 2LL * h_ * i_ * 4}, {"w2", 1LL * h_ * i_ * 4}};
  o.checkpoint = ckpt_;
  auto rt = WorkerRuntime::Create(o, *std::move(backend));
  if (!rt.ok()) return rt.status();
  runtime_ = *std::move(rt);
  NCCL_OK(ncclCommInitRank(&comm_, w_, ids->forward, rank_));
  EPLB_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  EPLB_CUDA_RETURN_IF_ERROR(cudaEventCreate(&ffn_start_));
  EPLB_CUDA_RETURN_IF_ERROR(cudaEventCreate(&ffn_end_));
  if (!absl::GetFlag(FLAGS_controller).empty()) {
    client_ = std::make_unique<ControllerClient>(
        runtime_.get(), ControllerClientOptions{absl::GetFlag(FLAGS_controller)});
    if (absl::Status s = client_->Start(); !s.ok()) return s;
  } else {
    if (absl::Status s = runtime_->Adopt(PlacementMap::Identity(layers_, e_, p_), 1); !s.ok())
      return s;
  }
  // Reference weights: every logical expert and the shared one, per layer.
  const size_t tk = static_cast<size_t>(t_) * k_, tc = static_cast<size_t>(t_) * cols_;
  const size_t max_recv = static_cast<size_t>(w_) * tc;
  const size_t floats_per_row = static_cast<size_t>(row_bytes / 4);
  absl::Status s = absl::OkStatus();
  auto all = [&](absl::Status st) {
    if (s.ok()) s = st;
  };
  all(x_.Alloc(static_cast<size_t>(layers_) * t_ * h_));
  all(logits_.Alloc(static_cast<size_t>(t_) * e_));
  all(ids_.Alloc(layers_ * tk));
  all(rw_.Alloc(layers_ * tk));
  all(physical_.Alloc(tk));
  all(slots_.Alloc(tc));
  all(weights_.Alloc(tc));
  all(shared_rank_.Alloc(t_));
  all(tables_.Alloc(static_cast<size_t>(layers_) * e_));
  all(workspace_.Alloc(RouteTopkWorkspaceBytes(t_, w_)));
  all(sendx_.Alloc(tc * h_));
  all(recvx_.Alloc(max_recv * h_));
  all(gx_.Alloc(max_recv * h_));
  all(h13_.Alloc(max_recv * 2 * i_));
  all(act_.Alloc(max_recv * i_));
  all(gy_.Alloc(max_recv * h_));
  all(ry_.Alloc(max_recv * h_));
  all(backy_.Alloc(tc * h_));
  all(ybuf_.Alloc(tc * h_));
  all(out_.Alloc(static_cast<size_t>(layers_) * t_ * h_));
  all(refy_.Alloc(tc * h_));
  all(refw_.Alloc(tc));
  all(refout_.Alloc(static_cast<size_t>(t_) * h_));
  all(idx_.Alloc(max_recv));
  all(idx2_.Alloc(max_recv));
  all(send_phys_.Alloc(tc));
  all(recv_phys_.Alloc(max_recv));
  all(counts_send_.Alloc(w_));
  all(counts_recv_.Alloc(w_));
  all(valid_.Alloc(tc));
  all(ref_valid_.Alloc(tc));
  all(counts_.Alloc(static_cast<size_t>(layers_) * p_));
  all(reduce_.Alloc(2 * static_cast<size_t>(layers_) * e_ + 8));
  if (absl::GetFlag(FLAGS_check)) {
    all(ref_weights_.Alloc(static_cast<size_t>(layers_) * (e_ + 1) * floats_per_row));
  }
  if (!s.ok()) return s;
  if (absl::GetFlag(FLAGS_check)) {
    std::vector<uint8_t> host(row_bytes);
    for (int layer = 0; layer < layers_; ++layer) {
      for (int e = 0; e <= e_; ++e) {
        ckpt_(layer, e, host.data(), row_bytes);
        EPLB_CUDA_RETURN_IF_ERROR(cudaMemcpy(
            ref_weights_.get() + (static_cast<size_t>(layer) * (e_ + 1) + e) * floats_per_row,
            host.data(), row_bytes, cudaMemcpyHostToDevice));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status Rank::Ffn(const float* x_rows, int n, const uint8_t* weights, float* y_rows) {
  const float* w13 = reinterpret_cast<const float*>(weights);
  const float* w2 = w13 + 2LL * i_ * h_;
  if (absl::Status s = LaunchGemmNT(x_rows, w13, n, 2 * i_, h_, h13_.get(), stream_); !s.ok())
    return s;
  if (absl::Status s = LaunchSwiGlu(h13_.get(), n, i_, act_.get(), stream_); !s.ok()) return s;
  return LaunchGemmNT(act_.get(), w2, n, h_, i_, y_rows, stream_);
}

absl::Status Rank::AllToAll(const std::vector<int>& send_counts,
                            const std::vector<int>& recv_counts, const float* send, float* recv,
                            int width) {
  NCCL_OK(ncclGroupStart());
  size_t so = 0, ro = 0;
  for (int d = 0; d < w_; ++d) {
    if (send_counts[d] > 0) {
      NCCL_OK(ncclSend(send + so * width, static_cast<size_t>(send_counts[d]) * width, ncclFloat, d,
                       comm_, stream_));
    }
    if (recv_counts[d] > 0) {
      NCCL_OK(ncclRecv(recv + ro * width, static_cast<size_t>(recv_counts[d]) * width, ncclFloat, d,
                       comm_, stream_));
    }
    so += send_counts[d];
    ro += recv_counts[d];
  }
  NCCL_OK(ncclGroupEnd());
  return absl::OkStatus();
}

absl::Status Rank::Forward(int layer, int step) {
  float* x = x_.get() + static_cast<size_t>(layer) * t_ * h_;
  int32_t* ids = ids_.get() + static_cast<size_t>(layer) * t_ * k_;
  float* rw = rw_.get() + static_cast<size_t>(layer) * t_ * k_;
  if (absl::Status s = LaunchMoeInputs(seed_, step, layer, rank_, t_, h_, e_, hot1_, hot2_, x,
                                       logits_.get(), stream_);
      !s.ok())
    return s;
  if (absl::Status s = LaunchTopkSoftmax(logits_.get(), t_, e_, k_, ids, rw, stream_); !s.ok())
    return s;
  RouteTopkParams p;
  p.num_tokens = t_;
  p.top_k = k_;
  p.num_logical = e_;
  p.num_physical = p_;
  p.ep_size = w_;
  p.num_shared = 1;
  p.rank = rank_;
  p.static_table = tables_.get() + static_cast<size_t>(layer) * e_;
  p.waterfill =
      absl::GetFlag(FLAGS_waterfill) == "sglang" ? RouteWaterfill::kSglang : RouteWaterfill::kExact;
  p.min_batch = 64;
  p.shared_weight = 1.0f / 2.5f;
  p.overlap_previous = absl::GetFlag(FLAGS_overlap);  // the table is written by copies only
  RouteTopkBuffers<int32_t> b;
  b.logical = ids;
  b.routed_weights = rw;
  b.physical = physical_.get();
  b.slots = slots_.get();
  b.weights = weights_.get();
  b.shared_rank = shared_rank_.get();
  b.workspace = workspace_.get();
  if (absl::Status s = LaunchRouteTopk(p, b, stream_); !s.ok()) return s;
  std::vector<int32_t> slots, physical, shared_rank;
  if (absl::Status s = Down(slots, slots_.get(), static_cast<size_t>(t_) * cols_, stream_); !s.ok())
    return s;
  if (absl::GetFlag(FLAGS_plant_bug)) {
    if (absl::Status s = Down(physical, physical_.get(), static_cast<size_t>(t_) * k_, stream_);
        !s.ok())
      return s;
    if (absl::Status s = Down(shared_rank, shared_rank_.get(), t_, stream_); !s.ok()) return s;
  }
  // Bucket (token, column) pairs by the rank owning their slot.
  const int rows = l_ + 1;
  const int bug_l = e_ / w_;
  std::vector<std::vector<int32_t>> by_dest(w_);  // entries t * cols + c
  std::vector<int32_t> dest_row(static_cast<size_t>(t_) * cols_, -1);
  std::vector<int32_t> valid(static_cast<size_t>(t_) * cols_, 0);
  for (int t = 0; t < t_; ++t) {
    for (int c = 0; c < cols_; ++c) {
      const int tc = t * cols_ + c;
      const int32_t slot = slots[tc];
      if (slot < 0) continue;
      int rank = slot / rows, row = slot % rows;
      if (absl::GetFlag(FLAGS_plant_bug)) {  // the old bug: slots laid out with L' = E / W
        if (c < k_) {
          const int64_t pid = physical[t * k_ + c];
          const int64_t bad = pid + (pid / bug_l);
          rank = std::min<int>(static_cast<int>(bad / (bug_l + 1)), w_ - 1);
          row = static_cast<int>(bad % (bug_l + 1));
        } else {
          rank = shared_rank[t];
          row = bug_l;
        }
      }
      valid[tc] = 1;
      dest_row[tc] = row;
      by_dest[rank].push_back(tc);
    }
  }
  std::vector<int> send_counts(w_), recv_counts(w_);
  std::vector<int32_t> send_tok, send_pos, send_phys;
  for (int d = 0; d < w_; ++d) {
    send_counts[d] = static_cast<int>(by_dest[d].size());
    for (int32_t tc : by_dest[d]) {
      send_tok.push_back(tc / cols_);
      send_pos.push_back(tc);
      // The physical id of the row that serves it (-1: the shared row).
      send_phys.push_back(dest_row[tc] < l_ ? d * l_ + dest_row[tc] : -1);
    }
  }
  const int n_send = static_cast<int>(send_tok.size());
  // Counts, then tokens and their physical ids.
  if (absl::Status s = Up(counts_send_.get(), send_counts, stream_); !s.ok()) return s;
  NCCL_OK(ncclGroupStart());
  for (int d = 0; d < w_; ++d) {
    NCCL_OK(ncclSend(counts_send_.get() + d, 1, ncclInt32, d, comm_, stream_));
    NCCL_OK(ncclRecv(counts_recv_.get() + d, 1, ncclInt32, d, comm_, stream_));
  }
  NCCL_OK(ncclGroupEnd());
  if (absl::Status s = Down(recv_counts, counts_recv_.get(), w_, stream_); !s.ok()) return s;
  int n_recv = 0;
  for (int c : recv_counts) n_recv += c;
  if (absl::Status s = Up(idx_.get(), send_tok, stream_); !s.ok()) return s;
  if (absl::Status s = Up(send_phys_.get(), send_phys, stream_); !s.ok()) return s;
  if (absl::Status s = LaunchGatherRows(x, idx_.get(), n_send, h_, sendx_.get(), stream_); !s.ok())
    return s;
  if (absl::Status s = AllToAll(send_counts, recv_counts, sendx_.get(), recvx_.get(), h_); !s.ok())
    return s;
  {
    NCCL_OK(ncclGroupStart());
    size_t so = 0, ro = 0;
    for (int d = 0; d < w_; ++d) {
      if (send_counts[d] > 0)
        NCCL_OK(ncclSend(send_phys_.get() + so, send_counts[d], ncclInt32, d, comm_, stream_));
      if (recv_counts[d] > 0)
        NCCL_OK(ncclRecv(recv_phys_.get() + ro, recv_counts[d], ncclInt32, d, comm_, stream_));
      so += send_counts[d];
      ro += recv_counts[d];
    }
    NCCL_OK(ncclGroupEnd());
  }
  // The load recorder's input: the physical ids this rank served (histogram kernel).
  if (absl::Status s =
          LaunchLoadHistogram(recv_phys_.get(), n_recv, p_,
                              counts_.get() + static_cast<size_t>(layer) * p_, nullptr, stream_);
      !s.ok())
    return s;
  // Expert FFNs, one row at a time, on the tokens that row received.
  std::vector<int32_t> recv_phys;
  if (absl::Status s = Down(recv_phys, recv_phys_.get(), n_recv, stream_); !s.ok()) return s;
  std::vector<std::vector<int32_t>> by_row(rows);
  for (int j = 0; j < n_recv; ++j) {
    const int32_t pid = recv_phys[j];
    const int row = pid < 0 ? l_ : pid - rank_ * l_;
    if (row < 0 || row >= rows) {
      return absl::InternalError(absl::StrCat("rank ", rank_, " received physical id ", pid,
                                              ", which is not one of its rows"));
    }
    by_row[row].push_back(j);
  }
  std::vector<int32_t> order;
  for (const auto& v : by_row) order.insert(order.end(), v.begin(), v.end());
  if (absl::Status s = Up(idx2_.get(), order, stream_); !s.ok()) return s;
  if (absl::Status s = LaunchGatherRows(recvx_.get(), idx2_.get(), n_recv, h_, gx_.get(), stream_);
      !s.ok())
    return s;
  EPLB_CUDA_RETURN_IF_ERROR(cudaEventRecord(ffn_start_, stream_));
  size_t off = 0;
  for (int row = 0; row < rows; ++row) {
    const int n = static_cast<int>(by_row[row].size());
    if (n == 0) continue;
    if (absl::Status s = Ffn(gx_.get() + off * h_, n, gpu_->Row(layer, row), gy_.get() + off * h_);
        !s.ok())
      return s;
    off += n;
  }
  EPLB_CUDA_RETURN_IF_ERROR(cudaEventRecord(ffn_end_, stream_));
  if (absl::Status s = LaunchScatterRows(gy_.get(), idx2_.get(), n_recv, h_, ry_.get(), stream_);
      !s.ok())
    return s;
  // Results back to their tokens' ranks, then combined.
  if (absl::Status s = AllToAll(recv_counts, send_counts, ry_.get(), backy_.get(), h_); !s.ok())
    return s;
  if (absl::Status s = Up(idx_.get(), send_pos, stream_); !s.ok()) return s;
  if (absl::Status s =
          LaunchScatterRows(backy_.get(), idx_.get(), n_send, h_, ybuf_.get(), stream_);
      !s.ok())
    return s;
  if (absl::Status s = Up(valid_.get(), valid, stream_); !s.ok()) return s;
  if (absl::Status s = LaunchCombine(ybuf_.get(), weights_.get(), valid_.get(), t_, cols_, h_,
                                     out_.get() + static_cast<size_t>(layer) * t_ * h_, stream_);
      !s.ok())
    return s;
  EPLB_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  float ms = 0;
  EPLB_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, ffn_start_, ffn_end_));
  ffn_ms_ += ms;
  return absl::OkStatus();
}

absl::Status Rank::Reference(int layer, int64_t& mismatched, double& max_diff,
                             std::vector<int64_t>& chosen) {
  const float* x = x_.get() + static_cast<size_t>(layer) * t_ * h_;
  std::vector<int32_t> ids;
  std::vector<float> rw;
  if (absl::Status s = Down(ids, ids_.get() + static_cast<size_t>(layer) * t_ * k_,
                            static_cast<size_t>(t_) * k_, stream_);
      !s.ok())
    return s;
  if (absl::Status s = Down(rw, rw_.get() + static_cast<size_t>(layer) * t_ * k_,
                            static_cast<size_t>(t_) * k_, stream_);
      !s.ok())
    return s;
  std::vector<std::vector<int32_t>> tok(e_ + 1), pos(e_ + 1);
  std::vector<float> w(static_cast<size_t>(t_) * cols_);
  for (int t = 0; t < t_; ++t) {
    for (int k = 0; k < k_; ++k) {
      const int e = ids[t * k_ + k];
      ++chosen[static_cast<size_t>(layer) * e_ + e];
      tok[e].push_back(t);
      pos[e].push_back(t * cols_ + k);
      w[t * cols_ + k] = rw[t * k_ + k];
    }
    tok[e_].push_back(t);
    pos[e_].push_back(t * cols_ + k_);
    w[t * cols_ + k_] = 1.0f / 2.5f;
  }
  const size_t floats_per_row = 3ULL * h_ * i_;
  for (int e = 0; e <= e_; ++e) {
    const int n = static_cast<int>(tok[e].size());
    if (n == 0) continue;
    if (absl::Status s = Up(idx_.get(), tok[e], stream_); !s.ok()) return s;
    if (absl::Status s = Up(idx2_.get(), pos[e], stream_); !s.ok()) return s;
    if (absl::Status s = LaunchGatherRows(x, idx_.get(), n, h_, gx_.get(), stream_); !s.ok())
      return s;
    const float* weights =
        ref_weights_.get() + (static_cast<size_t>(layer) * (e_ + 1) + e) * floats_per_row;
    if (absl::Status s = Ffn(gx_.get(), n, reinterpret_cast<const uint8_t*>(weights), gy_.get());
        !s.ok())
      return s;
    if (absl::Status s = LaunchScatterRows(gy_.get(), idx2_.get(), n, h_, refy_.get(), stream_);
        !s.ok())
      return s;
    EPLB_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));  // idx buffers are reused
  }
  if (absl::Status s = Up(refw_.get(), w, stream_); !s.ok()) return s;
  if (absl::Status s = Up(ref_valid_.get(), std::vector<int32_t>(w.size(), 1), stream_); !s.ok())
    return s;
  if (absl::Status s = LaunchCombine(refy_.get(), refw_.get(), ref_valid_.get(), t_, cols_, h_,
                                     refout_.get(), stream_);
      !s.ok())
    return s;
  std::vector<float> got, want;
  if (absl::Status s = Down(got, out_.get() + static_cast<size_t>(layer) * t_ * h_,
                            static_cast<size_t>(t_) * h_, stream_);
      !s.ok())
    return s;
  if (absl::Status s = Down(want, refout_.get(), static_cast<size_t>(t_) * h_, stream_); !s.ok())
    return s;
  for (int t = 0; t < t_; ++t) {
    const float* a = got.data() + static_cast<size_t>(t) * h_;
    const float* b = want.data() + static_cast<size_t>(t) * h_;
    if (std::memcmp(a, b, sizeof(float) * h_) != 0) ++mismatched;
    for (int j = 0; j < h_; ++j) max_diff = std::max<double>(max_diff, std::fabs(a[j] - b[j]));
  }
  return absl::OkStatus();
}

absl::Status Rank::Run() {
  if (absl::Status s = Setup(); !s.ok()) return s;
  const int steps = absl::GetFlag(FLAGS_steps);
  const int drift = std::max(1, absl::GetFlag(FLAGS_drift_every));
  const bool check = absl::GetFlag(FLAGS_check);
  int64_t mismatched = 0, load_mismatch_steps = 0;
  double max_diff = 0;
  int prepares = 0, commits = 0;
  std::vector<double> step_ms, step_ms_quiet, prepare_ms, commit_ms, ffn_ms;
  std::vector<double> stage_gbps;
  int64_t bytes_moved = 0;
  int64_t last_report = 0;
  WorkerRuntime::AllMin all_min =
      [&](const std::vector<int64_t>& v) -> absl::StatusOr<std::vector<int64_t>> {
    if (absl::Status s = Up(reduce_.get(), v, stream_); !s.ok()) return s;
    NCCL_OK(
        ncclAllReduce(reduce_.get(), reduce_.get(), v.size(), ncclInt64, ncclMin, comm_, stream_));
    std::vector<int64_t> out;
    if (absl::Status s = Down(out, reduce_.get(), v.size(), stream_); !s.ok()) return s;
    return out;
  };
  for (int step = 0; step < steps; ++step) {
    // Experts 8 and 9 have one replica each under the identity map (E=16, P=24), on one rank.
    hot1_ = (8 + 5 * (step / drift)) % e_;
    hot2_ = (hot1_ + 1) % e_;
    const auto t0 = std::chrono::steady_clock::now();
    auto ran = runtime_->StepBoundary(all_min);
    if (!ran.ok()) return ran.status();
    const auto t1 = std::chrono::steady_clock::now();
    const double boundary_ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
    if (*ran == "prepare") {
      ++prepares;
      prepare_ms.push_back(boundary_ms);
      bytes_moved += gpu_->staged_bytes_received();
      if (gpu_->last_stage_seconds() > 0) {
        stage_gbps.push_back(gpu_->staged_bytes_received() / gpu_->last_stage_seconds() / 1e9);
      }
    } else if (*ran == "commit") {
      ++commits;
      commit_ms.push_back(boundary_ms);
    }
    // The dispatch tables of the map in force (rebuilt by the runtime at each commit).
    const std::shared_ptr<const PlacementMap> map = runtime_->map();
    if (runtime_->applied_version() != table_version_) {
      table_version_ = runtime_->applied_version();
      std::vector<int32_t> tables;
      for (int layer = 0; layer < layers_; ++layer) {
        std::vector<int32_t> row = runtime_->DispatchRow(rank_, layer);
        tables.insert(tables.end(), row.begin(), row.end());
      }
      if (absl::Status s = Up(tables_.get(), tables, stream_); !s.ok()) return s;
      EPLB_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    }
    ffn_ms_ = 0;
    for (int layer = 0; layer < layers_; ++layer) {
      if (absl::Status s = Forward(layer, step); !s.ok()) return s;
    }
    ffn_ms.push_back(ffn_ms_);
    const auto t2 = std::chrono::steady_clock::now();
    const double forward_ms = std::chrono::duration<double, std::milli>(t2 - t1).count();
    step_ms.push_back(forward_ms + boundary_ms);
    if (ran->empty()) step_ms_quiet.push_back(forward_ms + boundary_ms);
    // Load: what the histogram counted goes to the recorder; summed over ranks it must equal
    // the router's choices.
    std::vector<int64_t> counts;
    if (absl::Status s = Down(counts, counts_.get(), static_cast<size_t>(layers_) * p_, stream_);
        !s.ok())
      return s;
    EPLB_CUDA_RETURN_IF_ERROR(
        cudaMemsetAsync(counts_.get(), 0, sizeof(int64_t) * layers_ * p_, stream_));
    std::vector<int64_t> both(2 * static_cast<size_t>(layers_) * e_, 0);  // recorded, chosen
    for (int layer = 0; layer < layers_; ++layer) {
      runtime_->RecordCounts(layer, absl::MakeConstSpan(counts.data() + layer * p_, p_));
      for (int p = 0; p < p_; ++p) {
        both[static_cast<size_t>(layer) * e_ + map->LogicalOf(layer, PhysicalId(p)).value()] +=
            counts[static_cast<size_t>(layer) * p_ + p];
      }
    }
    if (check) {
      std::vector<int64_t> chosen(static_cast<size_t>(layers_) * e_, 0);
      for (int layer = 0; layer < layers_; ++layer) {
        if (absl::Status s = Reference(layer, mismatched, max_diff, chosen); !s.ok()) return s;
      }
      std::copy(chosen.begin(), chosen.end(), both.begin() + static_cast<size_t>(layers_) * e_);
      if (absl::Status s = Up(reduce_.get(), both, stream_); !s.ok()) return s;
      NCCL_OK(ncclAllReduce(reduce_.get(), reduce_.get(), both.size(), ncclInt64, ncclSum, comm_,
                            stream_));
      std::vector<int64_t> sum;
      if (absl::Status s = Down(sum, reduce_.get(), both.size(), stream_); !s.ok()) return s;
      if (!std::equal(sum.begin(), sum.begin() + layers_ * e_, sum.begin() + layers_ * e_)) {
        ++load_mismatch_steps;
      }
    }
    if (client_ != nullptr && (step + 1) % absl::GetFlag(FLAGS_report_every) == 0) {
      client_->ReportNow(last_report, step).IgnoreError();
      last_report = step + 1;
    }
  }
  double gbps = 0;
  if (!stage_gbps.empty()) gbps = Median(stage_gbps);
  const std::string json = absl::StrCat(
      "{\"rank\": ", rank_, ", \"world\": ", w_, ", \"steps\": ", steps, ", \"tokens\": ", t_,
      ", \"layers\": ", layers_, ", \"mismatched_tokens\": ", mismatched,
      ", \"max_abs_diff\": ", max_diff, ", \"load_mismatch_steps\": ", load_mismatch_steps,
      ", \"prepares\": ", prepares, ", \"commits\": ", commits,
      ", \"final_version\": ", runtime_->applied_version(),
      ", \"step_ms_median\": ", Median(step_ms),
      ", \"step_ms_quiet_median\": ", Median(step_ms_quiet),
      ", \"prepare_step_ms_median\": ", Median(prepare_ms), ", \"prepare_step_ms_max\": ",
      prepare_ms.empty() ? 0 : *std::max_element(prepare_ms.begin(), prepare_ms.end()),
      ", \"commit_step_ms_median\": ", Median(commit_ms), ", \"ffn_ms_median\": ", Median(ffn_ms),
      ", \"bytes_received\": ", bytes_moved, ", \"stage_gbps_median\": ", gbps,
      ", \"inconsistent_rows\": ", runtime_->Inconsistencies().size(), "}");
  std::printf("%s\n", json.c_str());
  std::fflush(stdout);
  if (!absl::GetFlag(FLAGS_out).empty()) {
    std::ofstream f(absl::GetFlag(FLAGS_out));
    f << json << "\n";
  }
  if (client_ != nullptr) client_->Stop();
  return absl::OkStatus();
}

}  // namespace
}  // namespace e2e
}  // namespace eplb

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  eplb::e2e::Rank rank;
  absl::Status s = rank.Run();
  if (!s.ok()) {
    std::fprintf(stderr, "moe_gpu_rank %d: %s\n", absl::GetFlag(FLAGS_rank), s.ToString().c_str());
    return 1;
  }
  return 0;
}
