#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda_status.h"
#include "kernels/load_histogram.h"

namespace eplb {
namespace {

constexpr int kThreads = 256;
// Shared-memory privatised counters up to this many physical experts (32 KiB of int32).
constexpr int kMaxSharedBins = 8192;

template <typename Id, bool kShared>
__global__ void LoadHistogramKernel(const Id* __restrict__ ids, int64_t n, int num_physical,
                                    unsigned long long* __restrict__ counts,
                                    unsigned long long* __restrict__ out_of_range) {
  extern __shared__ unsigned int bins[];
  if (kShared) {
    for (int i = threadIdx.x; i < num_physical; i += blockDim.x) bins[i] = 0;
    __syncthreads();
  }
  unsigned int bad = 0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const Id id = ids[i];
    if (id < 0) continue;
    if (id >= num_physical) {
      ++bad;
      continue;
    }
    if (kShared) {
      atomicAdd(&bins[id], 1u);
    } else {
      atomicAdd(&counts[id], 1ull);
    }
  }
  if (bad != 0 && out_of_range != nullptr)
    atomicAdd(out_of_range, static_cast<unsigned long long>(bad));
  if (kShared) {
    __syncthreads();
    for (int i = threadIdx.x; i < num_physical; i += blockDim.x) {
      if (bins[i] != 0) atomicAdd(&counts[i], static_cast<unsigned long long>(bins[i]));
    }
  }
}

template <typename Id>
absl::Status Launch(const Id* ids, int64_t n, int num_physical, int64_t* counts,
                    int64_t* out_of_range, cudaStream_t stream) {
  if (n < 0 || num_physical <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "histogram needs n >= 0 and num_physical > 0, got n=", n, " num_physical=", num_physical));
  }
  if (n == 0) return absl::OkStatus();
  // Enough blocks to fill the GPU at prefill sizes, few at decode sizes (each block clears and
  // flushes its private bins, so extra blocks cost).
  const int64_t wanted = (n + kThreads * 4 - 1) / (kThreads * 4);
  const int blocks = static_cast<int>(wanted < 264 ? wanted : 264);
  auto* c = reinterpret_cast<unsigned long long*>(counts);
  auto* bad = reinterpret_cast<unsigned long long*>(out_of_range);
  if (num_physical <= kMaxSharedBins) {
    LoadHistogramKernel<Id, true>
        <<<blocks, kThreads, num_physical * sizeof(unsigned int), stream>>>(ids, n, num_physical, c,
                                                                            bad);
  } else {
    LoadHistogramKernel<Id, false><<<blocks, kThreads, 0, stream>>>(ids, n, num_physical, c, bad);
  }
  EPLB_CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

}  // namespace

absl::Status LaunchLoadHistogram(const int32_t* ids, int64_t n, int num_physical, int64_t* counts,
                                 int64_t* out_of_range, cudaStream_t stream) {
  return Launch(ids, n, num_physical, counts, out_of_range, stream);
}

absl::Status LaunchLoadHistogram(const int64_t* ids, int64_t n, int num_physical, int64_t* counts,
                                 int64_t* out_of_range, cudaStream_t stream) {
  return Launch(ids, n, num_physical, counts, out_of_range, stream);
}

}  // namespace eplb
