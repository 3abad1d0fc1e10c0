// EPLB_HOST_DEVICE marks small inline functions that the CPU reference and the CUDA kernels
// share verbatim (hashes, index maps), so the twins cannot drift apart.
#ifndef EPLB_CORE_HOST_DEVICE_H_
#define EPLB_CORE_HOST_DEVICE_H_

#ifdef __CUDACC__
#define EPLB_HOST_DEVICE __host__ __device__
#else
#define EPLB_HOST_DEVICE
#endif

#endif  // EPLB_CORE_HOST_DEVICE_H_
