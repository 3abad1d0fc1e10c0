#include <algorithm>

#include "kernels/cuda_status.h"
#include "tests/e2e/moe_gpu_kernels.h"

namespace eplb {
namespace e2e {
namespace {

__device__ __forceinline__ uint64_t Mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

__device__ __forceinline__ float Unit(uint64_t h) {  // [-1, 1)
  return static_cast<float>(h >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

__global__ void InputsKernel(uint64_t seed, int step, int layer, int rank, int tokens, int hidden,
                             int experts, int hot1, int hot2, float* x, float* logits) {
  const uint64_t base =
      Mix(seed ^ Mix(static_cast<uint64_t>(step) * 1000003ull + layer * 8191ull + rank * 131ull));
  const int64_t nx = static_cast<int64_t>(tokens) * hidden;
  const int64_t nl = static_cast<int64_t>(tokens) * experts;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < nx + nl;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint64_t h = Mix(base + static_cast<uint64_t>(i));
    if (i < nx) {
      x[i] = 1.7f * Unit(h);
    } else {
      const int64_t j = i - nx;
      const int e = static_cast<int>(j % experts);
      const float bias = e == hot1 ? 2.0f : (e == hot2 ? 1.2f : 0.05f * (e % 5));
      logits[j] = Unit(h) + 0.5f * Unit(Mix(h)) + bias;
    }
  }
}

__global__ void TopkKernel(const float* logits, int tokens, int experts, int k, int32_t* ids,
                           float* weights) {
  // A kernel launched after this one with programmatic dependent launch (the routing kernel
  // with overlap_previous) may start now; it waits for this one before it reads the ids.
  cudaTriggerProgrammaticLaunchCompletion();
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= tokens) return;
  const float* row = logits + static_cast<int64_t>(t) * experts;
  uint64_t taken[2] = {0, 0};  // experts <= 128
  float top[16];
  int idx[16];
  for (int j = 0; j < k; ++j) {
    int best = -1;
    float bv = 0;
    for (int e = 0; e < experts; ++e) {
      if ((taken[e >> 6] >> (e & 63)) & 1) continue;
      if (best < 0 || row[e] > bv) {
        best = e;
        bv = row[e];
      }
    }
    taken[best >> 6] |= 1ull << (best & 63);
    top[j] = bv;
    idx[j] = best;
  }
  float sum = 0;
  for (int j = 0; j < k; ++j) sum += expf(top[j] - top[0]);
  for (int j = 0; j < k; ++j) {
    ids[static_cast<int64_t>(t) * k + j] = idx[j];
    weights[static_cast<int64_t>(t) * k + j] = expf(top[j] - top[0]) / sum;
  }
}

__global__ void GatherKernel(const float* in, const int32_t* index, int n, int width, float* out) {
  for (int i = blockIdx.x; i < n; i += gridDim.x) {
    const float* src = in + static_cast<int64_t>(index[i]) * width;
    float* dst = out + static_cast<int64_t>(i) * width;
    for (int j = threadIdx.x; j < width; j += blockDim.x) dst[j] = src[j];
  }
}

__global__ void ScatterKernel(const float* in, const int32_t* index, int n, int width, float* out) {
  for (int i = blockIdx.x; i < n; i += gridDim.x) {
    const float* src = in + static_cast<int64_t>(i) * width;
    float* dst = out + static_cast<int64_t>(index[i]) * width;
    for (int j = threadIdx.x; j < width; j += blockDim.x) dst[j] = src[j];
  }
}

constexpr int kBm = 64, kBn = 64, kBk = 16;

// 256 threads, 4x4 outputs each. Every output accumulates k = 0, 1, ..., K-1 in order.
__global__ void __launch_bounds__(256)
    GemmNTKernel(const float* a, const float* b, int n, int m, int k, float* c) {
  __shared__ float as[kBk][kBm + 4];
  __shared__ float bs[kBk][kBn + 4];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int n0 = blockIdx.y * kBm, m0 = blockIdx.x * kBn;
  float acc[4][4] = {};
  for (int k0 = 0; k0 < k; k0 += kBk) {
    for (int i = threadIdx.x; i < kBm * kBk; i += 256) {
      const int r = i / kBk, col = i % kBk;
      const int row_a = n0 + r, row_b = m0 + r, kk = k0 + col;
      as[col][r] = (row_a < n && kk < k) ? a[static_cast<int64_t>(row_a) * k + kk] : 0.0f;
      bs[col][r] = (row_b < m && kk < k) ? b[static_cast<int64_t>(row_b) * k + kk] : 0.0f;
    }
    __syncthreads();
    const int kend = min(kBk, k - k0);
    for (int kk = 0; kk < kend; ++kk) {
      float av[4], bv[4];
      for (int i = 0; i < 4; ++i) av[i] = as[kk][ty * 4 + i];
      for (int j = 0; j < 4; ++j) bv[j] = bs[kk][tx * 4 + j];
      for (int i = 0; i < 4; ++i) {
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
      }
    }
    __syncthreads();
  }
  for (int i = 0; i < 4; ++i) {
    const int row = n0 + ty * 4 + i;
    if (row >= n) continue;
    for (int j = 0; j < 4; ++j) {
      const int col = m0 + tx * 4 + j;
      if (col < m) c[static_cast<int64_t>(row) * m + col] = acc[i][j];
    }
  }
}

__global__ void SwiGluKernel(const float* in, int n, int inter, float* out) {
  const int64_t total = static_cast<int64_t>(n) * inter;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / inter, j = i % inter;
    const float g = in[r * 2 * inter + j];
    const float u = in[r * 2 * inter + inter + j];
    out[i] = g / (1.0f + expf(-g)) * u;
  }
}

__global__ void CombineKernel(const float* y, const float* w, const int32_t* valid, int tokens,
                              int columns, int hidden, float* out) {
  const int t = blockIdx.x;
  if (t >= tokens) return;
  for (int j = threadIdx.x; j < hidden; j += blockDim.x) {
    float acc = 0.0f;
    for (int c = 0; c < columns; ++c) {
      const int64_t tc = static_cast<int64_t>(t) * columns + c;
      if (valid[tc]) acc = fmaf(w[tc], y[tc * hidden + j], acc);
    }
    out[static_cast<int64_t>(t) * hidden + j] = acc;
  }
}

int Blocks(int64_t work, int threads) {
  return static_cast<int>(std::min<int64_t>((work + threads - 1) / threads, 4096));
}

}  // namespace

absl::Status LaunchMoeInputs(uint64_t seed, int step, int layer, int rank, int tokens, int hidden,
                             int experts, int hot1, int hot2, float* x, float* logits,
                             cudaStream_t stream) {
  const int64_t work = static_cast<int64_t>(tokens) * (hidden + experts);
  if (work == 0) return absl::OkStatus();
  InputsKernel<<<Blocks(work, 256), 256, 0, stream>>>(seed, step, layer, rank, tokens, hidden,
                                                      experts, hot1, hot2, x, logits);
  EPLB_CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

absl::Status LaunchTopkSoftmax(const float* logits, int tokens, int experts, int k, int32_t* ids,
                               float* weights, cudaStream_t stream) {
  if (experts > 128 || k > 16 || k > experts) {
    return absl::InvalidArgumentError("top-k kernel: experts <= 128 and k <= min(16, experts)");
  }
  if (tokens == 0) return absl::OkStatus();
  TopkKernel<<<(tokens + 127) / 128, 128, 0, stream>>>(logits, tokens, experts, k, ids, weights);
  EPLB_CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

absl::Status LaunchGatherRows(const float* in, const int32_t* index, int n, int width, float* out,
                              cudaStream_t stream) {
  if (n == 0) return absl::OkStatus();
  GatherKernel<<<std::min(n, 4096), 256, 0, stream>>>(in, index, n, width, out);
  EPLB_CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

absl::Status LaunchScatterRows(const float* in, const int32_t* index, int n, int width, float* out,
                               cudaStream_t stream) {
  if (n == 0) return absl::OkStatus();
  ScatterKernel<<<std::min(n, 4096), 256, 0, stream>>>(in, index, n, width, out);
  EPLB_CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

absl::Status LaunchGemmNT(const float* a, const float* b, int n, int m, int k, float* c,
                          cudaStream_t stream) {
  if (n == 0) return absl::OkStatus();
  dim3 grid((m + kBn - 1) / kBn, (n + kBm - 1) / kBm);
  GemmNTKernel<<<grid, 256, 0, stream>>>(a, b, n, m, k, c);
  EPLB_CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

absl::Status LaunchSwiGlu(const float* in, int n, int inter, float* out, cudaStream_t stream) {
  if (n == 0) return absl::OkStatus();
  SwiGluKernel<<<Blocks(static_cast<int64_t>(n) * inter, 256), 256, 0, stream>>>(in, n, inter, out);
  EPLB_CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

absl::Status LaunchCombine(const float* y, const float* w, const int32_t* valid, int tokens,
                           int columns, int hidden, float* out, cudaStream_t stream) {
  if (tokens == 0) return absl::OkStatus();
  CombineKernel<<<tokens, 256, 0, stream>>>(y, w, valid, tokens, columns, hidden, out);
  EPLB_CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

}  // namespace e2e
}  // namespace eplb
