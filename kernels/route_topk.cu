// One kernel per layer and step: route and count, publish the counts, store, then (only when
// Waterfill balances over several blocks) a fence-free exchange of the rank counts, then plan
// and expand.
//
//   set-up  bins, row flags and the plan's sums are zeroed while the table and the first batch's
//           ids are in flight (the table's load is issued first); then the static table is
//           staged in shared memory as (physical id, slot) pairs packed in 32 bits, so a lookup
//           is one shared read rather than a global load that waits for the id.
//   route   (each block, a contiguous chunk of rows; block-relative 32-bit indices): over the
//           chunk's (row, k) elements in coalesced batches, dispatch every id, count per
//           physical id in shared memory (the rank counts are sums of those), flag rows with a
//           routed id. The last batch's physical ids, slots and weights stay in registers.
//   publish the rank loads; then the histogram's global atomics and the deferred stores, which
//           complete while the blocks exchange.
//   exchange (several blocks and a balancing policy only): each block adds, for every rank r,
//           (1 << 40) + its load of r to one 64-bit word of rank r (from 256 ranks, a 32-bit word
//           (1 << 21) + load when the call has under 2^21 elements), and polls the words until
//           each shows all blocks' arrivals. A word carries its own arrival count, so no fence
//           and no grid barrier is needed: a word that shows every arrival holds every block's
//           load. The exact policy also publishes each block's valid-row count.
//   plan    (every block, redundantly; 32-bit): SGLang's level and headroom prefix on one
//           warp for W <= 32 (lane = rank), on the whole block above (a rank or two a thread,
//           warp scans and one barrier); the exact policy's level and quota prefix on one warp (a
//           run of ranks a lane, in registers: no block barrier in the level search). SGLang's
//           one-warp plan runs on the warp that polled, from its registers.
//   expand  (each block, its rows): the shared columns. A block of one batch (large calls)
//           instead stages its slots and weights in shared memory and stores its rows whole, in
//           row order, after the expand (RowMajorStores).
//
// The grid: one element a thread (kThreads elements a block) as long as the blocks fit on the
// device; past that, one block a multiprocessor with whole batches of kBatch a thread.
//
// Why it looks like this (H100/H200 profiles and grid sweeps, docs/BENCHMARKS.md): a thread per
// row made every store strided; branches between loads serialised them; the earlier grid
// barrier (arrive, fence, spin, release) plus a global round trip for the rank counts was half
// of a 4096-token call; the executed code is kept short and straight (one kernel per policy and
// dispatch kind, two batch shapes, predicated per-element code, a 32-bit plan); a block is bound
// by its SM's store throughput, so more blocks with less each beat fewer with more. With warm
// caches (steady state) most warp stalls at decode sizes are barrier waits and fixed-latency
// dependencies: a few warps walk the exchange, plan and search while the rest wait. So what
// lies on one warp's chain counts: a division by a run-time divisor is about 20 dependent
// instructions, so the divisors known at launch (L, K, W) come with host-computed multipliers
// (DivBy), and the set-up's zeroing runs in the shadow of the loads rather than after them
// (together, SGLang 0.27-0.44 us a call, 5-8%, and exact 0.19-0.34 us; H200).
//
// Programmatic dependent launch (RouteTopkParams::overlap_previous; a kernel of its own): the
// set-up runs before griddepcontrol.wait, so it and the launch overlap the kernels still running
// before it; the ids, the weights (coherent loads: see Router::Load), the workspace and every
// output (all but the debug phase clocks) come after the wait. Such a call also lets the next
// kernel launched that way start at its own start.
//
// The exchange words live in a double-buffered workspace: a call with an exchange uses set
// c % 2 (c = the call counter, read at entry) while block 0 clears set (c + 1) % 2 and then bumps
// c, so no memset node is needed and the kernel leaves the workspace ready for the next call.
// It must be zeroed once when allocated. Calls without an exchange do not touch it. Calls that
// share a workspace must be stream-ordered (one stream, or events between streams) and have
// the same W: the words' layout depends on W, and a word left dirty by another layout never
// shows the right arrival count, so the exchange would spin for ever.
#include <cuda_runtime.h>

#include <algorithm>
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
constexpr int kBatch = 8;              // phase-1 elements per thread in flight
constexpr int kMaxSharedBins = 8192;   // physical ids counted in shared memory (else atomics)
constexpr int kMaxStagedTable = 4096;  // static table entries staged in shared memory
constexpr int kMaxSlotTable = 4096;    // physical ids with a shared slot table (otherwise)
constexpr int kMaxRowFlags = 4096;     // rows per block with a shared flag (else re-read)
// Exchange words of consecutive ranks are this many u64 apart (128 bytes), so that the blocks'
// atomics spread over the L2 slices instead of queueing at one (but see WordStride).
constexpr int kWordStride = 16;
constexpr int kArrivalShift = 40;  // exchange word: arrivals << 40 | load (load < 2^31)
constexpr unsigned long long kLoadMask = (1ull << kArrivalShift) - 1;
// Narrow (32-bit) exchange words, for calls of fewer than 2^21 elements on consecutive words
// (WordStride 1): arrivals << 21 | load (arrivals <= kMaxBlocks = 2^10 fit the top 11 bits).
// Twice the ranks a line for the publish's atomics and the polls: W = 512, T = 4096, SGLang
// 2% and exact 4% faster (H200). Below 256 ranks, where each word has a line of its own, they
// were no faster (up to 2% slower), so those keep 64-bit words.
constexpr int kArrivalShift32 = 21;
constexpr unsigned kLoadMask32 = (1u << kArrivalShift32) - 1;
constexpr unsigned long long kPublished = 1ull << 32;  // valid-row word: 1 << 32 | count

struct Workspace {
  unsigned int* call_counter;       // [1]
  unsigned long long* rank_word;    // [2][W * kWordStride]: rank r at [set][r * word stride]
  unsigned long long* block_valid;  // [2][kMaxBlocks]
};

constexpr size_t Align16(size_t x) { return (x + 15) / 16 * 16; }

// Exchange words between consecutive ranks. From kContiguousRanks ranks they are consecutive
// u64s: the poll (always a thread per rank) and, there, the publish (a thread per rank) cover
// 32 consecutive ranks with one warp instruction, two 128-byte lines instead of 32
// transactions. But then every block's atomics on a line queue at its L2 slice, 16 ranks' worth
// a block. Measured on an H200 (W = 144 and 512 at T = 512, 4096, 65536, that is 8, 64 and 132
// blocks; BENCHMARKS.md): against 128 bytes apart, consecutive words were 13%, 4% and 3%
// faster at W = 512, and at W = 144 5% faster with 8 blocks but 2-5% slower with 64 and 132;
// 2, 4 and 8 words apart were never the best. That fits "consecutive while W >= 3 x blocks".
// A workspace serves one W, so the rule may depend on W only (each call clears the idle set in
// its own layout): consecutive from 256 ranks. By the fit that is the better layout up to
// about W / 3 blocks, and expected (not measured) to lose a few percent past it: for W from 256
// to about 400 at T past about 64 W / 3 rows (K = 8).
constexpr int kContiguousRanks = 256;
constexpr int WordStride(int w) { return w >= kContiguousRanks ? 1 : kWordStride; }

size_t WorkspaceBytes(int w) {
  return 128 + sizeof(unsigned long long) * 2 * w * kWordStride +
         sizeof(unsigned long long) * 2 * kMaxBlocks;
}

