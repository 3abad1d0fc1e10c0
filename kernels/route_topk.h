// The per-layer routing hot path in one family (spec/DOMAIN.md sections 3, 6, 7, 8):
//
//   logical top-k ids [N][K]  ->  physical ids [N][K]        (static table or dynamic pick)
//                             ->  load histogram counts[P]   (accumulated; padding skipped)
//                             ->  slot ids [N][K+S] + weights (routed remap, shared columns)
//                             ->  Waterfill: the rank of each token's shared expert
//
// Launcher-only header (plain C++). One kernel per call, capturable in a CUDA graph (no host
// sync, tables read in place): one read of the ids makes the physical ids, the routed slots and
// both histograms; small calls run on one block; larger ones exchange the rank counts between
// blocks through the workspace (no grid barrier), then every block derives the Waterfill plan
// and writes its rows' shared columns. int32 and int64 ids, K <= 16, W <= 1024, any N >= 0 with
// N * (K + 1) + W < 2^31 (about 126M tokens at K = 16; checked). Waterfill uses the static plan
// (this rank's own counts); dynamic mode's all-reduce belongs to the caller. Calls that share a
// workspace must be stream-ordered and have the same W.
//
// The CPU twin, RouteTopkRef, is built from //core (dispatch, Waterfill, remap): the kernels must
// equal it bit for bit.
//
//   RouteTopkParams p = ...;                  // device pointers in p and b
//   cudaMalloc(&b.workspace, RouteTopkWorkspaceBytes(n, w));
//   cudaMemset(b.workspace, 0, RouteTopkWorkspaceBytes(n, w));   // once; calls keep it clean
//   EPLB_RETURN_IF_ERROR(LaunchRouteTopk(p, b, stream));
#ifndef EPLB_KERNELS_ROUTE_TOPK_H_
#define EPLB_KERNELS_ROUTE_TOPK_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"

namespace eplb {

enum class RouteDispatch { kStatic, kDynamic };
enum class RouteWaterfill { kLocal, kSglang, kExact };

inline constexpr int kRouteMaxTopK = 16;
inline constexpr int kRouteMaxRanks = 1024;

struct RouteTopkParams {
  int num_tokens = 0;
  int top_k = 0;
  int num_logical = 0;   // E
  int num_physical = 0;  // P = E + R
  int ep_size = 0;       // W
  int num_shared = 0;    // S
  int rank = 0;          // the source rank
  RouteDispatch dispatch = RouteDispatch::kStatic;
  const int32_t* static_table = nullptr;   // [E]: this rank's table for the layer
  const int32_t* replicas = nullptr;       // [E][max_replicas], ascending, -1 padded (dynamic)
  const int32_t* replica_count = nullptr;  // [E] (dynamic)
  int max_replicas = 0;
  bool rank_invariant = true;
  RouteWaterfill waterfill = RouteWaterfill::kSglang;
  int min_batch = 64;  // batches under this keep the shared expert local
  float shared_weight = 1.0f;
  // Blocks of the grid; 0 (the default) lets the launcher choose. Set only to measure other
  // grids (the benchmark's --blocks); capped at what can be resident and at num_tokens.
  int grid_blocks = 0;
  // Programmatic dependent launch (Hopper). Such a call may start before the kernels ahead of it
  // in the stream have finished. It stages the static table, then waits for them
  // (griddepcontrol.wait) before it reads the ids, the weights or the workspace, or writes any
  // output, so its launch and set-up overlap their end. The tables (static table, replicas and
  // replica counts) are read through the read-only cache, which may be read before the wait: they
  // must not be written by a kernel that may still be running when the call starts (the previous
  // kernel, and those it may overlap if it was launched this way too). A copy, a memset, or a
  // kernel with at least one full (plain) dependency between it and this call is safe. Such a
  // call also lets the next kernel launched with programmatic dependent launch start at its own
  // start, so that kernel may run during the whole call: it must wait the same way before it
  // reads anything this call writes, and before it writes anything this call reads or writes
  // (ids, weights, tables, outputs).
  bool overlap_previous = false;
  // Debug: if set, a device array of 6 int64 that receives clock64() of block 0 at the start,
  // after the set-up, after phase 1, after the exchange, after the plan and at the end (for
  // profiling only).
  long long* debug_phase_clocks = nullptr;
};

template <typename Id>
struct RouteTopkBuffers {
  const Id* logical = nullptr;            // [N][K] in
  const float* routed_weights = nullptr;  // [N][K] in, or null (1.0)
  Id* physical = nullptr;                 // [N][K] out
  int64_t* counts = nullptr;              // [P] accumulated, or null
  Id* slots = nullptr;                    // [N][K+S] out
  float* weights = nullptr;               // [N][K+S] out
  int32_t* shared_rank = nullptr;         // [N] out, or null
  // RouteTopkWorkspaceBytes(N, W) bytes, zeroed once; it serves calls of one W only (the
  // layout of its exchange words depends on W: another W can leave words that make the
  // exchange spin for ever), stream-ordered.
  void* workspace = nullptr;
};

size_t RouteTopkWorkspaceBytes(int num_tokens, int ep_size);

// Checks the parameters (InvalidArgument naming the value), then enqueues the kernels.
absl::Status LaunchRouteTopk(const RouteTopkParams& p, const RouteTopkBuffers<int32_t>& b,
                             cudaStream_t stream);
absl::Status LaunchRouteTopk(const RouteTopkParams& p, const RouteTopkBuffers<int64_t>& b,
                             cudaStream_t stream);

// The same contract on host pointers (workspace unused), built from //core.
absl::Status RouteTopkRef(const RouteTopkParams& p, const RouteTopkBuffers<int32_t>& b);
absl::Status RouteTopkRef(const RouteTopkParams& p, const RouteTopkBuffers<int64_t>& b);

// Shared checks of both paths.
absl::Status ValidateRouteTopk(const RouteTopkParams& p);

}  // namespace eplb

#endif  // EPLB_KERNELS_ROUTE_TOPK_H_
