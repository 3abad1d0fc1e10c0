// Launcher-only header of the helper kernels of the routing benchmark and tests
// (kernels/helper_kernels.cu).
#ifndef EPLB_KERNELS_HELPER_KERNELS_H_
#define EPLB_KERNELS_HELPER_KERNELS_H_

#include <cuda_runtime_api.h>

#include <cstdint>

namespace eplb {

// One block of 32 threads; thread 0 stores 1 to *p.
cudaError_t LaunchTouchKernel(int* p, cudaStream_t stream);

// 32-bit words to copy: n of them from src to dst.
struct CopySpan {
  const void* src = nullptr;
  void* dst = nullptr;
  int64_t n = 0;
};

// A stand-in for the router's top-k kernel, which writes the ids and weights a routing call
// reads: copies the words of both spans. With trigger_at_start, every block first lets a kernel
// launched after it with programmatic dependent launch start (as a PDL-aware router kernel
// would); otherwise such a kernel starts when this one ends. delay_us: every thread sleeps about
// this long before it copies (tests: a reader that does not wait then reads the old values).
cudaError_t LaunchCopyKernel(CopySpan first, CopySpan second, bool trigger_at_start, int delay_us,
                             cudaStream_t stream);

}  // namespace eplb

#endif  // EPLB_KERNELS_HELPER_KERNELS_H_
