// The route/count/remap/Waterfill kernels against their CPU twin (built from //core), bit for
// bit, on fresh random inputs each run, with poisoned outputs. CPU cases run everywhere; GPU
// cases skip without a device.
#include "kernels/route_topk.h"

#include <cstdint>
#include <random>
#include <vector>

#include "core/dispatch.h"
#include "core/expert_layout.h"
#include "core/placement_map.h"
#include "core/test_util.h"
#include "core/topk_postprocess.h"
#include "gtest/gtest.h"
#include "kernels/gpu_test_util.h"

namespace eplb {
namespace {

struct Case {
  int n, k, w, l, r, s;
  RouteDispatch dispatch;
  RouteWaterfill waterfill;
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

template <typename Id>
HostOut<Id> RunGpu(Inputs& in) {
  const size_t nk = in.logical.size();
  const size_t width = static_cast<size_t>(in.p.top_k + in.p.num_shared);
  std::vector<Id> logical(in.logical.begin(), in.logical.end());
  testing::DeviceBuffer<Id> d_logical(logical);
  testing::DeviceBuffer<float> d_w(in.routed_w);
  testing::DeviceBuffer<int32_t> d_table(in.table), d_rep(in.replicas), d_cnt(in.replica_count);
  testing::DeviceBuffer<Id> d_phys(nk), d_slots(static_cast<size_t>(in.p.num_tokens) * width);
  testing::DeviceBuffer<float> d_weights(static_cast<size_t>(in.p.num_tokens) * width);
  testing::DeviceBuffer<int64_t> d_counts(std::vector<int64_t>(in.p.num_physical, 5));
  testing::DeviceBuffer<int32_t> d_shared(in.p.num_tokens);
  testing::DeviceBuffer<char> d_ws(RouteTopkWorkspaceBytes(in.p.num_tokens, in.p.ep_size));
  d_phys.Fill(0x5A);  // poison: every element must be written
  d_slots.Fill(0x5A);
  d_weights.Fill(0x5A);
  d_shared.Fill(0x5A);
  d_ws.Fill(0);  // zeroed once, as the contract says
  RouteTopkParams p = in.p;
  p.static_table = d_table.get();
  p.replicas = d_rep.get();
  p.replica_count = d_cnt.get();
  RouteTopkBuffers<Id> b;
  b.logical = d_logical.get();
  b.routed_weights = d_w.get();
  b.physical = d_phys.get();
  b.counts = d_counts.get();
  b.slots = d_slots.get();
  b.weights = d_weights.get();
  b.shared_rank = d_shared.get();
  b.workspace = d_ws.get();
  // Two calls: the second must not see anything the first left in the workspace. Outputs are
  // poisoned again in between; the histogram accumulates twice.
  absl::Status s = LaunchRouteTopk(p, b, nullptr);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::vector<int64_t> once = d_counts.Download();
  d_phys.Fill(0x5A);
  d_slots.Fill(0x5A);
  d_weights.Fill(0x5A);
  d_shared.Fill(0x5A);
  s = LaunchRouteTopk(p, b, nullptr);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  HostOut<Id> o;
  o.physical = d_phys.Download();
  o.slots = d_slots.Download();
  o.weights = d_weights.Download();
  o.counts = d_counts.Download();
  for (size_t i = 0; i < o.counts.size(); ++i) {
    EXPECT_EQ(o.counts[i] - once[i], once[i] - 5) << "histogram of the second call, bin " << i;
    o.counts[i] = once[i];
  }
  o.shared_rank = d_shared.Download();
  return o;
}

template <typename Id>
void Compare(const Case& c, uint64_t seed) {
  SCOPED_TRACE(::testing::Message() << "EPLB_TEST_SEED=" << seed << " n=" << c.n << " k=" << c.k
                                    << " w=" << c.w << " l=" << c.l << " r=" << c.r << " s=" << c.s
                                    << " dispatch=" << static_cast<int>(c.dispatch) << " waterfill="
                                    << static_cast<int>(c.waterfill) << " id=" << sizeof(Id));
  std::mt19937_64 rng(seed);
  Inputs in = MakeInputs(c, rng);
  HostOut<Id> want = RunRef<Id>(in);
  HostOut<Id> got = RunGpu<Id>(in);
  EXPECT_EQ(got.physical, want.physical);
  EXPECT_EQ(got.counts, want.counts);
  EXPECT_EQ(got.slots, want.slots);
  EXPECT_EQ(got.weights, want.weights);
  if (c.n > 0) {
    EXPECT_EQ(got.shared_rank, want.shared_rank);
  }
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

// Captured once in a CUDA graph, replayed after the static table changed in place: the replay
// must see the new table (the kernels read it through the same pointer) and equal the twin.
TEST(RouteTopkGpuTest, GraphReplaySeesTableUpdatedInPlace) {
  EPLB_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(testing::FreshSeed());
  Case c{4096, 8, 32, 9, 32, 1, RouteDispatch::kStatic, RouteWaterfill::kSglang};
  Inputs in = MakeInputs(c, rng);
  std::vector<int32_t> logical(in.logical.begin(), in.logical.end());
  const size_t width = 9;
  testing::DeviceBuffer<int32_t> d_logical(logical), d_table(in.table);
  testing::DeviceBuffer<int32_t> d_phys(logical.size()), d_slots(4096 * width), d_shared(4096);
  testing::DeviceBuffer<float> d_weights(4096 * width);
  testing::DeviceBuffer<int64_t> d_counts(std::vector<int64_t>(in.p.num_physical, 0));
  testing::DeviceBuffer<char> d_ws(RouteTopkWorkspaceBytes(4096, 32));
  d_ws.Fill(0);
  RouteTopkParams p = in.p;
  p.static_table = d_table.get();
  RouteTopkBuffers<int32_t> b;
  b.logical = d_logical.get();
  b.physical = d_phys.get();
  b.counts = d_counts.get();
  b.slots = d_slots.get();
  b.weights = d_weights.get();
  b.shared_rank = d_shared.get();
  b.workspace = d_ws.get();
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  cudaGraph_t graph;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
  ASSERT_TRUE(LaunchRouteTopk(p, b, stream).ok());
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  // A new placement: shift every table entry to another replica-owning rank's id.
  auto layout = ExpertLayout::Create({in.p.num_logical, 32, 32, 1, 1});
  PlacementMap map2 = testing::RandomPlacement(*layout, 1, rng);
  in.table = *BuildStaticDispatchRow(*layout, map2, 0, in.p.rank);
  d_table.Upload(in.table);
  d_counts.Fill(0);
  ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  in.routed_w.clear();
  std::vector<int32_t> want_phys(logical.size()), want_slots(4096 * width), want_shared(4096);
  std::vector<float> want_w(4096 * width);
  std::vector<int64_t> want_counts(in.p.num_physical, 0);
  RouteTopkParams hp = in.p;
  hp.static_table = in.table.data();
  RouteTopkBuffers<int32_t> hb;
  hb.logical = logical.data();
  hb.physical = want_phys.data();
  hb.counts = want_counts.data();
  hb.slots = want_slots.data();
  hb.weights = want_w.data();
  hb.shared_rank = want_shared.data();
  ASSERT_TRUE(RouteTopkRef(hp, hb).ok());
  EXPECT_EQ(d_phys.Download(), want_phys);
  EXPECT_EQ(d_slots.Download(), want_slots);
  EXPECT_EQ(d_counts.Download(), want_counts);
  EXPECT_EQ(d_shared.Download(), want_shared);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

}  // namespace
}  // namespace eplb
