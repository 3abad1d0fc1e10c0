// CUDA and NCCL errors as absl::Status with file:line context. CUDA/NCCL calls in our code go
// only through these macros; nothing aborts or throws.
//
//   absl::Status Copy(void* dst, const void* src, size_t n, cudaStream_t s) {
//     EPLB_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, n, cudaMemcpyDefault, s));
//     return absl::OkStatus();
//   }
#ifndef EPLB_KERNELS_CUDA_STATUS_H_
#define EPLB_KERNELS_CUDA_STATUS_H_

#include <cuda_runtime_api.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace eplb {

inline absl::Status CudaStatus(cudaError_t err, const char* expr, const char* file, int line) {
  if (err == cudaSuccess) return absl::OkStatus();
  // No device or no driver is a precondition of the machine, not an internal fault.
  const absl::StatusCode code = (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver)
                                    ? absl::StatusCode::kFailedPrecondition
                                    : absl::StatusCode::kInternal;
  return absl::Status(code, absl::StrCat(file, ":", line, ": ", expr, ": ", cudaGetErrorName(err),
                                         ": ", cudaGetErrorString(err)));
}

// True when a CUDA device is usable here (false on machines with no GPU or driver).
inline bool CudaDeviceAvailable() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

}  // namespace eplb

#define EPLB_CUDA_RETURN_IF_ERROR(expr)                                                       \
  do {                                                                                        \
    ::absl::Status eplb_cuda_status_ = ::eplb::CudaStatus((expr), #expr, __FILE__, __LINE__); \
    if (!eplb_cuda_status_.ok()) return eplb_cuda_status_;                                    \
  } while (false)

// After a kernel launch: the launch error, if any.
#define EPLB_CUDA_RETURN_IF_LAUNCH_ERROR() EPLB_CUDA_RETURN_IF_ERROR(cudaGetLastError())

#endif  // EPLB_KERNELS_CUDA_STATUS_H_
