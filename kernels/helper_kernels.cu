// Helper kernels of the routing benchmark and tests: one that does nothing but store one word
// (the launch floor quoted beside the timings: a kernel node in a graph, not only a memset
// node), and a copy that stands in for the router's kernel before a routing call.
#include <algorithm>

#include "kernels/helper_kernels.h"

namespace eplb {
namespace {

__global__ void TouchKernel(int* p) {
  if (threadIdx.x == 0) *p = 1;
}

__device__ void CopyWords(const CopySpan& c) {
  const int32_t* src = static_cast<const int32_t*>(c.src);
  int32_t* dst = static_cast<int32_t*>(c.dst);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < c.n;
       i += stride) {
    dst[i] = src[i];
  }
}

__global__ void CopyKernel(const CopySpan first, const CopySpan second, bool trigger_at_start,
                           int delay_us) {
  if (trigger_at_start) cudaTriggerProgrammaticLaunchCompletion();
  for (int i = 0; i < delay_us; ++i) __nanosleep(1000);
  CopyWords(first);
  CopyWords(second);
}

}  // namespace

cudaError_t LaunchTouchKernel(int* p, cudaStream_t stream) {
  TouchKernel<<<1, 32, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t LaunchCopyKernel(CopySpan first, CopySpan second, bool trigger_at_start, int delay_us,
                             cudaStream_t stream) {
  int64_t blocks = (std::max(first.n, second.n) + 255) / 256;
  if (blocks > 1024) blocks = 1024;
  if (blocks < 1) blocks = 1;
  CopyKernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(first, second, trigger_at_start,
                                                                delay_us);
  return cudaGetLastError();
}

}  // namespace eplb
