// Helpers for kernel tests: device buffers with RAII, fresh random seeds, skip without a GPU.
#ifndef EPLB_KERNELS_GPU_TEST_UTIL_H_
#define EPLB_KERNELS_GPU_TEST_UTIL_H_

#include <cuda_runtime_api.h>

#include <cstdint>
#include <sstream>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda_status.h"

namespace eplb {
namespace testing {

// Skips the current test when no CUDA device is usable (CPU-only machines, CI).
#define EPLB_SKIP_WITHOUT_GPU()                                           \
  do {                                                                    \
    if (!::eplb::CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device"; \
  } while (false)

template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t n) : n_(n) {
    if (n_ > 0) {
      EXPECT_EQ(cudaMalloc(&ptr_, n_ * sizeof(T)), cudaSuccess);
    }
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { Upload(host); }
  ~DeviceBuffer() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  T* get() const { return static_cast<T*>(ptr_); }
  size_t size() const { return n_; }
  void Upload(const std::vector<T>& host) {
    ASSERT_EQ(host.size(), n_);
    if (n_ > 0) {
      ASSERT_EQ(cudaMemcpy(ptr_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
    }
  }
  std::vector<T> Download() const {
    std::vector<T> host(n_);
    if (n_ > 0) {
      EXPECT_EQ(cudaMemcpy(host.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    }
    return host;
  }
  // Fills every byte with `byte` (poison: catches elements a kernel never writes).
  void Fill(int byte) {
    if (n_ > 0) {
      ASSERT_EQ(cudaMemset(ptr_, byte, n_ * sizeof(T)), cudaSuccess);
    }
  }

 private:
  size_t n_;
  void* ptr_ = nullptr;
};

// Element-wise comparison that reports how many elements differ and the first few (index, got,
// want), instead of printing whole vectors of a million elements.
template <typename T>
::testing::AssertionResult SameElements(const std::vector<T>& got, const std::vector<T>& want) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << "size " << got.size() << ", expected " << want.size();
  }
  size_t differ = 0;
  std::ostringstream first;
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] == want[i]) continue;
    if (++differ <= 8) first << " [" << i << "] " << +got[i] << " (want " << +want[i] << ")";
  }
  if (differ == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << differ << " of " << got.size() << " elements differ; first:" << first.str();
}

}  // namespace testing
}  // namespace eplb

#endif  // EPLB_KERNELS_GPU_TEST_UTIL_H_
