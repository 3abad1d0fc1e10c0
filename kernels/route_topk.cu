// One cooperative kernel per layer and step: route + count, one grid barrier, plan + expand.
//
//   phase 1 (each block, a contiguous chunk of rows): over the chunk's (row, k) elements in
//           coalesced batches, dispatch every id, write physical ids, routed slots and weights;
//           count per physical id in shared memory (the rank counts are sums of those), flag
//           rows with a routed id; flush with atomics.
//   grid barrier (skipped when one block covers everything)
//   phase 2 (one warp of each block, redundantly: no second barrier): the Waterfill plan from
//           the rank counts: SGLang's level and headroom prefix, or the exact quotas' prefix.
//   phase 3 (each block, its rows): the shared columns.
//
// Why it looks like this (H100 profiles, docs/BENCHMARKS.md): a thread per row made every store
// strided (8x the memory transactions) and branches between loads serialised them; block-wide
// plans cost several barriers; cold instruction fetches at branch targets are a visible part of
// the small-batch time, hence one kernel per policy.
//
// The rank counts live in a double-buffered workspace: call i accumulates into set i % 2 while
// block 0 clears set (i + 1) % 2, so no memset node is needed and the kernel leaves the
// workspace ready for the next call. It must be zeroed once when allocated.
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <cub/block/block_scan.cuh>
#include <type_traits>

#include "core/dispatch.h"
#include "core/waterfill.h"
#include "kernels/cuda_status.h"
#include "kernels/route_topk.h"

