// Transfer bandwidth of the NCCL mover against a plain grouped NCCL send/recv of the same bytes
// between the same pairs, on every visible GPU. Rows of --row_mb (DeepSeek-V3 experts: 44 MB).
// The plan moves half of every rank's rows to the next rank. Prints a markdown row.
//
//   gpu_bundle/bin/nccl_mover_benchmark [--row_mb 44] [--rows 8]
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/move_plan.h"
#include "worker/nccl_mover.h"

namespace eplb {
namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int Main(int argc, char** argv) {
  int row_mb = 44, rows = 8;
  for (int i = 1; i + 1 < argc; ++i) {
    if (!std::strcmp(argv[i], "--row_mb")) row_mb = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--rows")) rows = std::atoi(argv[i + 1]);
  }
  int w = 0;
  cudaGetDeviceCount(&w);
  if (w < 2) {
    std::fprintf(stderr, "needs >= 2 GPUs\n");
    return 1;
  }
  const int64_t row_bytes = static_cast<int64_t>(row_mb) << 20;
  // E = W * rows (no redundancy): every row a distinct expert; rank r's first half of rows goes
  // to rank r+1 (and receives rank r-1's).
  ExpertLayout layout = *ExpertLayout::Create({w * rows, 0, w, 0, 1});
  std::vector<int32_t> before(w * rows), after(w * rows);
  for (int p = 0; p < w * rows; ++p) before[p] = p;
  after = before;
  for (int r = 0; r < w; ++r) {
    for (int j = 0; j < rows / 2; ++j) after[((r + 1) % w) * rows + j] = before[r * rows + j];
  }
  PlacementMap old_map = *PlacementMap::Create(w * rows, w * rows, {before});
  PlacementMap new_map = *PlacementMap::Create(w * rows, w * rows, {after});
  MovePlan plan = *BuildMovePlan(layout, old_map, new_map, {});
  auto mover = NcclMover::CreateSingleProcess(layout, {1, row_bytes, 32});
  if (!mover.ok()) {
    std::fprintf(stderr, "%s\n", mover.status().ToString().c_str());
    return 1;
  }
  NcclMover& m = **mover;
  std::vector<double> mover_s, plain_s;
  for (int it = 0; it < 12; ++it) {
    auto t0 = std::chrono::steady_clock::now();
    if (!m.Stage(plan, 0).ok() || !m.Synchronize().ok()) return 1;
    auto t1 = std::chrono::steady_clock::now();
    if (it >= 2) mover_s.push_back(std::chrono::duration<double>(t1 - t0).count());
  }
  // Plain NCCL: the same pairs and bytes, one group, into a scratch buffer per rank.
  std::vector<ncclComm_t> comms(w);
  std::vector<int> devs(w);
  for (int r = 0; r < w; ++r) devs[r] = r;
  ncclCommInitAll(comms.data(), w, devs.data());
  std::vector<cudaStream_t> streams(w);
  std::vector<uint8_t*> scratch(w);
  for (int r = 0; r < w; ++r) {
    cudaSetDevice(r);
    cudaStreamCreate(&streams[r]);
    cudaMalloc(&scratch[r], row_bytes * (rows / 2));
  }
  for (int it = 0; it < 12; ++it) {
    auto t0 = std::chrono::steady_clock::now();
    ncclGroupStart();
    for (int r = 0; r < w; ++r) {
      for (int j = 0; j < rows / 2; ++j) {
        ncclSend(m.Row(r, 0, j), row_bytes, ncclUint8, (r + 1) % w, comms[r], streams[r]);
        ncclRecv(scratch[r] + j * row_bytes, row_bytes, ncclUint8, (r + w - 1) % w, comms[r],
                 streams[r]);
      }
    }
    ncclGroupEnd();
    for (int r = 0; r < w; ++r) {
      cudaSetDevice(r);
      cudaStreamSynchronize(streams[r]);
    }
    auto t1 = std::chrono::steady_clock::now();
    if (it >= 2) plain_s.push_back(std::chrono::duration<double>(t1 - t0).count());
  }
  const double per_rank_bytes = static_cast<double>(row_bytes) * (rows / 2);
  const double mover_gbs = per_rank_bytes / Median(mover_s) / 1e9;
  const double plain_gbs = per_rank_bytes / Median(plain_s) / 1e9;
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  std::printf("| %s x%d | %d MB x %d rows per rank | %.1f GB/s | %.1f GB/s | %.0f%% |\n", prop.name,
              w, row_mb, rows / 2, mover_gbs, plain_gbs, 100.0 * mover_gbs / plain_gbs);
  for (int r = 0; r < w; ++r) ncclCommDestroy(comms[r]);
  return 0;
}

}  // namespace
}  // namespace eplb

int main(int argc, char** argv) { return eplb::Main(argc, argv); }
