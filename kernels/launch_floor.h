// Launcher-only header of the benchmark's launch-floor kernel (kernels/launch_floor.cu).
#ifndef EPLB_KERNELS_LAUNCH_FLOOR_H_
#define EPLB_KERNELS_LAUNCH_FLOOR_H_

#include <cuda_runtime_api.h>

namespace eplb {

// One block of 32 threads; thread 0 stores 1 to *p.
cudaError_t LaunchTouchKernel(int* p, cudaStream_t stream);

}  // namespace eplb

#endif  // EPLB_KERNELS_LAUNCH_FLOOR_H_
