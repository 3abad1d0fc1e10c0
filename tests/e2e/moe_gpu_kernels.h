// Kernels of the GPU end-to-end MoE layer (tests/e2e): seeded inputs and router, top-k,
// gather/scatter of token rows, a GEMM whose every output is accumulated in one fixed order
// (so an expert's output for a token is the same bits whichever batch the token is in), SwiGLU
// and the weighted combine. Launcher-only header; all launches are asynchronous on `stream`.
#ifndef EPLB_TESTS_E2E_MOE_GPU_KERNELS_H_
#define EPLB_TESTS_E2E_MOE_GPU_KERNELS_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"

namespace eplb {
namespace e2e {

// x[T][H] uniform in [-1.7, 1.7]; logits[T][E] = noise + bias for the hot experts; all a pure
// function of (seed, step, layer, rank, token, column).
absl::Status LaunchMoeInputs(uint64_t seed, int step, int layer, int rank, int tokens, int hidden,
                             int experts, int hot1, int hot2, float* x, float* logits,
                             cudaStream_t stream);
// Top-k of each row (ties: lower index), softmax over the k chosen: ids[T][K], weights[T][K].
// Lets a kernel launched after it with programmatic dependent launch start at once.
absl::Status LaunchTopkSoftmax(const float* logits, int tokens, int experts, int k, int32_t* ids,
                               float* weights, cudaStream_t stream);
// out[i] = in[index[i]] (rows of `width` floats).
absl::Status LaunchGatherRows(const float* in, const int32_t* index, int n, int width, float* out,
                              cudaStream_t stream);
// out[index[i]] = in[i].
absl::Status LaunchScatterRows(const float* in, const int32_t* index, int n, int width, float* out,
                               cudaStream_t stream);
// C[n][m] = sum_k A[n][k] * B[m][k], k ascending in one thread per output.
absl::Status LaunchGemmNT(const float* a, const float* b, int n, int m, int k, float* c,
                          cudaStream_t stream);
// out[n][I] = silu(in[n][i]) * in[n][I + i].
absl::Status LaunchSwiGlu(const float* in, int n, int inter, float* out, cudaStream_t stream);
// out[t] = sum over columns c (ascending) with valid[t][c] of w[t][c] * y[t][c] (y [T][C][H]).
absl::Status LaunchCombine(const float* y, const float* w, const int32_t* valid, int tokens,
                           int columns, int hidden, float* out, cudaStream_t stream);

}  // namespace e2e
}  // namespace eplb

#endif  // EPLB_TESTS_E2E_MOE_GPU_KERNELS_H_
