// Load histogram: per-layer counts of routed physical expert ids (spec/DOMAIN.md section 3).
// Launcher-only header (plain C++); the kernel is in load_histogram.cu, the CPU twin here.
//
//   counts[p] += |{i : ids[i] == p}| for p in [0, num_physical); ids < 0 are padding, skipped.
//   Ids >= num_physical are a caller bug: counted nowhere, reported in `*out_of_range` if given.
//
// The launch makes no host synchronisation and reads/writes only device buffers, so it can be
// captured in a CUDA graph.
//
//   EPLB_RETURN_IF_ERROR(LaunchLoadHistogram(d_ids, n, P, d_counts, stream));
#ifndef EPLB_KERNELS_LOAD_HISTOGRAM_H_
#define EPLB_KERNELS_LOAD_HISTOGRAM_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace eplb {

// ids: device pointer to n int32 or int64 physical ids; counts: device pointer to num_physical
// int64 accumulators (not cleared); out_of_range: optional device int64 accumulator.
absl::Status LaunchLoadHistogram(const int32_t* ids, int64_t n, int num_physical, int64_t* counts,
                                 int64_t* out_of_range, cudaStream_t stream);
absl::Status LaunchLoadHistogram(const int64_t* ids, int64_t n, int num_physical, int64_t* counts,
                                 int64_t* out_of_range, cudaStream_t stream);

// CPU twin: the same contract on host memory.
template <typename Id>
void LoadHistogramRef(absl::Span<const Id> ids, int num_physical, absl::Span<int64_t> counts,
                      int64_t* out_of_range) {
  for (Id id : ids) {
    if (id < 0) continue;
    if (id >= num_physical) {
      if (out_of_range != nullptr) ++*out_of_range;
      continue;
    }
    ++counts[static_cast<size_t>(id)];
  }
}

}  // namespace eplb

#endif  // EPLB_KERNELS_LOAD_HISTOGRAM_H_
