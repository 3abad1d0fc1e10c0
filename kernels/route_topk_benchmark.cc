// GPU benchmark of the per-layer routing path (dispatch + histogram + remap + Waterfill), per
// call, median of CUDA-event timings after warm-up, outside and inside a CUDA graph; beside the
// device-copy bandwidth floor and the launch floor measured in the same run. Prints a markdown
// table. Run on a GPU machine from the bundle (docs/GPU.md):
//
//   gpu_bundle/bin/route_topk_benchmark [--exact] [--n N --w W] [--blocks B] [--sweep]
//                                       [--no-overlap]
//
// --blocks B forces the grid (RouteTopkParams::grid_blocks); --sweep adds, for every size, the
// graph time of each grid from 1 block up (to choose the launcher's defaults); --profile prints
// block 0's phase clocks.
//
// A second table (unless --no-overlap) times programmatic dependent launch
// (RouteTopkParams::overlap_previous): back-to-back calls in a graph, and calls after a stand-in
// for the router's kernel (a copy that writes the ids), as the graph time of (stand-in, call) pairs
// less the stand-in's alone, with the stand-in letting the call start at its end or at its start.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/helper_kernels.h"
#include "kernels/route_topk.h"

namespace eplb {
namespace {

#define CHECK_CUDA(x)                                                                           \
  do {                                                                                          \
    cudaError_t err_ = (x);                                                                     \
    if (err_ != cudaSuccess) {                                                                  \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(err_)); \
      std::exit(1);                                                                             \
    }                                                                                           \
  } while (0)

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Microseconds per call of `fn` (which enqueues on `s`), median of 50 batches of `reps` calls.
template <typename F>
double TimeStream(cudaStream_t s, F fn, int reps) {
  cudaEvent_t a, b;
  CHECK_CUDA(cudaEventCreate(&a));
  CHECK_CUDA(cudaEventCreate(&b));
  for (int i = 0; i < 20; ++i) fn();
  std::vector<double> t;
  for (int it = 0; it < 50; ++it) {
    CHECK_CUDA(cudaEventRecord(a, s));
    for (int i = 0; i < reps; ++i) fn();
    CHECK_CUDA(cudaEventRecord(b, s));
    CHECK_CUDA(cudaEventSynchronize(b));
    float ms = 0;
    CHECK_CUDA(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms * 1000.0 / reps);
  }
  return Median(t);
}

template <typename F>
double TimeGraph(cudaStream_t s, F fn, int per_graph) {
  cudaGraph_t g;
  CHECK_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  for (int i = 0; i < per_graph; ++i) fn();
  CHECK_CUDA(cudaStreamEndCapture(s, &g));
  cudaGraphExec_t ex;
  CHECK_CUDA(cudaGraphInstantiate(&ex, g, 0));
  const double us = TimeStream(
                        s, [&] { CHECK_CUDA(cudaGraphLaunch(ex, s)); }, 5) /
                    per_graph;
  cudaGraphExecDestroy(ex);
  cudaGraphDestroy(g);
  return us;
}

int Main(int argc, char** argv) {
  bool exact = false;
  bool profile = false;
  bool sweep = false;
  bool overlap_table = true;
  int only_n = 0, only_w = 0;  // --n N --w W: one configuration (for profilers)
  int blocks = 0;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--exact") == 0) exact = true;
    if (std::strcmp(argv[i], "--profile") == 0) profile = true;
    if (std::strcmp(argv[i], "--n") == 0 && i + 1 < argc) only_n = std::atoi(argv[++i]);
    if (std::strcmp(argv[i], "--w") == 0 && i + 1 < argc) only_w = std::atoi(argv[++i]);
    if (std::strcmp(argv[i], "--blocks") == 0 && i + 1 < argc) blocks = std::atoi(argv[++i]);
    if (std::strcmp(argv[i], "--sweep") == 0) sweep = true;
    if (std::strcmp(argv[i], "--no-overlap") == 0) overlap_table = false;
  }
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  cudaStream_t s;
  CHECK_CUDA(cudaStreamCreate(&s));
  // Floors: copy bandwidth (bytes read + written) and an empty kernel in a graph.
  const size_t big = size_t{1} << 30;
  void *x, *y;
  CHECK_CUDA(cudaMalloc(&x, big));
  CHECK_CUDA(cudaMalloc(&y, big));
  const double copy_us = TimeStream(
      s, [&] { CHECK_CUDA(cudaMemcpyAsync(y, x, big, cudaMemcpyDeviceToDevice, s)); }, 2);
  const double bw = 2.0 * big / (copy_us * 1e-6);  // bytes/s
  CHECK_CUDA(cudaFree(x));
  CHECK_CUDA(cudaFree(y));
  // Launch floor: the smallest graph node we can make from host code, a 4-byte memset.
  void* tiny;
  CHECK_CUDA(cudaMalloc(&tiny, 4));
  const double launch_us = TimeGraph(
      s, [&] { CHECK_CUDA(cudaMemsetAsync(tiny, 0, 4, s)); }, 20);
  // And an (almost) empty kernel node: the floor of any kernel in a graph.
  const double kernel_us = TimeGraph(
      s, [&] { CHECK_CUDA(LaunchTouchKernel(static_cast<int*>(tiny), s)); }, 20);
  std::printf(
      "device: %s, copy bandwidth %.2f TB/s, 4-byte memset node in a graph %.2f us, empty "
      "kernel node %.2f us\n",
      prop.name, bw / 1e12, launch_us, kernel_us);
  std::printf(
      "policy: %s waterfill, static dispatch, K=8, E=256, R=32 (P=288; W=512: R=256, P=512), "
      "S=1, int32 ids\n\n",
      exact ? "exact" : "SGLang");
  std::printf(
      "| T | W | stream (us) | graph (us) | bytes | bandwidth floor (us) | launch floor (us) |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  std::mt19937_64 rng(1);
  std::vector<std::string> notes;    // printed after the table
  std::vector<std::string> overlap;  // rows of the overlap table
  for (int w : {8, 32, 144, 512}) {
    for (int n : {64, 512, 4096, 65536}) {
      if ((only_n && n != only_n) || (only_w && w != only_w)) continue;
      // W = 512 needs P to be a multiple of 512: R = 256 there (one expert a rank).
      const int k = 8, e = 256, p = w == 512 ? 512 : 288, sh = 1;
      std::vector<int32_t> logical(static_cast<size_t>(n) * k), table(e);
      for (auto& v : logical) v = static_cast<int32_t>(rng() % e);
      for (int i = 0; i < e; ++i) table[i] = static_cast<int32_t>((i * 7 + 3) % p);
      int32_t *d_logical, *d_source, *d_table, *d_phys, *d_slots, *d_shared;
      float* d_weights;
      int64_t* d_counts;
      void* d_ws;
      CHECK_CUDA(cudaMalloc(&d_logical, logical.size() * 4));
      CHECK_CUDA(cudaMalloc(&d_table, e * 4));
      CHECK_CUDA(cudaMalloc(&d_phys, logical.size() * 4));
      CHECK_CUDA(cudaMalloc(&d_slots, static_cast<size_t>(n) * (k + sh) * 4));
      CHECK_CUDA(cudaMalloc(&d_weights, static_cast<size_t>(n) * (k + sh) * 4));
      CHECK_CUDA(cudaMalloc(&d_shared, static_cast<size_t>(n) * 4));
      CHECK_CUDA(cudaMalloc(&d_counts, p * 8));
      CHECK_CUDA(cudaMalloc(&d_ws, RouteTopkWorkspaceBytes(n, w)));
      // The ids the overlap table's stand-in copies: allocated in every mode, and after the
      // kernel's buffers, so that their addresses (which move the figures by a few percent) do
      // not depend on the mode.
      CHECK_CUDA(cudaMalloc(&d_source, logical.size() * 4));
      CHECK_CUDA(cudaMemcpy(d_logical, logical.data(), logical.size() * 4, cudaMemcpyHostToDevice));
      CHECK_CUDA(cudaMemcpy(d_source, logical.data(), logical.size() * 4, cudaMemcpyHostToDevice));
      CHECK_CUDA(cudaMemcpy(d_table, table.data(), e * 4, cudaMemcpyHostToDevice));
      CHECK_CUDA(cudaMemset(d_counts, 0, p * 8));
      CHECK_CUDA(cudaMemset(d_ws, 0, RouteTopkWorkspaceBytes(n, w)));  // once, per the contract
      long long* d_clocks;
      CHECK_CUDA(cudaMalloc(&d_clocks, 6 * sizeof(long long)));
      RouteTopkParams rp;
      rp.num_tokens = n;
      rp.top_k = k;
      rp.num_logical = e;
      rp.num_physical = p;
      rp.ep_size = w;
      rp.num_shared = sh;
      rp.rank = w / 2;
      rp.static_table = d_table;
      rp.waterfill = exact ? RouteWaterfill::kExact : RouteWaterfill::kSglang;
      rp.grid_blocks = blocks;
      RouteTopkBuffers<int32_t> b;
      b.logical = d_logical;
      b.physical = d_phys;
      b.counts = d_counts;
      b.slots = d_slots;
      b.weights = d_weights;
      b.shared_rank = d_shared;
      b.workspace = d_ws;
      auto call = [&] {
        absl::Status st = LaunchRouteTopk(rp, b, s);
        if (!st.ok()) {
          std::fprintf(stderr, "%s\n", st.ToString().c_str());
          std::exit(1);
        }
      };
      const double stream_us = TimeStream(s, call, 20);
      const double graph_us = TimeGraph(s, call, 20);
      char line[512];
      if (overlap_table) {  // programmatic dependent launch: back to back, after the stand-in
        bool trigger_at_start = false;
        auto stand_in = [&] {
          CHECK_CUDA(LaunchCopyKernel({d_source, d_logical, static_cast<int64_t>(logical.size())},
                                      {}, trigger_at_start, 0, s));
        };
        auto pair = [&] {
          stand_in();
          call();
        };
        const double alone_us = TimeGraph(s, stand_in, 20);
        const double pair_us = TimeGraph(s, pair, 20);
        rp.overlap_previous = true;
        const double overlapped_us = TimeGraph(s, call, 20);
        const double pair_end_us = TimeGraph(s, pair, 20);
        trigger_at_start = true;
        const double pair_start_us = TimeGraph(s, pair, 20);
        rp.overlap_previous = false;
        std::snprintf(line, sizeof(line), "| %d | %d | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |",
                      n, w, graph_us, overlapped_us, alone_us, pair_us - alone_us,
                      pair_end_us - alone_us, pair_start_us - alone_us);
        overlap.push_back(line);
      }
      if (profile) {  // one more call with phase clocks
        rp.debug_phase_clocks = d_clocks;
        call();
        CHECK_CUDA(cudaStreamSynchronize(s));
        long long c[6];
        CHECK_CUDA(cudaMemcpy(c, d_clocks, sizeof(c), cudaMemcpyDeviceToHost));
        std::snprintf(line, sizeof(line),
                      "phase cycles (block 0, T=%d W=%d): set-up %lld, route %lld, "
                      "flush+exchange %lld, plan %lld, expand %lld",
                      n, w, c[1] - c[0], c[2] - c[1], c[3] - c[2], c[4] - c[3], c[5] - c[4]);
        notes.push_back(line);
        rp.debug_phase_clocks = nullptr;
      }
      if (sweep) {  // the graph time of each grid
        std::string text = "grid sweep T=" + std::to_string(n) + " W=" + std::to_string(w) +
                           " (blocks: graph us):";
        for (int g : {1, 2, 4, 8, 16, 32, 64, 128}) {
          if (g > n) break;
          rp.grid_blocks = g;
          std::snprintf(line, sizeof(line), " %d: %.2f", g, TimeGraph(s, call, 20));
          text += line;
        }
        notes.push_back(text);
        rp.grid_blocks = blocks;
      }
      cudaFree(d_clocks);
      // Fewest bytes: ids in, physical ids out, slots and weights out, shared rank out.
      const double bytes = 4.0 * n * k * 2 + 8.0 * n * (k + sh) + 4.0 * n;
      std::printf("| %d | %d | %.2f | %.2f | %.0f | %.3f | %.2f |\n", n, w, stream_us, graph_us,
                  bytes, bytes / bw * 1e6, launch_us);
      cudaFree(d_logical);
      cudaFree(d_source);
      cudaFree(d_table);
      cudaFree(d_phys);
      cudaFree(d_slots);
      cudaFree(d_weights);
      cudaFree(d_shared);
      cudaFree(d_counts);
      cudaFree(d_ws);
    }
  }
  if (!overlap.empty()) {
    std::printf(
        "\nProgrammatic dependent launch (graph, us a call; after the stand-in: the pair's time "
        "less the stand-in's alone)\n\n");
    std::printf(
        "| T | W | back to back | back to back, overlapped | stand-in alone | after stand-in | "
        "overlapped, stand-in lets it start at its end | overlapped, at its start |\n");
    std::printf("|---|---|---|---|---|---|---|---|\n");
    for (const std::string& row : overlap) std::printf("%s\n", row.c_str());
  }
  std::printf("\n");
  for (const std::string& note : notes) std::printf("%s\n", note.c_str());
  return 0;
}

}  // namespace
}  // namespace eplb

int main(int argc, char** argv) { return eplb::Main(argc, argv); }
