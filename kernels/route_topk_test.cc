// The route/count/remap/Waterfill kernels against their CPU twin (built from //core), bit for
// bit, on fresh random inputs each run, with poisoned outputs. CPU cases run everywhere; GPU
// cases skip without a device.
#include "kernels/route_topk.h"

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "core/dispatch.h"
#include "core/expert_layout.h"
#include "core/placement_map.h"
#include "core/test_util.h"
#include "core/topk_postprocess.h"
#include "gtest/gtest.h"
#include "kernels/gpu_test_util.h"
#include "kernels/helper_kernels.h"

namespace eplb {
namespace {

struct Case {
  int n, k, w, l, r, s;
  RouteDispatch dispatch;
  RouteWaterfill waterfill;
  int grid_blocks = 0;  // 0: the launcher's choice
  bool hot = false;     // every id one of two experts (a single loaded rank)
};

// Host-side inputs of one case.
struct Inputs {
  RouteTopkParams p;
  std::vector<int32_t> table, replicas, replica_count;
  std::vector<int64_t> logical;
  std::vector<float> routed_w;
};

Inputs MakeInputs(const Case& c, std::mt19937_64& rng) {
  Inputs in;
  const int p_count = c.w * c.l;
  const int e_count = p_count - c.r;
  auto layout = ExpertLayout::Create({e_count, c.r, c.w, c.s, 1});
  EXPECT_TRUE(layout.ok()) << layout.status();
  PlacementMap map = testing::RandomPlacement(*layout, 1, rng);
  in.p.num_tokens = c.n;
  in.p.top_k = c.k;
  in.p.num_logical = e_count;
  in.p.num_physical = p_count;
  in.p.ep_size = c.w;
  in.p.num_shared = c.s;
  in.p.rank = std::uniform_int_distribution<int>(0, c.w - 1)(rng);
  in.p.dispatch = c.dispatch;
  in.p.waterfill = c.waterfill;
  in.p.shared_weight = 0.4f;
  in.p.rank_invariant = rng() % 2;
  in.p.grid_blocks = c.grid_blocks;
  in.table = *BuildStaticDispatchRow(*layout, map, 0, in.p.rank);
  const auto l2p = map.LogicalToAllPhysical();
  in.p.max_replicas = map.max_replicas();
  for (int e = 0; e < e_count; ++e) {
    in.replica_count.push_back(map.ReplicaCount(0, LogicalId(e)));
    in.replicas.insert(in.replicas.end(), l2p[0][e].begin(), l2p[0][e].end());
  }
  // Skewed logical ids, some padding, a few out-of-range ids (treated as padding).
  std::uniform_real_distribution<double> u(0, 1);
  in.logical.resize(static_cast<size_t>(c.n) * c.k);
  for (auto& id : in.logical) {
    const double x = u(rng);
    id = x < 0.03 ? -1 : x < 0.035 ? e_count + 2 : static_cast<int64_t>(u(rng) * u(rng) * e_count);
    if (c.hot && id >= 0 && id < e_count) id = id % 2;
  }
  in.routed_w.resize(in.logical.size());
  for (auto& v : in.routed_w) v = static_cast<float>(u(rng));
  return in;
}

template <typename Id>
struct HostOut {
  std::vector<Id> physical, slots;
  std::vector<int64_t> counts;
  std::vector<float> weights;
  std::vector<int32_t> shared_rank;
};

template <typename Id>
HostOut<Id> RunRef(Inputs& in) {
  HostOut<Id> o;
  const size_t nk = in.logical.size();
  const size_t width = static_cast<size_t>(in.p.top_k + in.p.num_shared);
  std::vector<Id> logical(in.logical.begin(), in.logical.end());
  o.physical.assign(nk, 7);
  o.slots.assign(static_cast<size_t>(in.p.num_tokens) * width, 7);
  o.weights.assign(o.slots.size(), 7.0f);
  o.counts.assign(in.p.num_physical, 5);
  o.shared_rank.assign(in.p.num_tokens, 7);
  RouteTopkParams p = in.p;
  p.static_table = in.table.data();
  p.replicas = in.replicas.data();
  p.replica_count = in.replica_count.data();
  RouteTopkBuffers<Id> b;
  b.logical = logical.data();
  b.routed_weights = in.routed_w.data();
  b.physical = o.physical.data();
  b.counts = o.counts.data();
  b.slots = o.slots.data();
  b.weights = o.weights.data();
  b.shared_rank = o.shared_rank.data();
  EXPECT_TRUE(RouteTopkRef(p, b).ok());
  return o;
}

// One case's inputs, outputs (poisoned: every element must be written) and the kernel's
// parameters in device memory. `workspace`: one shared with other calls, or null for its own,
// zeroed once as the contract says.
template <typename Id>
struct DeviceCall {
  explicit DeviceCall(const Inputs& in, char* workspace = nullptr)
      : logical(std::vector<Id>(in.logical.begin(), in.logical.end())),
        routed_w(in.routed_w),
        table(in.table),
        replicas(in.replicas),
        replica_count(in.replica_count),
        physical(in.logical.size()),
        slots(Cells(in)),
        weights(Cells(in)),
        counts(std::vector<int64_t>(in.p.num_physical, 5)),
        shared_rank(in.p.num_tokens),
        own_workspace(
            workspace != nullptr ? 0 : RouteTopkWorkspaceBytes(in.p.num_tokens, in.p.ep_size)) {
    Poison();
    own_workspace.Fill(0);
    p = in.p;
    p.static_table = table.get();
    p.replicas = replicas.get();
    p.replica_count = replica_count.get();
    b.logical = logical.get();
    b.routed_weights = routed_w.get();
    b.physical = physical.get();
    b.counts = counts.get();
    b.slots = slots.get();
    b.weights = weights.get();
    b.shared_rank = shared_rank.get();
    b.workspace = workspace != nullptr ? workspace : own_workspace.get();
  }
  static size_t Cells(const Inputs& in) {
    return static_cast<size_t>(in.p.num_tokens) * (in.p.top_k + in.p.num_shared);
  }
  void Poison() {
    physical.Fill(0x5A);
    slots.Fill(0x5A);
    weights.Fill(0x5A);
    shared_rank.Fill(0x5A);
  }
  void Launch(cudaStream_t stream = nullptr) {
    const absl::Status s = LaunchRouteTopk(p, b, stream);
    EXPECT_TRUE(s.ok()) << s;
    EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  }
  HostOut<Id> Download() const {
    HostOut<Id> o;
    o.physical = physical.Download();
    o.slots = slots.Download();
    o.weights = weights.Download();
    o.counts = counts.Download();
    o.shared_rank = shared_rank.Download();
    return o;
  }