namespace eplb {
namespace {

constexpr int kThreads = 512;
constexpr int kMaxBlocks = 1024;
constexpr int kMaxSharedBins = 8192;

struct Workspace {
  unsigned int* call_counter;     // [1]
  unsigned int* barrier;          // [2]: arrivals, generation
  unsigned long long* rank_load;  // [2][W]
  unsigned int* block_valid;      // [2][kMaxBlocks]
};

size_t Align8(size_t x) { return (x + 7) / 8 * 8; }

Workspace Carve(void* base, int w) {
  char* p = static_cast<char*>(base);
  Workspace ws;
  ws.call_counter = reinterpret_cast<unsigned int*>(p);
  ws.barrier = ws.call_counter + 2;
  p += 16;
  ws.rank_load = reinterpret_cast<unsigned long long*>(p);
  p += Align8(sizeof(unsigned long long) * 2 * w);
  ws.block_valid = reinterpret_cast<unsigned int*>(p);
  return ws;
}

struct Shape {
  int n, k, e, p, w, s, l, rank, min_batch;  // the policy is the kernel's template argument
  float shared_weight;
  long long* profile;  // debug: clock64 at phase boundaries of block 0 (null: off)
};

#define EPLB_MARK(i) \
  if (sh.profile != nullptr && blockIdx.x == 0 && threadIdx.x == 0) sh.profile[i] = clock64()

using BlockScan = cub::BlockScan<long long, kThreads>;

struct PlanShared {
  long long load[kRouteMaxRanks];
  long long prefix[kRouteMaxRanks + 1];
  long long value;  // broadcast slot
  long long value2;
  long long offset;  // exact: valid tokens of lower blocks (the one-warp plan's answer)
  union {
    typename BlockScan::TempStorage scan;
  } cub;
};

// The Waterfill plan, computed by one warp for any W <= 1024: lane i owns order positions
// [i*m, i*m + m), m = ceil(W / 32); sums and scans are lane-serial plus warp shuffles, with no
// block-wide barrier. Same integer arithmetic as the CPU twin (core/waterfill).
__device__ long long WarpSum(long long x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}
__device__ long long WarpMax(long long x) {
  for (int o = 16; o > 0; o >>= 1) x = max(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
__device__ long long WarpMin(long long x) {
  for (int o = 16; o > 0; o >>= 1) x = min(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
__device__ long long WarpExclusiveScan(long long x) {
  const int lane = threadIdx.x & 31;
  long long inc = x;
  for (int o = 1; o < 32; o <<= 1) {
    const long long y = __shfl_up_sync(0xffffffffu, inc, o);
    if (lane >= o) inc += y;
  }
  return inc - x;
}

__device__ long long SglangHeadroom(const Shape& sh, long long level, long long load, int r) {
  long long x = level - load;
  if (x < 0) x = 0;
  if (r != sh.rank) {  // 32-bit arithmetic when exact (64-bit division is out of line)
    x = x < (1ll << 28) ? static_cast<long long>(static_cast<uint32_t>(x) * 10u / 11u)
                        : x * 10 / 11;
  }
  return x;
}

// SGLang's fallback when every headroom is 0 (rare): the sequential hysteresis argmin, as the
// reference. Lane 0 writes it to sm.value2.
__device__ void SglangFallback(const Shape& sh, PlanShared& sm, long long total_headroom) {
  if ((threadIdx.x & 31) != 0) return;
  int best = sh.rank;
  if (total_headroom == 0) {
    for (int r = 0; r < sh.w; ++r) {
      if (sm.load[r] * 11 < sm.load[best] * 10) best = r;
    }
  }
  sm.value2 = best;
}

// Exact policy: the valid tokens of every block (returned) and of the lower ones (sm.offset).
__device__ long long WarpValidTokens(PlanShared& sm, const unsigned int* valid_of_block) {
  long long v_all = 0, v_before = 0;
  for (int b = threadIdx.x & 31; b < static_cast<int>(gridDim.x); b += 32) {
    const long long v = valid_of_block[b];
    v_all += v;
    if (b < static_cast<int>(blockIdx.x)) v_before += v;
  }
  const long long valid = WarpSum(v_all);
  const long long offset = WarpSum(v_before);
  if ((threadIdx.x & 31) == 0) sm.offset = offset;
  return valid;
}

// Warp 0 only. Writes sm.load[0..w), sm.prefix[0..w], sm.value2 (SGLang's fallback rank) and
// sm.offset (exact: valid tokens of the lower blocks).
template <int kMode>
__device__ void WarpPlan(const Shape& sh, PlanShared& sm, const unsigned long long* rank_load,
                         const unsigned int* valid_of_block) {
  const int lane = threadIdx.x;
  const int m = (sh.w + 31) / 32;
  const int first = lane * m, last = min(sh.w, first + m);
  long long part = 0;
  for (int r = lane; r < sh.w; r += 32) {
    sm.load[r] = static_cast<long long>(rank_load[r]);
    part += sm.load[r];
  }
  __syncwarp();
  if (lane == 0) sm.prefix[0] = 0;
  if (kMode == 1) {
    const long long total_routed = WarpSum(part);
    const long long level = (total_routed + total_routed / sh.k + sh.w - 1) / sh.w;
    long long run = 0;
    for (int r = first; r < last; ++r) {
      run += SglangHeadroom(sh, level, sm.load[r], r);
      sm.prefix[r + 1] = run;
    }
    const long long before = WarpExclusiveScan(run);
    for (int r = first; r < last; ++r) sm.prefix[r + 1] += before;
    SglangFallback(sh, sm, __shfl_sync(0xffffffffu, before + run, 31));
    __syncwarp();
    return;
  }
  const long long valid = WarpValidTokens(sm, valid_of_block);
  if (valid <= 0) return;
  // The level t: for the highest load L* with filled(L*) = sum_q max(0, L* - load_q) < valid,
  // t = L* + ceil((valid - filled(L*)) / count(L*)), count = #{q : load_q <= L*}; that is the
  // least t with sum_r max(0, t - load_r) >= valid, found by bisection, O(W / 32) per step.
  long long t;
  {
    long long mn = LLONG_MAX, mx = LLONG_MIN;
    for (int r = lane; r < sh.w; r += 32) {
      mn = min(mn, sm.load[r]);
      mx = max(mx, sm.load[r]);
    }
    mn = WarpMin(mn);
    mx = WarpMax(mx);
    // f(t) <= W (t - min) and f(t) >= W (t - max) bound the search: f(lo) < valid <= f(hi).
    const long long per = (valid + sh.w - 1) / sh.w;
    long long lo = mn + per - 1, hi = mx + per;
    while (hi - lo > 1) {
      const long long mid = lo + (hi - lo) / 2;
      long long f = 0;
      for (int r = lane; r < sh.w; r += 32) f += mid > sm.load[r] ? mid - sm.load[r] : 0;
      if (WarpSum(f) >= valid) {
        hi = mid;
      } else {
        lo = mid;
      }
    }
    t = hi;
  }
  // Quotas by order position; the last partial level to eligible positions in order.
  long long q_part = 0, e_part = 0;
  for (int pos = first; pos < last; ++pos) {
    const long long l = sm.load[ExactOrderRank(pos, sh.rank)];
    const long long q = t - 1 - l > 0 ? t - 1 - l : 0;
    q_part += q;
    e_part += l + q == t - 1;
  }
  const long long rem = valid - WarpSum(q_part);
  long long elig_before = WarpExclusiveScan(e_part);
  long long run = 0;
  for (int pos = first; pos < last; ++pos) {
    const long long l = sm.load[ExactOrderRank(pos, sh.rank)];
    long long q = t - 1 - l > 0 ? t - 1 - l : 0;
    const bool elig = l + q == t - 1;
    if (elig) {
      if (elig_before < rem) ++q;
      ++elig_before;
    }
    run += q;
    sm.prefix[pos + 1] = run;
  }
  const long long before = WarpExclusiveScan(run);
  for (int pos = first; pos < last; ++pos) sm.prefix[pos + 1] += before;
  __syncwarp();
}

// W <= 32: lane = rank or order position (the shortest path). Same outputs as WarpPlan.
template <int kMode>
__device__ void WarpPlanSmall(const Shape& sh, PlanShared& sm, const unsigned long long* rank_load,
                              const unsigned int* valid_of_block) {
  const int lane = threadIdx.x;
  const long long load = lane < sh.w ? static_cast<long long>(rank_load[lane]) : 0;
  sm.load[lane] = load;  // lanes >= w write zeros past the ranks (never read as loads)
  __syncwarp();
  if (kMode == 1) {
    const long long total_routed = WarpSum(load);
    const long long level = (total_routed + total_routed / sh.k + sh.w - 1) / sh.w;
    const long long x = lane < sh.w ? SglangHeadroom(sh, level, load, lane) : 0;
    const long long inc = WarpExclusiveScan(x) + x;
    sm.prefix[lane + 1] = inc;
    if (lane == 0) sm.prefix[0] = 0;
    SglangFallback(sh, sm, __shfl_sync(0xffffffffu, inc, 31));
    return;
  }
  const long long valid = WarpValidTokens(sm, valid_of_block);
  if (valid <= 0) return;
  long long key = -1;
  if (lane < sh.w) {
    long long filled = 0;
    for (int q = 0; q < sh.w; ++q) filled += load > sm.load[q] ? load - sm.load[q] : 0;
    if (filled < valid) key = (load << 20) | lane;
  }
  key = WarpMax(key);
  const int rstar = static_cast<int>(key & ((1 << 20) - 1));
  const long long lstar = sm.load[rstar];
  const long long f_part = lane < sh.w && lstar > load ? lstar - load : 0;
  const long long c_part = lane < sh.w && load <= lstar ? 1 : 0;
  const long long filled = WarpSum(f_part);
  const long long count = WarpSum(c_part);
  const long long t = lstar + (valid - filled + count - 1) / count;
  long long q = 0, elig = 0;
  if (lane < sh.w) {
    const long long l = sm.load[ExactOrderRank(lane, sh.rank)];
    q = t - 1 - l > 0 ? t - 1 - l : 0;
    elig = l + q == t - 1;
  }
  const long long rem = valid - WarpSum(q);
  const long long before = WarpExclusiveScan(elig);
  q += (elig && before < rem) ? 1 : 0;
  const long long inc = WarpExclusiveScan(q) + q;
  sm.prefix[lane + 1] = inc;
  if (lane == 0) sm.prefix[0] = 0;
}

// Position of u in sm.prefix: the last i in [0, w) with prefix[i] <= u.
__device__ int UpperPosition(const long long* prefix, int w, long long u) {
  int lo = 0, hi = w - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (prefix[mid] <= u) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

constexpr int kBatch = 8;            // phase-1 elements per thread in flight
constexpr int kMaxRowFlags = 4096;   // rows per block with a shared flag (else re-read)
constexpr int kMaxSlotTable = 4096;  // physical ids with a shared slot table (else divide)

__host__ __device__ inline size_t FlagsOffset(int w, int p, bool shared_bins) {
  const size_t bins = sizeof(unsigned int) * (w + (shared_bins ? p : 0));
  const size_t first = bins > sizeof(PlanShared) ? bins : sizeof(PlanShared);
  return (first + 15) / 16 * 16;
}

template <typename Id>
__device__ bool RowHasRoutedId(const Id* physical, int t, int k) {
  bool any = false;
  for (int j = 0; j < k; ++j) any |= physical[static_cast<int64_t>(t) * k + j] >= 0;
  return any;
}

// Grid-wide barrier for a cooperative launch (all blocks co-resident): the last block to arrive
// resets the count and bumps the generation the others spin on. cooperative_groups' grid sync
// backs off with sleeps that cost microseconds here; a plain spin does not. One block: a block
// barrier. The counters return to their start state, so the next call reuses them.
__device__ void GridBarrier(unsigned int* bar) {
  __syncthreads();
  if (gridDim.x > 1 && threadIdx.x == 0) {
    volatile unsigned int* gen = bar + 1;
    const unsigned int my_gen = *gen;
    __threadfence();
    if (atomicAdd(bar, 1u) == gridDim.x - 1) {
      atomicExch(bar, 0u);
      __threadfence();
      atomicAdd(bar + 1, 1u);
    } else {
      while (*gen == my_gen) {
      }
    }
    __threadfence();
  }
  __syncthreads();
}

template <typename Id, bool kStatic, bool kSharedBins, int kMode>
__global__ void __launch_bounds__(kThreads)
    RouteTopkKernel(Shape sh, const Id* __restrict__ logical, const float* __restrict__ routed_w,
                    const int32_t* __restrict__ table, const int32_t* __restrict__ replicas,
                    const int32_t* __restrict__ replica_count, int max_replicas,
                    bool rank_invariant, Id* __restrict__ physical,
                    unsigned long long* __restrict__ counts, Id* __restrict__ slots,
                    float* __restrict__ weights, int32_t* __restrict__ shared_rank, Workspace ws) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  unsigned int* rank_bins = reinterpret_cast<unsigned int*>(smem_raw);  // [W]
  unsigned int* phys_bins = rank_bins + sh.w;                           // [P]
  PlanShared& plan = *reinterpret_cast<PlanShared*>(smem_raw);          // after the barrier
  // Per row of the block: does it have a routed id (kept through phase 3; after the larger of
  // the bins and the plan).
  unsigned char* row_any = smem_raw + FlagsOffset(sh.w, sh.p, kSharedBins);
  // Routed slot of each physical id, when P <= kMaxSlotTable.
  int* slot_of = reinterpret_cast<int*>(row_any + kMaxRowFlags);
  const bool slot_table = sh.p <= kMaxSlotTable;
  __shared__ unsigned int block_valid;

  const bool balance = kMode != 0 && sh.n >= sh.min_batch;
  EPLB_MARK(0);
  // The call parity is read now and used after phase 1 (its latency hides behind the loads).
  const unsigned int parity_raw = balance ? *ws.call_counter : 0u;
  for (int i = threadIdx.x; i < sh.w; i += blockDim.x) rank_bins[i] = 0;
  if (kSharedBins) {
    for (int i = threadIdx.x; i < sh.p; i += blockDim.x) phys_bins[i] = 0;
  }
  if (slot_table) {
    for (int i = threadIdx.x; i < sh.p; i += blockDim.x) slot_of[i] = i + (i / sh.l) * sh.s;
  }
  if (threadIdx.x == 0) block_valid = 0;
  const int chunk = (sh.n + gridDim.x - 1) / gridDim.x;
  const int row0 = blockIdx.x * chunk;
  const int row1 = min(sh.n, row0 + chunk);
  const int width = sh.k + sh.s;
  const bool flags = chunk <= kMaxRowFlags;
  if (flags) {
    for (int i = threadIdx.x; i < row1 - row0; i += blockDim.x) row_any[i] = 0;
  }
  __syncthreads();
  EPLB_MARK(1);
  // Phase 1, over the block's (row, k) elements in order, so that consecutive threads read and
  // write consecutive addresses. Each thread takes kBatch elements a blockDim apart at once:
  // all their id (and weight) loads, then all table lookups, then the stores, so a batch costs
  // two memory round trips.
  const int64_t e0 = static_cast<int64_t>(row0) * sh.k, e1 = static_cast<int64_t>(row1) * sh.k;
  // Row and column of this thread's first element, advanced without divisions.
  const int step_rows = static_cast<int>(blockDim.x) / sh.k, step_cols = blockDim.x % sh.k;
  int64_t t_next = row0 + threadIdx.x / sh.k;
  int k_next = static_cast<int>(threadIdx.x % sh.k);
  // One batch of B elements per thread, a blockDim apart: all loads, then all table lookups,
  // then the stores. Full batches of kBatch while they last, then single elements, so a small
  // call does not execute (predicated) code for elements it does not have.
  auto batch = [&](auto b_const, int64_t base) {
    constexpr int B = decltype(b_const)::value;
    // Branch-free loads (indices past the end are clamped, their values dropped), so the
    // compiler issues all of them before the first use.
    long long raw[B];
    float wv[B];
#pragma unroll
    for (int u = 0; u < B; ++u) {
      const int64_t i = base + static_cast<int64_t>(u) * blockDim.x + threadIdx.x;
      raw[u] = static_cast<long long>(__ldg(logical + (i < e1 ? i : e1 - 1)));
    }
    if (routed_w != nullptr) {
#pragma unroll
      for (int u = 0; u < B; ++u) {
        const int64_t i = base + static_cast<int64_t>(u) * blockDim.x + threadIdx.x;
        wv[u] = __ldg(routed_w + (i < e1 ? i : e1 - 1));
      }
    } else {
#pragma unroll
      for (int u = 0; u < B; ++u) wv[u] = 1.0f;
    }
    int e[B];
#pragma unroll
    for (int u = 0; u < B; ++u) {
      const int64_t i = base + static_cast<int64_t>(u) * blockDim.x + threadIdx.x;
      e[u] = i >= e1 ? -2 : ((raw[u] >= 0 && raw[u] < sh.e) ? static_cast<int>(raw[u]) : -1);
    }
    int pv[B];
#pragma unroll
    for (int u = 0; u < B; ++u) {
      pv[u] = -1;
      if (e[u] >= 0) {
        if (kStatic) {
          pv[u] = __ldg(table + e[u]);
        } else {
          const int64_t i = base + static_cast<int64_t>(u) * blockDim.x + threadIdx.x;
          const int t = static_cast<int>(i / sh.k), k = static_cast<int>(i % sh.k);
          const int r =
              DynamicReplicaIndex(t, k, sh.rank, rank_invariant, __ldg(replica_count + e[u]));
          pv[u] = __ldg(replicas + e[u] * max_replicas + r);
        }
      }
    }
#pragma unroll
    for (int u = 0; u < B; ++u) {
      const int64_t i = base + static_cast<int64_t>(u) * blockDim.x + threadIdx.x;
      const int64_t t = t_next;
      const int64_t o = t * width + k_next;
      t_next += step_rows;
      k_next += step_cols;
      if (k_next >= sh.k) {
        k_next -= sh.k;
        ++t_next;
      }
      if (e[u] == -2) continue;
      const int pk = pv[u];
      physical[i] = static_cast<Id>(pk);
      if (pk >= 0) {
        slots[o] = static_cast<Id>(slot_table ? slot_of[pk] : pk + (pk / sh.l) * sh.s);
        weights[o] = wv[u];
        if (flags) row_any[t - row0] = 1;
        // Shared bins per physical id: the rank counts are their sums per rank (below), so
        // no atomics go to the W rank bins, which few ranks would make hot.
        if (kSharedBins) {
          if (balance || counts != nullptr) atomicAdd(&phys_bins[pk], 1u);
        } else {
          if (balance) atomicAdd(&rank_bins[pk / sh.l], 1u);
          if (counts != nullptr) atomicAdd(&counts[pk], 1ull);
        }
      } else {
        slots[o] = static_cast<Id>(-1);
        weights[o] = 0.0f;
      }
    }
  };
  const int64_t full = static_cast<int64_t>(blockDim.x) * kBatch;
  int64_t base = e0;
  for (; base + full <= e1; base += full) batch(std::integral_constant<int, kBatch>{}, base);
  for (; base < e1; base += blockDim.x) batch(std::integral_constant<int, 1>{}, base);
  __syncthreads();
  if (balance) {  // rows with a routed id
    unsigned part = 0;
    for (int r = row0 + threadIdx.x; r < row1; r += blockDim.x) {
      part += flags ? row_any[r - row0] : RowHasRoutedId(physical, r, sh.k);
    }
    const unsigned active = __activemask();
    const unsigned sum = __reduce_add_sync(active, part);
    if ((threadIdx.x & 31) == __ffs(active) - 1 && sum != 0) atomicAdd(&block_valid, sum);
    if (kSharedBins) {
      if (sh.l >= 8) {  // a warp per rank: lanes split its L bins (a thread would chain L adds)
        const int lane = threadIdx.x & 31, warps = blockDim.x / 32;
        for (int r = threadIdx.x / 32; r < sh.w; r += warps) {
          unsigned load = 0;
          for (int q = lane; q < sh.l; q += 32) load += phys_bins[r * sh.l + q];
          load = __reduce_add_sync(0xffffffffu, load);
          if (lane == 0) rank_bins[r] = load;
        }
      } else {
        for (int r = threadIdx.x; r < sh.w; r += blockDim.x) {
          unsigned load = 0;
          for (int q = 0; q < sh.l; ++q) load += phys_bins[r * sh.l + q];
          rank_bins[r] = load;
        }
      }
    }
    __syncthreads();
  }
  const unsigned int parity = parity_raw & 1u;
  unsigned long long* rank_load = ws.rank_load + parity * sh.w;
  unsigned int* valid_of_block = ws.block_valid + parity * kMaxBlocks;
  if (balance) {
    if (blockIdx.x == 0) {  // clear the other set for the next call
      for (int i = threadIdx.x; i < sh.w; i += blockDim.x) {
        ws.rank_load[(1 - parity) * sh.w + i] = 0;
      }
      for (int i = threadIdx.x; i < kMaxBlocks; i += blockDim.x) {
        ws.block_valid[(1 - parity) * kMaxBlocks + i] = 0;
      }
    }
    for (int i = threadIdx.x; i < sh.w; i += blockDim.x) {
      if (rank_bins[i] != 0)
        atomicAdd(&rank_load[i], static_cast<unsigned long long>(rank_bins[i]));
    }
    if (threadIdx.x == 0) valid_of_block[blockIdx.x] = block_valid;
  }
  if (kSharedBins && counts != nullptr) {
    for (int i = threadIdx.x; i < sh.p; i += blockDim.x) {
      if (phys_bins[i] != 0) atomicAdd(&counts[i], static_cast<unsigned long long>(phys_bins[i]));
    }
  }
  if (sh.s == 0 && shared_rank == nullptr) return;  // nothing left to write

  EPLB_MARK(2);
  // Phase 2.
  long long offset = 0;  // valid tokens in lower blocks (exact)
  if (balance) {
    GridBarrier(ws.barrier);
    if (threadIdx.x < 32) {
      if (sh.w <= 32) {
        WarpPlanSmall<kMode>(sh, plan, rank_load, valid_of_block);
      } else {
        WarpPlan<kMode>(sh, plan, rank_load, valid_of_block);
      }
    }
    __syncthreads();
    if (kMode == 2) offset = plan.offset;
    if (blockIdx.x == 0 && threadIdx.x == 0) atomicAdd(ws.call_counter, 1u);
  }

  EPLB_MARK(3);
  // Phase 3: rows in tiles of blockDim, with a running valid-token index for the exact policy.
  for (int base = row0; base < row1; base += blockDim.x) {
    const int t = base + threadIdx.x;
    bool any = false;
    if (t < row1) any = flags ? row_any[t - row0] != 0 : RowHasRoutedId(physical, t, sh.k);
    long long j = 0;
    if (balance && kMode == 2) {
      long long aggregate = 0;
      BlockScan(plan.cub.scan).ExclusiveSum(static_cast<long long>(any), j, aggregate);
      __syncthreads();
      j += offset;
      offset += aggregate;
    }
    if (t >= row1) continue;
    int dest = -1;
    if (any) {
      if (!balance) {
        dest = sh.rank;
      } else if (kMode == 1) {
        const long long total = plan.prefix[sh.w];
        if (total <= 0) {
          dest = static_cast<int>(plan.value2);
        } else {
          // 32-bit seed: a 32-bit remainder when the total fits (the 64-bit one is a slow
          // out-of-line routine), and the seed itself when the total exceeds it.
          const uint32_t seed = WaterfillSeed(t, sh.rank);
          const long long u = total > 0xFFFFFFFFll
                                  ? static_cast<long long>(seed)
                                  : static_cast<long long>(seed % static_cast<uint32_t>(total));
          dest = UpperPosition(plan.prefix, sh.w, u);
        }
      } else {
        dest = ExactOrderRank(UpperPosition(plan.prefix, sh.w, j), sh.rank);
      }
    }
    if (shared_rank != nullptr) shared_rank[t] = dest;
    for (int s = 0; s < sh.s; ++s) {
      const int64_t o = static_cast<int64_t>(t) * width + sh.k + s;
      slots[o] =
          static_cast<Id>(dest >= 0 ? static_cast<long long>(dest) * (sh.l + sh.s) + sh.l + s : -1);
      weights[o] = dest >= 0 ? sh.shared_weight : 0.0f;
    }
  }
  EPLB_MARK(4);
}

template <typename Id, bool kStatic, bool kSharedBins, int kMode>
absl::Status LaunchOne(const Shape& sh, const RouteTopkParams& p, const RouteTopkBuffers<Id>& b,
                       Workspace ws, cudaStream_t stream) {
  auto kernel = RouteTopkKernel<Id, kStatic, kSharedBins, kMode>;
  const size_t smem = FlagsOffset(sh.w, sh.p, kSharedBins) + kMaxRowFlags +
                      sizeof(int) * (sh.p <= kMaxSlotTable ? sh.p : 0);
  static int max_blocks = [&] {
    int sms = 0, per_sm = 0;
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024);
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, 64 * 1024);
    return sms * (per_sm > 0 ? per_sm : 1);
  }();
  // About one row per thread, never more blocks than can be co-resident.
  int blocks = (sh.n + kThreads - 1) / kThreads;
  if (blocks > max_blocks) blocks = max_blocks;
  if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  if (blocks < 1) blocks = 1;
  auto* counts = reinterpret_cast<unsigned long long*>(b.counts);
  void* args[] = {const_cast<Shape*>(&sh),
                  const_cast<const Id**>(&b.logical),
                  const_cast<const float**>(&b.routed_weights),
                  const_cast<const int32_t**>(&p.static_table),
                  const_cast<const int32_t**>(&p.replicas),
                  const_cast<const int32_t**>(&p.replica_count),
                  const_cast<int*>(&p.max_replicas),
                  const_cast<bool*>(&p.rank_invariant),
                  const_cast<Id**>(&b.physical),
                  &counts,
                  const_cast<Id**>(&b.slots),
                  const_cast<float**>(&b.weights),
                  const_cast<int32_t**>(&b.shared_rank),
                  &ws};
  if (blocks == 1) {  // no grid barrier: a plain launch is cheaper
    EPLB_CUDA_RETURN_IF_ERROR(
        cudaLaunchKernel(reinterpret_cast<void*>(kernel), blocks, kThreads, args, smem, stream));
  } else {
    EPLB_CUDA_RETURN_IF_ERROR(cudaLaunchCooperativeKernel(reinterpret_cast<void*>(kernel), blocks,
                                                          kThreads, args, smem, stream));
  }
  return absl::OkStatus();
}

template <typename Id, int kMode>
absl::Status LaunchMode(const Shape& sh, const RouteTopkParams& p, const RouteTopkBuffers<Id>& b,
                        Workspace ws, cudaStream_t stream, bool is_static, bool shared_bins) {
  if (is_static && shared_bins) return LaunchOne<Id, true, true, kMode>(sh, p, b, ws, stream);
  if (is_static) return LaunchOne<Id, true, false, kMode>(sh, p, b, ws, stream);
  if (shared_bins) return LaunchOne<Id, false, true, kMode>(sh, p, b, ws, stream);
  return LaunchOne<Id, false, false, kMode>(sh, p, b, ws, stream);
}

template <typename Id>
absl::Status Launch(const RouteTopkParams& p, const RouteTopkBuffers<Id>& b, cudaStream_t stream) {
  if (absl::Status s = ValidateRouteTopk(p); !s.ok()) return s;
  if (p.num_tokens == 0) return absl::OkStatus();
  if (b.workspace == nullptr) return absl::InvalidArgumentError("route_topk needs a workspace");
  const int mode = (p.num_shared == 0 || p.waterfill == RouteWaterfill::kLocal) ? 0
                   : p.waterfill == RouteWaterfill::kSglang                     ? 1
                                                                                : 2;
  Shape sh{p.num_tokens,
           p.top_k,
           p.num_logical,
           p.num_physical,
           p.ep_size,
           p.num_shared,
           p.num_physical / p.ep_size,
           p.rank,
           p.min_batch,
           p.shared_weight,
           p.debug_phase_clocks};
  Workspace ws = Carve(b.workspace, p.ep_size);
  const bool is_static = p.dispatch == RouteDispatch::kStatic;
  const bool shared_bins = p.num_physical <= kMaxSharedBins;
  // The policy is a template parameter: each kernel holds only its own plan and expand code,
  // which keeps the once-per-call path short and straight (cold instruction fetches cost).
  switch (mode) {
    case 0:
      return LaunchMode<Id, 0>(sh, p, b, ws, stream, is_static, shared_bins);
    case 1:
      return LaunchMode<Id, 1>(sh, p, b, ws, stream, is_static, shared_bins);
    default:
      return LaunchMode<Id, 2>(sh, p, b, ws, stream, is_static, shared_bins);
  }
}

}  // namespace

size_t RouteTopkWorkspaceBytes(int num_tokens, int ep_size) {
  (void)num_tokens;
  return 16 + Align8(sizeof(unsigned long long) * 2 * ep_size) +
         sizeof(unsigned int) * 2 * kMaxBlocks;
}

absl::Status LaunchRouteTopk(const RouteTopkParams& p, const RouteTopkBuffers<int32_t>& b,
                             cudaStream_t stream) {
  return Launch(p, b, stream);
}

absl::Status LaunchRouteTopk(const RouteTopkParams& p, const RouteTopkBuffers<int64_t>& b,
                             cudaStream_t stream) {
  return Launch(p, b, stream);
}

}  // namespace eplb