Workspace Carve(void* base, int w) {
  char* p = static_cast<char*>(base);
  Workspace ws;
  ws.call_counter = reinterpret_cast<unsigned int*>(p);
  p += 128;
  ws.rank_word = reinterpret_cast<unsigned long long*>(p);
  p += sizeof(unsigned long long) * 2 * w * kWordStride;
  ws.block_valid = reinterpret_cast<unsigned long long*>(p);
  return ws;
}

// How a logical id becomes a physical id (and its slot), fixed per kernel so that the
// per-element code has no run-time branch between the ways.
enum DispatchKind {
  kStagedTable = 0,  // static table staged in shared memory, (physical, slot) packed in 32 bits
  kGlobalTable = 1,  // static table read from global memory (E > kMaxStagedTable, or slots
                     // past PackEntry's 16 bits)
  kReplicaPick = 2,  // dynamic: a hashed pick among the expert's replicas
};

// The exact policy's expand numbers its valid rows with this (warp scans then a scan of the warp
// totals: fewer dependent steps than the default raking).
using IntScan = cub::BlockScan<int, kThreads, cub::BLOCK_SCAN_WARP_SCANS>;
constexpr int kRanksPerThread = (kRouteMaxRanks + kThreads - 1) / kThreads;  // block plan

// The Waterfill plan's shared state. 32-bit throughout: ValidateRouteTopk bounds a call by
// num_tokens * (top_k + 1) + ep_size < 2^31, which bounds every load, level, quota and prefix
// here (fewer instructions on the once-per-call path, which is its latency).
struct PlanShared {
  int load[kRouteMaxRanks];
  int prefix[kRouteMaxRanks + 1];
  unsigned total;                 // sum of load
  unsigned valid;                 // valid rows of the call (exact policy, several blocks)
  unsigned offset;                // valid rows of the lower blocks (exact policy)
  unsigned block_valid;           // valid rows of this block
  int fallback;                   // SGLang's rank when every headroom is 0
  int warp_total[kThreads / 32];  // SGLang's block plan: each warp's headroom
  typename IntScan::TempStorage scan;
};

// The kernel's shape and shared-memory layout (byte offsets; -1: absent), from the launcher.
struct Shape {
  int n, k, e, p, w, s, l, rank, min_batch;
  float shared_weight;
  int rows_per_block;
  int off_table;  // int (physical, slot)[E] (staged table, PackEntry); else int slot_of[P], or -1
  int off_bins;   // unsigned [P] (shared bins) or [W] (rank bins)
  int off_plan;   // PlanShared
  int off_flags;  // unsigned char [rows_per_block], or -1
  // Row-major stores of a one-batch block (RowMajorStores), or -1: int slot[rows * k],
  // float weight[rows * k], int shared rank[rows].
  int off_stage;
  int word_stride;  // exchange words between ranks: WordStride(w)
  bool narrow;      // 32-bit exchange words (word_stride 1, n * k < 2^21): rank r at byte 4 r
  int step_rows, step_cols;  // kThreads / k and kThreads % k
  // DivMagic of l, k and w: x / d as one multiply-high (DivBy) on the set-up's and the plan's
  // latency chains, where a division is about 20 dependent instructions.
  unsigned long long l_magic, k_magic, w_magic;
  long long* profile;  // debug: clock64 at phase boundaries of block 0 (null: off)
};

template <typename Id>
struct Args {
  const Id* logical;
  const float* routed_w;
  const int32_t* table;
  const int32_t* replicas;
  const int32_t* replica_count;
  int max_replicas;
  bool rank_invariant;
  Id* physical;
  unsigned long long* counts;
  Id* slots;
  float* weights;
  int32_t* shared_rank;
  Workspace ws;
};

#define EPLB_MARK(i) \
  if (sh.profile != nullptr && blockIdx.x == 0 && threadIdx.x == 0) sh.profile[i] = clock64()