  testing::DeviceBuffer<Id> logical;
  testing::DeviceBuffer<float> routed_w;
  testing::DeviceBuffer<int32_t> table, replicas, replica_count;
  testing::DeviceBuffer<Id> physical, slots;
  testing::DeviceBuffer<float> weights;
  testing::DeviceBuffer<int64_t> counts;
  testing::DeviceBuffer<int32_t> shared_rank;
  testing::DeviceBuffer<char> own_workspace;
  RouteTopkParams p;
  RouteTopkBuffers<Id> b;
};

template <typename Id>
HostOut<Id> RunGpu(Inputs& in) {
  DeviceCall<Id> call(in);
  // Two calls: the second must not see anything the first left in the workspace. Outputs are
  // poisoned again in between; the histogram accumulates twice.
  call.Launch();
  const std::vector<int64_t> once = call.counts.Download();
  call.Poison();
  call.Launch();
  HostOut<Id> o = call.Download();
  for (size_t i = 0; i < o.counts.size(); ++i) {
    EXPECT_EQ(o.counts[i] - once[i], once[i] - 5) << "histogram of the second call, bin " << i;
    o.counts[i] = once[i];
  }
  return o;
}

// Every output but the histogram, element by element against the twin's.
template <typename Id>
void ExpectSameRows(const HostOut<Id>& got, const HostOut<Id>& want) {
  EXPECT_TRUE(testing::SameElements(got.physical, want.physical)) << "physical";
  EXPECT_TRUE(testing::SameElements(got.slots, want.slots)) << "slots";
  EXPECT_TRUE(testing::SameElements(got.weights, want.weights)) << "weights";
  EXPECT_TRUE(testing::SameElements(got.shared_rank, want.shared_rank)) << "shared_rank";
}

// Every output, the histogram included.
template <typename Id>
void ExpectSameOutputs(const HostOut<Id>& got, const HostOut<Id>& want) {
  ExpectSameRows(got, want);
  EXPECT_TRUE(testing::SameElements(got.counts, want.counts)) << "counts";
}

template <typename Id>
void Compare(const Case& c, uint64_t seed) {
  SCOPED_TRACE(::testing::Message()
               << "EPLB_TEST_SEED=" << seed << " n=" << c.n << " k=" << c.k << " w=" << c.w
               << " l=" << c.l << " r=" << c.r << " s=" << c.s << " dispatch="
               << static_cast<int>(c.dispatch) << " waterfill=" << static_cast<int>(c.waterfill)
               << " id=" << sizeof(Id) << " grid=" << c.grid_blocks << " hot=" << c.hot);
  std::mt19937_64 rng(seed);
  Inputs in = MakeInputs(c, rng);
  HostOut<Id> want = RunRef<Id>(in);
  HostOut<Id> got = RunGpu<Id>(in);
  ExpectSameOutputs(got, want);
}

std::vector<Case> Cases() {
  std::vector<Case> out;
  const RouteDispatch ds[] = {RouteDispatch::kStatic, RouteDispatch::kDynamic};
  const RouteWaterfill wf[] = {RouteWaterfill::kLocal, RouteWaterfill::kSglang,
                               RouteWaterfill::kExact};
  for (int n : {0, 1, 63, 64, 300, 4096, 65536}) {
    for (auto d : ds) {
      for (auto f : wf) {
        out.push_back({n, 8, 8, 36, 32, 1, d, f});    // DeepSeek-V3 at EP8 (E=256)
        out.push_back({n, 8, 32, 9, 32, 1, d, f});    // EP32
        out.push_back({n, 16, 144, 2, 32, 1, d, f});  // EP144, K=16
      }
    }
  }
  out.push_back({4096, 1, 512, 1, 256, 1, RouteDispatch::kStatic, RouteWaterfill::kSglang});
  out.push_back({4096, 4, 512, 2, 512, 2, RouteDispatch::kStatic, RouteWaterfill::kExact});
  out.push_back({4096, 8, 8, 36, 32, 0, RouteDispatch::kStatic, RouteWaterfill::kSglang});
  out.push_back({2000, 8, 4, 4096, 100, 1, RouteDispatch::kDynamic, RouteWaterfill::kExact});
  out.push_back({777, 3, 1, 5, 0, 1, RouteDispatch::kStatic, RouteWaterfill::kSglang});
  // Around the one-block limit (4096 elements), and forced grids: one block for a large call
  // (rows past the shared row flags), odd grids, one row per block, the most resident blocks.
  for (auto f : {RouteWaterfill::kSglang, RouteWaterfill::kExact}) {
    out.push_back({512, 8, 8, 36, 32, 1, RouteDispatch::kStatic, f});
    out.push_back({513, 8, 8, 36, 32, 1, RouteDispatch::kStatic, f});
    out.push_back({9000, 8, 32, 9, 32, 1, RouteDispatch::kStatic, f, 1});
    out.push_back({4099, 8, 144, 2, 32, 1, RouteDispatch::kStatic, f, 7});
    out.push_back({100, 8, 8, 36, 32, 1, RouteDispatch::kDynamic, f, 100});
    out.push_back({65536, 16, 512, 1, 256, 2, RouteDispatch::kStatic, f, 1024});
    out.push_back({4096, 8, 144, 2, 32, 1, RouteDispatch::kStatic, f, 0, true});
    out.push_back({300, 8, 8, 36, 32, 1, RouteDispatch::kStatic, f, 0, true});
    out.push_back({20000, 8, 64, 9, 64, 1, RouteDispatch::kStatic, f, 0, true});
    out.push_back({8192, 8, 1024, 1, 256, 1, RouteDispatch::kStatic, f});  // the most ranks
    // Every unrolled width of the one-warp exact plan, full and partly used, with short last
    // runs: R = ceil(W / 32) = 2 (W = 33), 3 and 4 (96, 128), 8 (256), 10 (300), 19 (600).
    out.push_back({1000, 8, 33, 9, 41, 1, RouteDispatch::kStatic, f});
    out.push_back({2048, 8, 96, 3, 32, 1, RouteDispatch::kStatic, f, 0, true});
    out.push_back({2048, 8, 128, 3, 128, 1, RouteDispatch::kStatic, f});
    out.push_back({3000, 8, 256, 2, 256, 1, RouteDispatch::kStatic, f});
    out.push_back({4096, 8, 300, 1, 44, 1, RouteDispatch::kStatic, f});
    out.push_back({5000, 8, 600, 1, 344, 1, RouteDispatch::kDynamic, f, 0, true});
    out.push_back({600, 16, 1024, 2, 0, 2, RouteDispatch::kDynamic, f, 0, true});
    // Blocks of one batch store their rows whole (row-major): K = 5 and S = 2 (rows of 7
    // entries, which do not divide a block's 512 threads), the last block of one element a
    // thread (88 rows); and a forced grid of 65-row blocks whose last has 63 rows. Then 64-bit
    // exchange words on consecutive lines (2^21 elements or more).
    out.push_back({20000, 5, 64, 9, 64, 2, RouteDispatch::kStatic, f});
    out.push_back({193, 8, 8, 36, 32, 1, RouteDispatch::kStatic, f, 3});
    out.push_back({270000, 8, 256, 2, 256, 1, RouteDispatch::kStatic, f});
  }
  // A logical table past the staged limit (4096 entries): lookups from global memory.
  out.push_back({3000, 8, 8, 640, 32, 1, RouteDispatch::kStatic, RouteWaterfill::kExact});
  // Past the staged entries' 16 bits, small tables read from global memory: physical ids and
  // slots (P = 33280), and slots alone (P = 32000, W (L + S) = 33280).
  out.push_back({3000, 8, 64, 520, 29280, 1, RouteDispatch::kStatic, RouteWaterfill::kSglang});
  out.push_back({3000, 8, 64, 500, 28000, 20, RouteDispatch::kStatic, RouteWaterfill::kExact});
  return out;
}

TEST(RouteTopkRefTest, AgreesWithCorePostprocess) {
  std::mt19937_64 rng(testing::FreshSeed());
  Case c{300, 8, 8, 36, 32, 1, RouteDispatch::kStatic, RouteWaterfill::kSglang};
  Inputs in = MakeInputs(c, rng);
  for (auto& id : in.logical) {
    if (id >= in.p.num_logical) id = -1;
  }
  HostOut<int64_t> o = RunRef<int64_t>(in);
  // The same through core's PostprocessTopk with a one-layer map equal to the table's choices.
  for (size_t i = 0; i < in.logical.size(); ++i) {
    const int64_t e = in.logical[i];
    EXPECT_EQ(o.physical[i], e < 0 ? -1 : in.table[e]);
  }
  int valid = 0;
  for (int32_t r : o.shared_rank) valid += r >= 0;
  EXPECT_GT(valid, 0);
}

TEST(RouteTopkRefTest, RejectsBadParameters) {
  RouteTopkParams p;
  p.num_tokens = 1;
  p.top_k = 17;
  p.num_logical = 8;
  p.num_physical = 8;
  p.ep_size = 2;
  std::vector<int32_t> table(8, 0);
  p.static_table = table.data();
  EXPECT_EQ(ValidateRouteTopk(p).code(), absl::StatusCode::kInvalidArgument);
  p.top_k = 2;
  p.num_physical = 9;
  EXPECT_EQ(ValidateRouteTopk(p).code(), absl::StatusCode::kInvalidArgument);
  p.num_physical = 8;
  p.rank = 2;
  EXPECT_EQ(ValidateRouteTopk(p).code(), absl::StatusCode::kInvalidArgument);
  p.rank = 0;
  p.ep_size = 2048;
  EXPECT_EQ(ValidateRouteTopk(p).code(), absl::StatusCode::kInvalidArgument);
  p.ep_size = 2;
  p.dispatch = RouteDispatch::kDynamic;
  EXPECT_EQ(ValidateRouteTopk(p).code(), absl::StatusCode::kInvalidArgument);
  p.dispatch = RouteDispatch::kStatic;
  p.grid_blocks = -1;
  const absl::Status grid = ValidateRouteTopk(p);
  EXPECT_EQ(grid.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(grid.message().find("grid_blocks=-1"), std::string::npos) << grid;
  p.grid_blocks = 0;
  p.num_tokens = 800'000'000;  // * (top_k + 1) = 2.4e9, past 2^31
  const absl::Status big = ValidateRouteTopk(p);
  EXPECT_EQ(big.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(big.message().find("num_tokens=800000000"), std::string::npos) << big;
  p.num_tokens = 1;
  EXPECT_TRUE(ValidateRouteTopk(p).ok());
}

TEST(RouteTopkGpuTest, MatchesTwinInt32) {
  EPLB_SKIP_WITHOUT_GPU();
  const uint64_t seed = testing::FreshSeed();
  for (const Case& c : Cases()) Compare<int32_t>(c, seed + c.n + c.w);
}

TEST(RouteTopkGpuTest, MatchesTwinInt64) {
  EPLB_SKIP_WITHOUT_GPU();
  const uint64_t seed = testing::FreshSeed();
  for (const Case& c : Cases()) Compare<int64_t>(c, seed + 3 * c.n + c.w);
}

// One workspace through calls that exchange counts between blocks and calls that do not, of
// both policies and several grids: each must equal the twin (the exchange words must be clean
// at every call, whatever ran before). W = 32 keeps its exchange words 128 bytes apart, W = 300
// on consecutive words, 32-bit ones but for the call of 2^21 elements or more.
void MixedCallsOnOneWorkspace(int w) {
  const uint64_t seed = testing::FreshSeed();
  std::mt19937_64 rng(seed);
  testing::DeviceBuffer<char> d_ws(RouteTopkWorkspaceBytes(0, w));
  d_ws.Fill(0);
  const RouteWaterfill kS = RouteWaterfill::kSglang, kE = RouteWaterfill::kExact;
  const Case seq[] = {
      {4096, 8, w, 9, 32, 1, RouteDispatch::kStatic, kE},      // several blocks
      {64, 8, w, 9, 32, 1, RouteDispatch::kStatic, kE},        // one block
      {5000, 8, w, 9, 32, 1, RouteDispatch::kStatic, kS, 3},   // several blocks
      {5000, 8, w, 9, 32, 1, RouteDispatch::kStatic, kE, 40},  // more blocks than the last
      {5000, 8, w, 9, 32, 1, RouteDispatch::kStatic, kE, 2},   // fewer blocks
      {30, 8, w, 9, 32, 1, RouteDispatch::kStatic, kE},        // under min_batch
      {5000, 8, w, 9, 32, 1, RouteDispatch::kStatic, RouteWaterfill::kLocal, 9},
      {8192, 8, w, 9, 32, 1, RouteDispatch::kStatic, kS},
      {8192, 8, w, 9, 32, 1, RouteDispatch::kStatic, kE},
      {270000, 8, w, 9, 32, 1, RouteDispatch::kStatic, kS},  // 64-bit words at W = 300 too
  };
  for (int round = 0; round < 3; ++round) {
    for (const Case& c : seq) {
      SCOPED_TRACE(::testing::Message() << "EPLB_TEST_SEED=" << seed << " w=" << w << " round="
                                        << round << " n=" << c.n << " grid=" << c.grid_blocks);
      Inputs in = MakeInputs(c, rng);
      const HostOut<int32_t> want = RunRef<int32_t>(in);
      DeviceCall<int32_t> call(in, d_ws.get());
      call.Launch();
      const HostOut<int32_t> got = call.Download();
      ExpectSameOutputs(got, want);
    }
  }
}

TEST(RouteTopkGpuTest, WorkspaceStaysCleanAcrossMixedCalls) {
  EPLB_SKIP_WITHOUT_GPU();
  MixedCallsOnOneWorkspace(32);
  MixedCallsOnOneWorkspace(300);
}

// Programmatic dependent launch, on a stream and in a captured graph, with int32 and int64 ids:
// each call starts while the kernel that writes its ids and weights (a copy that lets dependents
// start at its own start, then sleeps 20 us before it copies) still runs, then a second call
// overlaps the first. Both are poisoned before the copy, so a call that read them before its
// wait would differ from the twin. The second call must see a clean workspace and add to the
// histogram (its outputs are the first's, so the histogram is what shows it ran).
// On an H200 (2026-11-29) this caught ptxas hoisting read-only-cache loads (__ldg) of the ids
// above griddepcontrol.wait in some kernels (stream and graph). It also failed, as it should,
// for a deliberately broken binary with the wait moved after the reads.
template <typename Id>
void OverlappedCallsWait() {
  const uint64_t seed = testing::FreshSeed();
  std::mt19937_64 rng(seed);
  const RouteWaterfill kS = RouteWaterfill::kSglang, kE = RouteWaterfill::kExact;
  const Case cases[] = {
      {64, 8, 8, 36, 32, 1, RouteDispatch::kStatic, kS},                       // one block
      {64, 8, 32, 9, 32, 1, RouteDispatch::kStatic, kE},                       // one block, exact
      {300, 8, 8, 36, 32, 1, RouteDispatch::kStatic, RouteWaterfill::kLocal},  // no exchange
      {4096, 8, 144, 2, 32, 1, RouteDispatch::kStatic, kS},     // exchange, block plan
      {4096, 8, 32, 9, 32, 1, RouteDispatch::kStatic, kE},      // exchange, exact
      {4096, 8, 512, 1, 256, 1, RouteDispatch::kStatic, kS},    // consecutive exchange words
      {65536, 8, 8, 36, 32, 1, RouteDispatch::kStatic, kS},     // batches a thread
      {3000, 8, 8, 640, 32, 1, RouteDispatch::kStatic, kE},     // table from global memory
      {5000, 8, 32, 9, 32, 1, RouteDispatch::kDynamic, kE, 7},  // replicas, forced grid
  };
  constexpr int64_t kWords = sizeof(Id) / 4;  // 32-bit words an id
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  for (const Case& c : cases) {
    for (const bool graph : {false, true}) {  // stream launches, and a captured graph
      SCOPED_TRACE(::testing::Message() << "EPLB_TEST_SEED=" << seed << " id bytes=" << sizeof(Id)
                                        << " n=" << c.n << " w=" << c.w << " graph=" << graph);
      Inputs in = MakeInputs(c, rng);
      const HostOut<Id> want = RunRef<Id>(in);
      DeviceCall<Id> call(in);
      call.p.overlap_previous = true;
      testing::DeviceBuffer<Id> ids(std::vector<Id>(in.logical.begin(), in.logical.end()));
      testing::DeviceBuffer<float> weights(in.routed_w);
      call.logical.Fill(0x5A);  // out-of-range ids: padding, unlike the real ones
      call.routed_w.Fill(0x5A);
      // Every upload and fill (the default stream's) done before the copy, in either mode.
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      if (graph) {
        ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
      }
      const int64_t n = static_cast<int64_t>(in.logical.size());
      ASSERT_EQ(LaunchCopyKernel({ids.get(), call.logical.get(), n * kWords},
                                 {weights.get(), call.routed_w.get(), n}, true, 20, stream),
                cudaSuccess);
      ASSERT_TRUE(LaunchRouteTopk(call.p, call.b, stream).ok());
      ASSERT_TRUE(LaunchRouteTopk(call.p, call.b, stream).ok());
      if (graph) {
        cudaGraph_t g;
        cudaGraphExec_t exec;
        ASSERT_EQ(cudaStreamEndCapture(stream, &g), cudaSuccess);
        ASSERT_EQ(cudaGraphInstantiate(&exec, g, 0), cudaSuccess);
        ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
        ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
        cudaGraphExecDestroy(exec);
        cudaGraphDestroy(g);
      }
      ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
      const HostOut<Id> got = call.Download();
      ExpectSameRows(got, want);
      std::vector<int64_t> twice(want.counts.size());
      for (size_t i = 0; i < twice.size(); ++i) twice[i] = 5 + 2 * (want.counts[i] - 5);
      EXPECT_TRUE(testing::SameElements(got.counts, twice)) << "counts of two calls";
    }
  }
  cudaStreamDestroy(stream);
}

TEST(RouteTopkGpuTest, OverlappedCallsWaitForTheKernelBefore) {
  EPLB_SKIP_WITHOUT_GPU();
  OverlappedCallsWait<int32_t>();
  OverlappedCallsWait<int64_t>();
}

// Captured once in a CUDA graph, replayed after the static table changed in place: the replay
// must see the new table (the kernels read it through the same pointer) and equal the twin.
TEST(RouteTopkGpuTest, GraphReplaySeesTableUpdatedInPlace) {
  EPLB_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(testing::FreshSeed());
  Case c{4096, 8, 32, 9, 32, 1, RouteDispatch::kStatic, RouteWaterfill::kSglang};
  Inputs in = MakeInputs(c, rng);
  DeviceCall<int32_t> call(in);
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  cudaGraph_t graph;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
  ASSERT_TRUE(LaunchRouteTopk(call.p, call.b, stream).ok());
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  // A new placement: shift every table entry to another replica-owning rank's id.
  auto layout = ExpertLayout::Create({in.p.num_logical, 32, 32, 1, 1});
  PlacementMap map2 = testing::RandomPlacement(*layout, 1, rng);
  in.table = *BuildStaticDispatchRow(*layout, map2, 0, in.p.rank);
  call.table.Upload(in.table);
  ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  const HostOut<int32_t> want = RunRef<int32_t>(in);
  const HostOut<int32_t> got = call.Download();
  ExpectSameOutputs(got, want);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

}  // namespace
}  // namespace eplb
