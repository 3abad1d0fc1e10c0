// The NCCL mover on every visible GPU (one rank each), over random old/new maps: after the move
// every routed row holds the new map's expert (by fingerprint of the checkpoint's bytes), shared
// rows and unchanged rows keep their bytes. Tag multi_gpu: needs >= 2 GPUs; skips otherwise.
#include "worker/nccl_mover.h"

#include <cuda_runtime_api.h>

#include <random>
#include <vector>

#include "core/move_plan.h"
#include "core/test_util.h"
#include "gtest/gtest.h"
#include "worker/expert_store.h"

namespace eplb {
namespace {

int Gpus() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

void Upload(NcclMover& m, int rank, int layer, int row, int64_t checkpoint_id) {
  std::vector<uint8_t> buf(m.row_bytes());
  SyntheticCheckpoint(layer, checkpoint_id, buf.data(), m.row_bytes());
  ASSERT_EQ(cudaSetDevice(rank), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(m.Row(rank, layer, row), buf.data(), buf.size(), cudaMemcpyHostToDevice),
            cudaSuccess);
}

uint64_t DeviceFingerprint(NcclMover& m, int rank, int layer, int row) {
  std::vector<uint8_t> buf(m.row_bytes());
  cudaSetDevice(rank);
  cudaMemcpy(buf.data(), m.Row(rank, layer, row), buf.size(), cudaMemcpyDeviceToHost);
  return RowFingerprint(buf.data(), m.row_bytes());
}

uint64_t CheckpointFingerprint(int layer, int64_t id, int64_t bytes) {
  std::vector<uint8_t> buf(bytes);
  SyntheticCheckpoint(layer, id, buf.data(), bytes);
  return RowFingerprint(buf.data(), bytes);
}

void RunCase(int w, int rows, int redundant_per_rank, int64_t row_bytes, int window,
             std::mt19937_64& rng) {
  const int e = w * (rows - redundant_per_rank);
  ExpertLayout layout = *ExpertLayout::Create({e, w * redundant_per_rank, w, 1, w >= 4 ? 2 : 1});
  const int layers = 2;
  PlacementMap old_map = testing::RandomPlacement(layout, layers, rng);
  PlacementMap new_map = testing::RandomPlacement(layout, layers, rng);
  auto mover = NcclMover::CreateSingleProcess(layout, {layers, row_bytes, window});
  ASSERT_TRUE(mover.ok()) << mover.status();
  NcclMover& m = **mover;
  const int l = layout.routed_slots_per_rank();
  for (int r = 0; r < w; ++r) {
    for (int layer = 0; layer < layers; ++layer) {
      for (int row = 0; row < l; ++row) {
        Upload(m, r, layer, row, old_map.physical_to_logical(layer)[r * l + row]);
      }
      Upload(m, r, layer, l, e);  // the shared expert's row
    }
  }
  auto plan = BuildMovePlan(layout, old_map, new_map, {});
  ASSERT_TRUE(plan.ok());
  for (int layer = 0; layer < layers; ++layer) {
    ASSERT_TRUE(m.Stage(*plan, layer).ok());
    ASSERT_TRUE(m.Commit(*plan, layer).ok());
  }
  ASSERT_TRUE(m.Synchronize().ok());
  for (int r = 0; r < w; ++r) {
    for (int layer = 0; layer < layers; ++layer) {
      for (int row = 0; row < l; ++row) {
        EXPECT_EQ(DeviceFingerprint(m, r, layer, row),
                  CheckpointFingerprint(layer, new_map.physical_to_logical(layer)[r * l + row],
                                        row_bytes))
            << "rank " << r << " layer " << layer << " row " << row;
      }
      EXPECT_EQ(DeviceFingerprint(m, r, layer, l), CheckpointFingerprint(layer, e, row_bytes))
          << "shared row of rank " << r;
    }
  }
}

TEST(NcclMoverTest, RandomMapsOnAllGpus) {
  const int w = Gpus();
  if (w < 2) GTEST_SKIP() << "needs >= 2 GPUs, " << w << " visible";
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "EPLB_TEST_SEED=" << seed << " gpus=" << w);
  std::mt19937_64 rng(seed);
  for (int trial = 0; trial < 10; ++trial) RunCase(w, 4, 1, 4096 + 64 * trial, 32, rng);
  // Large rows and a small window: many NCCL groups per layer.
  RunCase(w, 9, 1, 8 << 20, 3, rng);
}

}  // namespace
}  // namespace eplb