__device__ __forceinline__ unsigned long long LoadRelaxed(const unsigned long long* p) {
  unsigned long long v;
  asm volatile("ld.relaxed.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}

__device__ __forceinline__ unsigned LoadRelaxed(const unsigned* p) {
  unsigned v;
  asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

__device__ __forceinline__ void StoreRelaxed(unsigned long long* p, unsigned long long v) {
  asm volatile("st.relaxed.gpu.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}

// x / d for 0 <= x < 2^31, with magic = DivMagic(d) computed on the host: floor(x * M / 2^64)
// with M = ceil(2^64 / d) is exact for x, d < 2^32 (M exceeds 2^64 / d by under 1, so the
// error is under x / 2^64 < 2^-32 and never reaches the next integer, which is at least 1 / d
// away); d = 1 is magic 0 (M would not fit). (SlotOf may see x = -1, padding, and its result
// is then discarded.)
__device__ __forceinline__ int DivBy(int x, unsigned long long magic) {
  return magic == 0 ? x : static_cast<int>(__umul64hi(static_cast<unsigned>(x), magic));
}
unsigned long long DivMagic(int d) { return d == 1 ? 0 : ~0ull / static_cast<unsigned>(d) + 1; }

__device__ __forceinline__ int WarpSum(int x) {
  return static_cast<int>(__reduce_add_sync(0xffffffffu, static_cast<unsigned>(x)));
}
// Exclusive warp scans of N values at once (their shuffles interleave), in place.
template <int N>
__device__ __forceinline__ void WarpExclusiveScans(int (&x)[N]) {
  const int lane = threadIdx.x & 31;
  int inc[N];
#pragma unroll
  for (int i = 0; i < N; ++i) inc[i] = x[i];
  for (int o = 1; o < 32; o <<= 1) {
    int up[N];
#pragma unroll
    for (int i = 0; i < N; ++i) up[i] = __shfl_up_sync(0xffffffffu, inc[i], o);
#pragma unroll
    for (int i = 0; i < N; ++i) inc[i] += lane >= o ? up[i] : 0;
  }
#pragma unroll
  for (int i = 0; i < N; ++i) x[i] = inc[i] - x[i];
}

// SGLang's headroom of rank r: max(0, level - load), times 10 / 11 (floored) off the source
// rank. floor(10 x / 11) = x - ceil(x / 11) = x - floor((x + 10) / 11), and floor(n / 11) is
// umulhi(n, ceil(2^35 / 11)) >> 3 for every 32-bit n (the multiplier exceeds 2^35 / 11 by
// 1 / 11, under 2^3 / 11): branch-free and 32-bit for every x < 2^31.
__device__ __forceinline__ int SglangHeadroom(const Shape& sh, int level, int load, int r) {
  int x = level - load;
  if (x < 0) x = 0;
  if (r != sh.rank)
    x -= static_cast<int>(__umulhi(static_cast<unsigned>(x) + 10u, 0xBA2E8BA3u) >> 3);
  return x;
}

// SGLang's level ceil((S + S / K) / W).
__device__ __forceinline__ int SglangLevel(const Shape& sh, int total_routed) {
  return DivBy(total_routed + DivBy(total_routed, sh.k_magic) + sh.w - 1, sh.w_magic);
}

// SGLang's fallback when every headroom is 0 (rare): the sequential hysteresis argmin, as the
// reference. Lane 0 writes it to sm.fallback.
__device__ void SglangFallback(const Shape& sh, PlanShared& sm, int total_headroom) {
  if ((threadIdx.x & 31) != 0) return;
  int best = sh.rank;
  if (total_headroom == 0) {
    for (int r = 0; r < sh.w; ++r) {
      if (static_cast<long long>(sm.load[r]) * 11 < static_cast<long long>(sm.load[best]) * 10) {
        best = r;
      }
    }
  }
  sm.fallback = best;
}

// W > 32, SGLang: thread i owns ranks [i*R, i*R + R), R = kRanksPerThread; the headroom prefix
// is a warp scan, one barrier, and two single-instruction reductions of the warps' totals (the
// block total and the warps before this one). Writes sm.prefix[0..w] and sm.fallback. Same
// integers as the CPU twin.
__device__ void BlockPlanSglang(const Shape& sh, PlanShared& sm) {
  const int level = SglangLevel(sh, static_cast<int>(sm.total));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int h[kRanksPerThread], sum = 0;
#pragma unroll
  for (int j = 0; j < kRanksPerThread; ++j) {
    const int r = kRanksPerThread * threadIdx.x + j;
    h[j] = r < sh.w ? SglangHeadroom(sh, level, sm.load[r], r) : 0;
    sum += h[j];
  }
  int before[1] = {sum};
  WarpExclusiveScans(before);
  if (lane == 31) sm.warp_total[warp] = before[0] + sum;
  __syncthreads();
  const int t = lane < kThreads / 32 ? sm.warp_total[lane] : 0;
  const int total = WarpSum(t);
  int acc = before[0] + WarpSum(lane < warp ? t : 0);
#pragma unroll
  for (int j = 0; j < kRanksPerThread; ++j) {
    const int r = kRanksPerThread * threadIdx.x + j;
    acc += h[j];
    if (r < sh.w) sm.prefix[r + 1] = acc;
  }
  if (threadIdx.x == 0) {
    sm.prefix[0] = 0;
    SglangFallback(sh, sm, total);
  }
}

// SGLang, W <= 32: lane = rank, `load` the lane's (0 past W), `total` their sum. The same
// integers as the CPU twin.
__device__ void WarpPlanSglang(const Shape& sh, PlanShared& sm, int load, int total) {
  const int lane = threadIdx.x;
  if (lane == 0) sm.prefix[0] = 0;
  const int level = SglangLevel(sh, total);
  const int x = lane < sh.w ? SglangHeadroom(sh, level, load, lane) : 0;
  int scan[1] = {x};
  WarpExclusiveScans(scan);
  const int inc = scan[0] + x;
  sm.prefix[lane + 1] = inc;
  SglangFallback(sh, sm, __shfl_sync(0xffffffffu, inc, 31));
}

// Exact, any W, on one warp: lane i owns the run of R = ceil(W / 32) order positions
// [i * R, i * R + R), their loads held in registers (kPer >= R of them, unrolled); the warp
// combines the runs with single-instruction reductions and one pair of shuffle scans, with no
// block barrier. (A block-wide version, a barrier a step of the level search, was 0.8-1.0 us
// slower at W = 144 on an H200; an O(W)-a-lane search for W <= 32, up to 0.4 us slower.)
// The same integers as the CPU twin.
//
// The level t is the least with f(t) = sum_r max(0, t - load_r) >= valid. From
// t = ceil((valid + sum of all loads) / W), t is re-evaluated over the active set
// A = {r : load_r < t} as ceil((valid + sum over A of load) / |A|) until it stops moving: every
// step keeps t feasible and never raises it, and at the fixed point t - 1 is infeasible, so t
// is the least (a handful of steps). Then by order position q = max(0, t - 1 - load), plus one
// for the first `rem` positions that reach t - 1: the prefix at a position is the prefix of q
// plus min(rem, eligible positions so far), both from one pair of scans.
template <int kPer>
__device__ void WarpPlanExactRuns(const Shape& sh, PlanShared& sm, int valid) {
  if (valid <= 0) return;
  const int per = (sh.w + 31) / 32;
  const int lo = (threadIdx.x & 31) * per;
  int load[kPer];  // of the lane's order positions; INT_MAX past the end (never below t)
#pragma unroll
  for (int j = 0; j < kPer; ++j) {
    const int pos = lo + j;
    load[j] = j < per && pos < sh.w ? sm.load[ExactOrderRank(pos, sh.rank)] : INT_MAX;
  }
  int t = DivBy(valid + static_cast<int>(sm.total) + sh.w - 1, sh.w_magic);
  for (;;) {
    int part = 0, c = 0;
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      part += load[j] < t ? load[j] : 0;
      c += load[j] < t;
    }
    part = WarpSum(part);
    c = WarpSum(c);  // >= 1: f(t) >= valid > 0
    const int next = (valid + part + c - 1) / c;
    if (next >= t) break;
    t = next;
  }
  // Quotas (kept: recomputing them after the scans cost 22 instructions a run length).
  int q[kPer], sum_q = 0, eligible = 0;
#pragma unroll
  for (int j = 0; j < kPer; ++j) {  // a load of INT_MAX gets 0 and is not eligible
    q[j] = load[j] < t - 1 ? t - 1 - load[j] : 0;
    sum_q += q[j];
    eligible += load[j] <= t - 1;
  }
  const int rem = valid - WarpSum(sum_q);
  int acc[2] = {sum_q, eligible};  // quotas and eligible positions before the lane's run
  WarpExclusiveScans(acc);
#pragma unroll
  for (int j = 0; j < kPer; ++j) {
    acc[0] += q[j];
    acc[1] += load[j] <= t - 1;
    if (j < per && lo + j < sh.w) sm.prefix[lo + j + 1] = acc[0] + min(acc[1], rem);
  }
  if ((threadIdx.x & 31) == 0) sm.prefix[0] = 0;
}

// The run length rounded up to a power of two picks the unrolled kernel.
__device__ void WarpPlanExact(const Shape& sh, PlanShared& sm, int valid) {
  const int per = (sh.w + 31) / 32;
  if (per <= 1) {
    WarpPlanExactRuns<1>(sh, sm, valid);
  } else if (per <= 2) {
    WarpPlanExactRuns<2>(sh, sm, valid);
  } else if (per <= 4) {
    WarpPlanExactRuns<4>(sh, sm, valid);
  } else if (per <= 8) {
    WarpPlanExactRuns<8>(sh, sm, valid);
  } else if (per <= 16) {
    WarpPlanExactRuns<16>(sh, sm, valid);
  } else {
    WarpPlanExactRuns<(kRouteMaxRanks + 31) / 32>(sh, sm, valid);
  }
}

// Position of u in sm.prefix: the last i in [0, w) with prefix[i] <= u.
__device__ int UpperPosition(const int* prefix, int w, int u) {
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

template <typename Id>
__device__ bool RowHasRoutedId(const Id* physical, int t, int k) {
  bool any = false;
  for (int j = 0; j < k; ++j) any |= physical[static_cast<int64_t>(t) * k + j] >= 0;
  return any;
}

// A staged table entry: the physical id in the low 16 bits, the slot in the high 16, both
// signed (-1: none), so that a lookup is one 32-bit shared read. An int2 lookup of random ids
// took 5.8 shared-memory wavefronts a warp (two half-warps, each with its bank conflicts;
// Nsight Compute, T = 65536 on an H200), and the route phase of large calls is bound by
// shared-memory wavefronts: 32 bits were 0.4-1.4% faster at T = 65536 (no change below).
// The launcher stages only when both fit (kMaxPacked); otherwise it reads the table from
// global memory.
constexpr int kMaxPacked = 32767;
__device__ __forceinline__ int PackEntry(int pk, int slot) {
  return static_cast<int>((static_cast<unsigned>(slot) << 16) |
                          (static_cast<unsigned>(pk) & 0xffffu));
}

// (Unsigned arithmetic: for pk = -1, whose result callers discard, it wraps rather than
// overflows.)
__device__ __forceinline__ int SlotOf(const Shape& sh, int pk) {
  return static_cast<int>(static_cast<unsigned>(pk) + static_cast<unsigned>(DivBy(pk, sh.l_magic)) *
                                                          static_cast<unsigned>(sh.s));
}

// Phase 1 of one block: its elements [0, n) (of rows [0, rows), relative to the block's first
// row), with every index 32-bit and block-relative (the pointers start at the block's data).
template <typename Id, int kDispatch, bool kSharedBins>
struct Router {
  using UId = typename std::make_unsigned<Id>::type;
  const Shape& sh;
  const Args<Id>& a;
  const Id* logical;      // the block's ids
  const float* routed_w;  // the block's weights, or null
  Id* physical;           // the block's physical ids
  Id* slots;              // the block's rows of slots
  float* weights;         // the block's rows of weights
  int n;                  // elements of the block
  int* entry;             // staged table (kStagedTable, PackEntry), filled by SetUp
  int* slot_of;           // slot table, or null (otherwise), filled by SetUp
  unsigned* bins;         // [P] (kSharedBins) or [W]
  unsigned char* flags;   // row flags, or null
  bool count;             // count into bins
  bool balance;
  int row0;  // the block's first row (dynamic dispatch hashes absolute rows)
  // Row and column of this thread's next element, advanced without divisions.
  int t_next, k_next;
  int step_rows, step_cols;

  // Branch-free loads of B elements a blockDim apart (indices past the end are clamped and
  // their values dropped), so the compiler issues all of them before the first use.
  // kCoherent: the overlapping kernel's loads, which must stay after griddepcontrol.wait.
  // ld.global.nc (__ldg) may assume its data is constant for the whole kernel, and ptxas did
  // move such loads above the wait (the ids came back as the poison written before the kernel
  // before; H200, 2026-11-29, though the PTX had them after it). ld.global.cg loads have not
  // moved (an observation about ptxas, not a guarantee: the overlap test, repeated, is what
  // checks it; docs/GPU.md).
  template <int B, bool kCoherent = false>
  __device__ __forceinline__ void Load(int base, Id (&raw)[B], float (&wv)[B]) const {
#pragma unroll
    for (int u = 0; u < B; ++u) {
      const int i = base + u * kThreads + static_cast<int>(threadIdx.x);
      raw[u] =
          kCoherent ? __ldcg(logical + (i < n ? i : n - 1)) : __ldg(logical + (i < n ? i : n - 1));
    }
#pragma unroll
    for (int u = 0; u < B; ++u) {
      const int i = base + u * kThreads + static_cast<int>(threadIdx.x);
      const int j = i < n ? i : n - 1;
      wv[u] = routed_w == nullptr ? 1.0f : kCoherent ? __ldcg(routed_w + j) : __ldg(routed_w + j);
    }
  }

  // Dispatch and counts of B loaded elements into `out` (registers); the stores come later
  // (Store), so that a block can publish its counts first and let its output stores drain
  // while it waits for the others. kTail: some elements may be past the end. Selects and
  // predicates rather than branches per element: straight code issues fewer instructions.
  template <int B>
  struct Routed {
    int pk[B], sl[B], t[B];
    float w[B];
  };
  template <int B, bool kTail>
  __device__ __forceinline__ void Lookup(int base, const Id (&raw)[B], const float (&wv)[B],
                                         Routed<B>& out) {
#pragma unroll
    for (int u = 0; u < B; ++u) {
      const int i = base + u * kThreads + static_cast<int>(threadIdx.x);
      const int t = t_next, k = k_next;
      t_next += step_rows;
      k_next += step_cols;
      if (k_next >= sh.k) {
        k_next -= sh.k;
        ++t_next;
      }
      const bool ok = static_cast<UId>(raw[u]) < static_cast<UId>(sh.e);
      const int e = ok ? static_cast<int>(raw[u]) : 0;
      int pk, sl;
      if (kDispatch == kStagedTable) {
        const int v = entry[e];
        pk = ok ? static_cast<short>(v) : -1;
        sl = ok ? v >> 16 : -1;
      } else {
        int v;
        if (kDispatch == kGlobalTable) {
          v = __ldg(a.table + e);
        } else {
          const int c = ok ? __ldg(a.replica_count + e) : 1;
          const int r = DynamicReplicaIndex(row0 + t, k, sh.rank, a.rank_invariant, c);
          v = __ldg(a.replicas + static_cast<int64_t>(e) * a.max_replicas + r);
        }
        pk = ok ? v : -1;
        const int slot = slot_of != nullptr ? slot_of[pk >= 0 ? pk : 0] : SlotOf(sh, pk);
        sl = pk >= 0 ? slot : -1;
      }
      out.pk[u] = pk;
      out.sl[u] = sl;
      out.t[u] = t;
      out.w[u] = pk >= 0 ? wv[u] : 0.0f;
      const bool live = pk >= 0 && (!kTail || i < n);
      if (live && flags != nullptr) flags[t] = 1;
      if (kSharedBins) {
        if (live && count) atomicAdd(&bins[pk], 1u);
      } else {
        if (live && balance) atomicAdd(&bins[DivBy(pk, sh.l_magic)], 1u);
        if (live && a.counts != nullptr) atomicAdd(&a.counts[pk], 1ull);
      }
    }
  }

  // The physical ids, and the slots and weights staged in shared memory for RowMajorStores.
  template <int B>
  __device__ __forceinline__ void StoreAndStage(int base, const Routed<B>& r, int* stage_slot,
                                                float* stage_weight) const {
#pragma unroll
    for (int u = 0; u < B; ++u) {
      const int i = base + u * kThreads + static_cast<int>(threadIdx.x);
      if (i >= n) continue;
      physical[i] = static_cast<Id>(r.pk[u]);
      stage_slot[i] = r.sl[u];
      stage_weight[i] = r.w[u];
    }
  }

  // The slot of element i of row t is i + t * S.
  template <int B, bool kTail>
  __device__ __forceinline__ void Store(int base, const Routed<B>& r) const {
#pragma unroll
    for (int u = 0; u < B; ++u) {
      const int i = base + u * kThreads + static_cast<int>(threadIdx.x);
      if (kTail && i >= n) continue;
      const int o = i + r.t[u] * sh.s;
      physical[i] = static_cast<Id>(r.pk[u]);
      slots[o] = static_cast<Id>(r.sl[u]);
      weights[o] = r.w[u];
    }
  }
};

// `first` is this thread's first table entry, loaded before the ids (the table is the set-up's
// only global read, so it goes first). The shared memory that needs no load is zeroed first,
// while the table and the ids are in flight: only the staging waits for them.
template <typename Id, int kDispatch, bool kSharedBins>
__device__ __forceinline__ void SetUp(const Shape& sh, const Args<Id>& a,
                                      Router<Id, kDispatch, kSharedBins>& rt, PlanShared& plan,
                                      int rows, int first) {
  if (rt.count) {
    const int nb = kSharedBins ? sh.p : sh.w;
    for (int i = threadIdx.x; i < nb; i += kThreads) rt.bins[i] = 0;
  }
  if (rt.flags != nullptr) {
    for (int i = threadIdx.x; i < rows; i += kThreads) rt.flags[i] = 0;
  }
  if (threadIdx.x == 0) {
    plan.total = 0;
    plan.block_valid = 0;
    plan.valid = 0;
    plan.offset = 0;
  }
  if (kDispatch == kStagedTable) {
    for (int i = threadIdx.x; i < sh.e; i += kThreads) {
      const int pk = i == static_cast<int>(threadIdx.x) ? first : __ldg(a.table + i);
      rt.entry[i] = PackEntry(pk, pk >= 0 ? SlotOf(sh, pk) : -1);
    }
  } else if (rt.slot_of != nullptr) {
    for (int i = threadIdx.x; i < sh.p; i += kThreads) rt.slot_of[i] = SlotOf(sh, i);
  }
}

// Plan (when balancing) and the shared columns of rows [row0, row1); with `stage_rank` (a
// row-major block) each row's shared rank goes there instead, for RowMajorStores.
// `planned`: the exchange's polling warp has already written the plan (SGLang, W <= 32).
template <typename Id, int kMode>
__device__ __forceinline__ void Expand(const Shape& sh, const Args<Id>& a, PlanShared& plan,
                                       const unsigned char* flags, bool balance, bool exchange,
                                       bool planned, int row0, int row1, int* stage_rank) {
  if (balance && !planned) {
    if (exchange) __syncthreads();
    EPLB_MARK(3);
    const int valid = kMode == 2 ? static_cast<int>(exchange ? plan.valid : plan.block_valid) : 0;
    if (kMode == 2) {
      if (threadIdx.x < 32) WarpPlanExact(sh, plan, valid);
    } else if (sh.w <= 32) {
      if (threadIdx.x < 32) {
        WarpPlanSglang(sh, plan, threadIdx.x < sh.w ? plan.load[threadIdx.x] : 0,
                       static_cast<int>(plan.total));
      }
    } else {
      BlockPlanSglang(sh, plan);
    }
  }
  if (balance) __syncthreads();
  EPLB_MARK(4);

  // Expand: rows in tiles of blockDim, with a running valid-row index for the exact policy.
  int offset = static_cast<int>(plan.offset);
  const int width = sh.k + sh.s;
  for (int base_row = row0; base_row < row1; base_row += kThreads) {
    const int t = base_row + threadIdx.x;
    bool any = false;
    if (t < row1) {
      any = flags != nullptr ? flags[t - row0] != 0 : RowHasRoutedId(a.physical, t, sh.k);
    }
    int j = 0;
    if (balance && kMode == 2) {
      int aggregate = 0;
      IntScan(plan.scan).ExclusiveSum(static_cast<int>(any), j, aggregate);
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
        const int total = plan.prefix[sh.w];
        if (total <= 0) {
          dest = plan.fallback;
        } else {
          // The total is below 2^31 (the call's bound), so a 32-bit remainder is exact.
          const uint32_t seed = WaterfillSeed(t, sh.rank);
          dest = UpperPosition(plan.prefix, sh.w,
                               static_cast<int>(seed % static_cast<uint32_t>(total)));
        }
      } else {
        dest = ExactOrderRank(UpperPosition(plan.prefix, sh.w, j), sh.rank);
      }
    }
    if (a.shared_rank != nullptr) a.shared_rank[t] = dest;
    if (stage_rank != nullptr) {  // RowMajorStores writes the shared columns
      stage_rank[t - row0] = dest;
      continue;
    }
    for (int s = 0; s < sh.s; ++s) {
      const int64_t o = static_cast<int64_t>(t) * width + sh.k + s;
      a.slots[o] =
          static_cast<Id>(dest >= 0 ? static_cast<long long>(dest) * (sh.l + sh.s) + sh.l + s : -1);
      a.weights[o] = dest >= 0 ? sh.shared_weight : 0.0f;
    }
  }
}

// The slots and weights of a block's rows [0, rows) in row order, each row's K routed entries
// (staged) and S shared ones (from the staged shared rank): one coalesced pass. Stored apart,
// the shared columns cost a 32-byte sector an entry: at T = 65536, 27% of the call's L2
// sectors, and leaving them out took 1 us off a 7.8 us call (H200, a diagnostic build). This
// way: T = 65536, SGLang 1.5-6% faster, exact up to 7% (H200).
template <typename Id>
__device__ __forceinline__ void RowMajorStores(const Shape& sh, Id* slots, float* weights, int rows,
                                               const int* stage_slot, const float* stage_weight,
                                               const int* stage_rank) {
  const int width = sh.k + sh.s;
  const int total = rows * width;
  const int step_t = kThreads / width, step_c = kThreads % width;
  int t = static_cast<int>(threadIdx.x) / width;
  int c = static_cast<int>(threadIdx.x) - t * width;
#pragma unroll 4
  for (int o = threadIdx.x; o < total; o += kThreads) {
    int slot;
    float weight;
    if (c < sh.k) {
      slot = stage_slot[o - t * sh.s];
      weight = stage_weight[o - t * sh.s];
    } else {
      const int dest = stage_rank[t];
      slot = dest >= 0 ? dest * (sh.l + sh.s) + sh.l + (c - sh.k) : -1;
      weight = dest >= 0 ? sh.shared_weight : 0.0f;
    }
    slots[o] = static_cast<Id>(slot);
    weights[o] = weight;
    t += step_t;
    c += step_c;
    if (c >= width) {
      c -= width;
      ++t;
    }
  }
}

// kRowMajor: blocks of one batch store through RowMajorStores (a kernel of its own, so that
// the one-element calls keep their code as it was: the row-major code's mere presence in their
// kernel cost them 3-5%; H200).
// kOverlap: RouteTopkParams::overlap_previous (a kernel of its own, so that the usual launch
// keeps its straight prologue).
template <typename Id, int kDispatch, bool kSharedBins, int kMode, bool kOverlap, bool kRowMajor>
__global__ void __launch_bounds__(kThreads, 1) RouteTopkKernel(const Shape sh, const Args<Id> a) {
  extern __shared__ __align__(16) unsigned char smem[];
  PlanShared& plan = *reinterpret_cast<PlanShared*>(smem + sh.off_plan);
  const bool balance = kMode != 0 && sh.n >= sh.min_batch;
  const bool exchange = balance && gridDim.x > 1;
  // An overlapping call lets the next kernel launched with programmatic dependent launch start
  // now. That kernel waits for this one before it reads anything, and the trigger completes
  // only once every block of this grid has run it (or exited), so it takes only what this
  // grid leaves free. (The usual launch keeps the implicit trigger at its end.)
  if (kOverlap) cudaTriggerProgrammaticLaunchCompletion();
  EPLB_MARK(0);
  // The call parity is read early and used after phase 1 (its latency hides behind the loads);
  // an overlapping call reads it, like all its inputs, after the previous kernel.
  unsigned int counter = 0;
  auto read_counter = [&] {
    if (exchange) counter = *reinterpret_cast<volatile unsigned*>(a.ws.call_counter);
  };
  if (!kOverlap) read_counter();
  const int row0 = blockIdx.x * sh.rows_per_block;
  const int row1 = min(sh.n, row0 + sh.rows_per_block);
  const int rows = row1 - row0;
  const int64_t e0 = static_cast<int64_t>(row0) * sh.k;
  const int64_t o0 = static_cast<int64_t>(row0) * (sh.k + sh.s);
  Router<Id, kDispatch, kSharedBins> rt{
      sh,
      a,
      a.logical + e0,
      a.routed_w != nullptr ? a.routed_w + e0 : nullptr,
      a.physical + e0,
      a.slots + o0,
      a.weights + o0,
      rows * sh.k,
      reinterpret_cast<int*>(smem + sh.off_table),
      kDispatch != kStagedTable && sh.off_table >= 0 ? reinterpret_cast<int*>(smem + sh.off_table)
                                                     : nullptr,
      reinterpret_cast<unsigned*>(smem + sh.off_bins),
      sh.off_flags >= 0 ? smem + sh.off_flags : nullptr,
      balance || a.counts != nullptr,
      balance,
      row0,
      DivBy(threadIdx.x, sh.k_magic),
      static_cast<int>(threadIdx.x) - DivBy(threadIdx.x, sh.k_magic) * sh.k,
      sh.step_rows,
      sh.step_cols};
  // Phase 1. The launcher sizes the grid so that a thread has at most one element whenever the
  // blocks fit on the device; past that, whole batches of kBatch per thread where it can. The
  // first batch's loads are issued before the set-up, which they overlap; an overlapping call
  // issues them after the set-up and the wait, its set-up overlapping the previous kernel.
  const int first_entry = kDispatch == kStagedTable && static_cast<int>(threadIdx.x) < sh.e
                              ? __ldg(a.table + threadIdx.x)
                              : 0;
  // The last batch's results stay in registers until the counts are published (below).
  constexpr int kFull = kThreads * kBatch;
  typename Router<Id, kDispatch, kSharedBins>::template Routed<1> one;
  typename Router<Id, kDispatch, kSharedBins>::template Routed<kBatch> last;
  int last_base = 0;
  const bool single = rt.n <= kThreads;
  if (single) {
    Id raw[1];
    float wv[1];
    if (!kOverlap) rt.template Load<1>(0, raw, wv);
    SetUp(sh, a, rt, plan, rows, first_entry);
    if (kOverlap) {
      cudaGridDependencySynchronize();  // griddepcontrol.wait
      read_counter();
      rt.template Load<1, true>(0, raw, wv);
    }
    __syncthreads();
    EPLB_MARK(1);
    rt.template Lookup<1, true>(0, raw, wv, one);
  } else {
    Id raw[kBatch];
    float wv[kBatch];
    if (!kOverlap) rt.template Load<kBatch>(0, raw, wv);
    SetUp(sh, a, rt, plan, rows, first_entry);
    if (kOverlap) {
      cudaGridDependencySynchronize();  // griddepcontrol.wait
      read_counter();
      rt.template Load<kBatch, true>(0, raw, wv);
    }
    __syncthreads();
    EPLB_MARK(1);
    for (; last_base + kFull < rt.n; last_base += kFull) {
      rt.template Lookup<kBatch, false>(last_base, raw, wv, last);
      rt.template Store<kBatch, false>(last_base, last);
      rt.template Load<kBatch, kOverlap>(last_base + kFull, raw, wv);
    }
    rt.template Lookup<kBatch, true>(last_base, raw, wv, last);
  }
  // A block of one batch stages its slots and weights for RowMajorStores.
  const bool row_major = kRowMajor && sh.off_stage >= 0 && !single && rt.n <= kFull;
  int* stage_slot = row_major ? reinterpret_cast<int*>(smem + sh.off_stage) : nullptr;
  float* stage_weight =
      row_major ? reinterpret_cast<float*>(stage_slot + sh.rows_per_block * sh.k) : nullptr;
  int* stage_rank =
      row_major ? reinterpret_cast<int*>(stage_weight + sh.rows_per_block * sh.k) : nullptr;
  auto store_last = [&] {
    if (row_major) {
      rt.template StoreAndStage<kBatch>(0, last, stage_slot, stage_weight);
    } else if (single) {
      rt.template Store<1, true>(0, one);
    } else {
      rt.template Store<kBatch, true>(last_base, last);
    }
  };
  // Without row flags, rows are told valid by re-reading the physical ids: store them now.
  const bool defer = rt.flags != nullptr;
  if (!defer) store_last();
  __syncthreads();
  EPLB_MARK(2);

  // Flush: valid rows, rank loads (to the exchange words, or straight to the plan).
  const unsigned int parity = counter & 1u;
  unsigned long long* words = a.ws.rank_word + static_cast<int64_t>(parity) * sh.w * kWordStride;
  const int stride = sh.word_stride;
  unsigned long long* valid_words = a.ws.block_valid + parity * kMaxBlocks;
  if (balance) {
    if (kMode == 2) {  // valid rows (SGLang's plan does not count them)
      unsigned part = 0;
      for (int r = row0 + threadIdx.x; r < row1; r += kThreads) {
        part += rt.flags != nullptr ? rt.flags[r - row0] : RowHasRoutedId(a.physical, r, sh.k);
      }
      part = __reduce_add_sync(0xffffffffu, part);
      if ((threadIdx.x & 31) == 0 && part != 0) atomicAdd(&plan.block_valid, part);
    }
    // Rank loads: sums of the per-physical-id bins (a warp per rank when L >= 8, since a
    // thread would chain L adds, except into consecutive exchange words: WordStride), or the
    // rank bins themselves.
    unsigned mine = 0;  // loads this thread published (one block: the plan's total)
    auto publish = [&](int r, unsigned load) {
      if (exchange) {
        if (sh.narrow) {
          atomicAdd(reinterpret_cast<unsigned*>(words) + r, (1u << kArrivalShift32) + load);
        } else {
          atomicAdd(&words[r * stride], (1ull << kArrivalShift) + load);
        }
      } else {
        plan.load[r] = static_cast<int>(load);
        mine += load;
      }
    };
    if (kSharedBins && sh.l >= 8 && !(exchange && stride == 1)) {
      const int lane = threadIdx.x & 31;
      for (int r = threadIdx.x / 32; r < sh.w; r += kThreads / 32) {
        unsigned load = 0;
        for (int q = lane; q < sh.l; q += 32) load += rt.bins[r * sh.l + q];
        load = __reduce_add_sync(0xffffffffu, load);
        if (lane == 0) publish(r, load);
      }
    } else {
      for (int r = threadIdx.x; r < sh.w; r += kThreads) {
        unsigned load = 0;
        if (kSharedBins) {
          for (int q = 0; q < sh.l; ++q) load += rt.bins[r * sh.l + q];
        } else {
          load = rt.bins[r];
        }
        publish(r, load);
      }
    }
    if (!exchange) {
      mine = __reduce_add_sync(0xffffffffu, mine);
      if ((threadIdx.x & 31) == 0 && mine != 0) atomicAdd(&plan.total, mine);
    }
    // plan.block_valid, and (one block) plan.load and plan.total complete. SGLang's exchange
    // needs neither: its polls fill plan.load, and plan.total too unless the polling warp
    // plans (warp_plan), which sums the loads in registers.
    if (kMode == 2 || !exchange) __syncthreads();
  }
  // The histogram's global atomics, right behind the exchange's: they complete while the
  // blocks exchange instead of at the kernel's end, which waited for them (at T = 65536, 132
  // blocks x 288 atomics, 132 on each address). H200: 1-9% faster at every size (T = 65536,
  // W = 8: 7%; T = 4096, W = 512: 7%).
  if (kSharedBins && a.counts != nullptr) {
    for (int i = threadIdx.x; i < sh.p; i += kThreads) {
      if (rt.bins[i] != 0) atomicAdd(&a.counts[i], static_cast<unsigned long long>(rt.bins[i]));
    }
  }
  // The counts are out: the stores drain while the blocks exchange. Except with batches of
  // several elements a thread (large calls) and a plan on one warp (SGLang's up to 32 ranks,
  // the exact policy's below 256): there the exchange's polls would wait behind the block's
  // stores, and the warp's plan, with few shared-memory accesses, runs at speed while they
  // drain after the exchange. H200, T = 65536: 4% (SGLang) and 4-12% (exact) faster at W = 8
  // to 144; the exact plan at W = 512 and the block-wide plan (its scans behind the stores)
  // were 1% and 2-6% slower that way. A row-major block (which stores only its physical ids
  // here, and stages the rest) does so early under SGLang (W = 8: 1.7% faster than late) and
  // late under the exact policy below 256 ranks (W = 8 and 32: 4% and 2% faster than early).
  const bool late =
      defer && !single && exchange && (kMode == 2 ? sh.w < 256 : sh.w <= 32 && !row_major);
  if (defer && !late) store_last();
  // SGLang's plan on one warp (W <= 32) runs on the warp that polls the exchange words.
  const bool warp_plan = exchange && kMode == 1 && sh.w <= 32;
  if (exchange) {
    if (kMode == 2 && threadIdx.x == 0) {
      StoreRelaxed(&valid_words[blockIdx.x], kPublished | plan.block_valid);
    }
    if (blockIdx.x == 0) {  // clear the other set for the next call, whatever its policy
      unsigned long long* other =
          a.ws.rank_word + static_cast<int64_t>(1 - parity) * sh.w * kWordStride;
      for (int i = threadIdx.x; i < sh.w; i += kThreads) other[i * stride] = 0;
      unsigned long long* other_valid = a.ws.block_valid + (1 - parity) * kMaxBlocks;
      for (int i = threadIdx.x; i < kMaxBlocks; i += kThreads) other_valid[i] = 0;
    }
    // Poll: a word that shows every block's arrival holds every block's load.
    unsigned mine = 0;
    for (int r = threadIdx.x; r < sh.w; r += kThreads) {
      unsigned load;
      if (sh.narrow) {
        const unsigned* word = reinterpret_cast<const unsigned*>(words) + r;
        unsigned v = LoadRelaxed(word);
        while ((v >> kArrivalShift32) != gridDim.x) v = LoadRelaxed(word);
        load = v & kLoadMask32;
      } else {
        unsigned long long v = LoadRelaxed(&words[r * stride]);
        while ((v >> kArrivalShift) != gridDim.x) v = LoadRelaxed(&words[r * stride]);
        load = static_cast<unsigned>(v & kLoadMask);
      }
      plan.load[r] = static_cast<int>(load);
      mine += load;
    }
    if (warp_plan) {  // the polling warp plans from its registers, with no block barrier
      if (threadIdx.x < 32) {
        __syncwarp();  // the fallback reads the warp's plan.load
        EPLB_MARK(3);
        WarpPlanSglang(sh, plan, static_cast<int>(mine), WarpSum(static_cast<int>(mine)));
      }
    } else {
      mine = __reduce_add_sync(0xffffffffu, mine);
      if ((threadIdx.x & 31) == 0 && mine != 0) atomicAdd(&plan.total, mine);
    }
    // Every block has read the counter before its first atomic, so it can move on now.
    if (blockIdx.x == 0 && threadIdx.x == 0) atomicAdd(a.ws.call_counter, 1u);
    if (kMode == 2) {
      unsigned all = 0, before = 0;
      for (int b = threadIdx.x; b < static_cast<int>(gridDim.x); b += kThreads) {
        unsigned long long v = LoadRelaxed(&valid_words[b]);
        while ((v & kPublished) == 0) v = LoadRelaxed(&valid_words[b]);
        const unsigned rows = static_cast<unsigned>(v & (kPublished - 1));
        all += rows;
        before += b < static_cast<int>(blockIdx.x) ? rows : 0u;
      }
      all = __reduce_add_sync(0xffffffffu, all);
      before = __reduce_add_sync(0xffffffffu, before);
      if ((threadIdx.x & 31) == 0 && all != 0) {
        atomicAdd(&plan.valid, all);
        if (before != 0) atomicAdd(&plan.offset, before);
      }
    }
  }
  if (late) store_last();  // (late: batches)
  if (sh.s != 0 || a.shared_rank != nullptr)
    Expand<Id, kMode>(sh, a, plan, rt.flags, balance, exchange, warp_plan, row0, row1, stage_rank);
  if (row_major) {
    __syncthreads();
    RowMajorStores(sh, a.slots + o0, a.weights + o0, rows, stage_slot, stage_weight, stage_rank);
  }
  EPLB_MARK(5);
}

// A launch's shared memory: the staged table or the slot table, the bins, the plan and the row
// flags, and a row-major block's staging (byte offsets, -1 for an absent part), and its size.
struct SmemLayout {
  int table = -1, bins = 0, plan = 0, flags = -1, stage = -1;
  size_t bytes = 0;
};
constexpr SmemLayout Layout(bool staged, int e, int p, int w, bool shared_bins, int rows,
                            int stage_elements) {
  SmemLayout l;
  size_t off = 0;
  if (staged) {
    l.table = 0;
    off = Align16(4 * static_cast<size_t>(e));
  } else if (p <= kMaxSlotTable) {
    l.table = 0;
    off = Align16(4 * static_cast<size_t>(p));
  }
  l.bins = static_cast<int>(off);
  off += Align16(4 * static_cast<size_t>(shared_bins ? p : w));
  l.plan = static_cast<int>(off);
  off += Align16(sizeof(PlanShared));
  if (rows <= kMaxRowFlags) {
    l.flags = static_cast<int>(off);
    off += Align16(static_cast<size_t>(rows));
    if (stage_elements > 0) {
      l.stage = static_cast<int>(off);
      off += Align16(8 * static_cast<size_t>(stage_elements) + 4 * static_cast<size_t>(rows));
    }
  }
  l.bytes = off;
  return l;
}
// The largest layout a launch can ask for (a staged table needs E <= kMaxStagedTable, shared
// bins P <= kMaxSharedBins; every other part is smaller).
constexpr size_t kMaxSmem = Layout(true, kMaxStagedTable, kMaxSharedBins, kRouteMaxRanks, true,
                                   kMaxRowFlags, (kThreads * kBatch))
                                .bytes;

// Kernels with a row-major variant: the static staged table with shared bins (the usual case),
// to keep the count of kernels down.
constexpr bool CanRowMajor(int dispatch, bool shared_bins) {
  return dispatch == kStagedTable && shared_bins;
}

// The kernel of a launch: plain or overlapping, row-major or not (kernels without a row-major
// variant take the other for both).
template <typename Id, int kDispatch, bool kSharedBins, int kMode>
const void* KernelFor(bool overlap, bool row_major) {
  constexpr bool kRm = CanRowMajor(kDispatch, kSharedBins);
  // Indexed by overlap + 2 row_major. Their order here is their order in the module, kept as it
  // was: where code lies moves the figures by a few percent.
  const void* kernels[4] = {
      reinterpret_cast<const void*>(
          RouteTopkKernel<Id, kDispatch, kSharedBins, kMode, false, false>),
      reinterpret_cast<const void*>(
          RouteTopkKernel<Id, kDispatch, kSharedBins, kMode, true, false>),
      reinterpret_cast<const void*>(RouteTopkKernel<Id, kDispatch, kSharedBins, kMode, false, kRm>),
      reinterpret_cast<const void*>(RouteTopkKernel<Id, kDispatch, kSharedBins, kMode, true, kRm>)};
  return kernels[(overlap ? 1 : 0) + (row_major ? 2 : 0)];
}

// Blocks of this kernel that can be resident at once on the device, at the largest layout.
// (The device's multiprocessor count goes to *sms.)
template <typename Id, int kDispatch, bool kSharedBins, int kMode>
int MaxResidentBlocks(int* sms) {
  static int sm_count = 0;
  static const int max_blocks = [] {
    int device = 0, per_sm = INT_MAX;
    cudaGetDevice(&device);
    cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device);
    // Every variant (plain and overlapping, row-major or not): one grid size serves all.
    for (int v = 0; v < 4; ++v) {
      const void* kernel = KernelFor<Id, kDispatch, kSharedBins, kMode>(v & 1, (v & 2) != 0);
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(kMaxSmem));
      int blocks = 0;
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, kThreads, kMaxSmem);
      per_sm = std::min(per_sm, blocks);
    }
    if (sm_count < 1) sm_count = 1;
    return sm_count * (per_sm > 0 ? per_sm : 1);
  }();
  *sms = sm_count;
  return max_blocks;
}

template <typename Id, int kDispatch, bool kSharedBins, int kMode>
absl::Status LaunchOne(Shape sh, const RouteTopkParams& p, const RouteTopkBuffers<Id>& b,
                       Workspace ws, cudaStream_t stream) {
  int sm_count = 0;
  const int max_blocks = MaxResidentBlocks<Id, kDispatch, kSharedBins, kMode>(&sm_count);
  const bool balance = kMode != 0 && p.num_tokens >= p.min_batch;
  // The grid: at most one element per thread (rows_one rows a block), which measured fastest at
  // every size (per-SM store throughput bounds a block, not the exchange); when a balancing
  // call needs more blocks than can be resident, the resident grid with batches per thread.
  const int64_t rows_one = p.top_k <= kThreads ? kThreads / p.top_k : 1;
  int64_t blocks = p.grid_blocks > 0 ? p.grid_blocks : (p.num_tokens + rows_one - 1) / rows_one;
  if (balance) {  // blocks that exchange counts must all be resident at once
    if (blocks > max_blocks) blocks = max_blocks;
    // ... and more than one a multiprocessor only lengthens the exchange (measured). Past one
    // element a thread, a block's rows are whole batches where K allows (no tail batch).
    if (p.grid_blocks == 0 && blocks > sm_count) {
      const int64_t full = static_cast<int64_t>(kThreads) * kBatch;
      const int64_t batch_rows = full % p.top_k == 0 ? full / p.top_k : 1;
      int64_t rows = (p.num_tokens + sm_count - 1) / sm_count;
      rows = (rows + batch_rows - 1) / batch_rows * batch_rows;
      blocks = (p.num_tokens + rows - 1) / rows;
    }
    if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  }
  if (blocks > p.num_tokens) blocks = p.num_tokens;
  if (blocks < 1) blocks = 1;
  sh.rows_per_block = static_cast<int>((p.num_tokens + blocks - 1) / blocks);
  blocks = (p.num_tokens + sh.rows_per_block - 1) / sh.rows_per_block;  // none without rows
  // Blocks of one batch (more than one element a thread) store their rows in row order
  // (RowMajorStores) when there are shared columns.
  const int64_t block_elements = static_cast<int64_t>(sh.rows_per_block) * p.top_k;
  const bool row_major = CanRowMajor(kDispatch, kSharedBins) && p.num_shared > 0 &&
                         block_elements > kThreads && block_elements <= kThreads * kBatch;
  const SmemLayout smem =
      Layout(kDispatch == kStagedTable, p.num_logical, p.num_physical, p.ep_size, kSharedBins,
             sh.rows_per_block, row_major ? static_cast<int>(block_elements) : 0);
  sh.off_table = smem.table;
  sh.off_bins = smem.bins;
  sh.off_plan = smem.plan;
  sh.off_flags = smem.flags;
  sh.off_stage = smem.stage;
  sh.word_stride = WordStride(p.ep_size);
  sh.narrow = sh.word_stride == 1 &&
              static_cast<int64_t>(p.num_tokens) * p.top_k < (int64_t{1} << kArrivalShift32);
  Args<Id> args{b.logical,
                b.routed_weights,
                p.static_table,
                p.replicas,
                p.replica_count,
                p.max_replicas,
                p.rank_invariant,
                b.physical,
                reinterpret_cast<unsigned long long*>(b.counts),
                b.slots,
                b.weights,
                b.shared_rank,
                ws};
  void* kargs[] = {&sh, &args};
  const bool exchange = balance && blocks > 1;
  const bool overlap = p.overlap_previous;
  const void* kernel = KernelFor<Id, kDispatch, kSharedBins, kMode>(overlap, row_major);
  cudaLaunchAttribute attrs[2] = {};
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(static_cast<unsigned>(blocks));
  config.blockDim = dim3(kThreads);
  config.dynamicSmemBytes = smem.bytes;
  config.stream = stream;
  config.attrs = attrs;
  if (exchange) {  // the exchange needs every block resident
    attrs[config.numAttrs].id = cudaLaunchAttributeCooperative;
    attrs[config.numAttrs++].val.cooperative = 1;
  }
  if (overlap) {
    attrs[config.numAttrs].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attrs[config.numAttrs++].val.programmaticStreamSerializationAllowed = 1;
  }
  EPLB_CUDA_RETURN_IF_ERROR(cudaLaunchKernelExC(&config, kernel, kargs));
  return absl::OkStatus();
}

template <typename Id, int kMode>
absl::Status LaunchMode(const Shape& sh, const RouteTopkParams& p, const RouteTopkBuffers<Id>& b,
                        Workspace ws, cudaStream_t stream) {
  const bool shared_bins = p.num_physical <= kMaxSharedBins;
  if (p.dispatch == RouteDispatch::kDynamic) {
    return shared_bins ? LaunchOne<Id, kReplicaPick, true, kMode>(sh, p, b, ws, stream)
                       : LaunchOne<Id, kReplicaPick, false, kMode>(sh, p, b, ws, stream);
  }
  // Staged entries pack the physical id and the slot in 16 bits each (PackEntry): every slot
  // is below W (L + S) and every physical id below W L.
  const bool staged_fits =
      static_cast<int64_t>(p.ep_size) * (p.num_physical / p.ep_size + p.num_shared) <= kMaxPacked;
  if (p.num_logical <= kMaxStagedTable && staged_fits) {
    return shared_bins ? LaunchOne<Id, kStagedTable, true, kMode>(sh, p, b, ws, stream)
                       : LaunchOne<Id, kStagedTable, false, kMode>(sh, p, b, ws, stream);
  }
  return shared_bins ? LaunchOne<Id, kGlobalTable, true, kMode>(sh, p, b, ws, stream)
                     : LaunchOne<Id, kGlobalTable, false, kMode>(sh, p, b, ws, stream);
}

template <typename Id>
absl::Status Launch(const RouteTopkParams& p, const RouteTopkBuffers<Id>& b, cudaStream_t stream) {
  if (absl::Status s = ValidateRouteTopk(p); !s.ok()) return s;
  if (p.num_tokens == 0) return absl::OkStatus();
  if (b.workspace == nullptr) return absl::InvalidArgumentError("route_topk needs a workspace");
  const int mode = (p.num_shared == 0 || p.waterfill == RouteWaterfill::kLocal) ? 0
                   : p.waterfill == RouteWaterfill::kSglang                     ? 1
                                                                                : 2;
  Shape sh{};
  sh.n = p.num_tokens;
  sh.k = p.top_k;
  sh.e = p.num_logical;
  sh.p = p.num_physical;
  sh.w = p.ep_size;
  sh.s = p.num_shared;
  sh.l = p.num_physical / p.ep_size;
  sh.step_rows = kThreads / p.top_k;
  sh.step_cols = kThreads % p.top_k;
  sh.l_magic = DivMagic(sh.l);
  sh.k_magic = DivMagic(p.top_k);
  sh.w_magic = DivMagic(p.ep_size);
  sh.rank = p.rank;
  sh.min_batch = p.min_batch;
  sh.shared_weight = p.shared_weight;
  sh.profile = p.debug_phase_clocks;
  Workspace ws = Carve(b.workspace, p.ep_size);
  // The policy is a template parameter: each kernel holds only its own plan and expand code,
  // which keeps the once-per-call path short and straight (cold instruction fetches cost).
  switch (mode) {
    case 0:
      return LaunchMode<Id, 0>(sh, p, b, ws, stream);
    case 1:
      return LaunchMode<Id, 1>(sh, p, b, ws, stream);
    default:
      return LaunchMode<Id, 2>(sh, p, b, ws, stream);
  }
}

}  // namespace

size_t RouteTopkWorkspaceBytes(int num_tokens, int ep_size) {
  (void)num_tokens;
  return WorkspaceBytes(ep_size);
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
