// The histogram kernel against its CPU twin on fresh random inputs each run. CPU cases always
// run; GPU cases skip on machines without a device.
#include "kernels/load_histogram.h"

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "core/test_util.h"
#include "gtest/gtest.h"
#include "kernels/gpu_test_util.h"

namespace eplb {
namespace {

template <typename Id>
std::vector<Id> RandomIds(std::mt19937_64& rng, int64_t n, int num_physical, double skew) {
  std::vector<Id> ids(n);
  std::uniform_real_distribution<double> u(0, 1);
  for (auto& id : ids) {
    const double x = u(rng);
    if (x < 0.05) {
      id = -1;  // padding
    } else {
      id = static_cast<Id>(std::pow(u(rng), skew) * num_physical);
    }
  }
  return ids;
}

TEST(LoadHistogramRefTest, CountsSkipsPaddingAndReportsOutOfRange) {
  const std::vector<int32_t> ids = {0, 3, 3, -1, 5, 2, 3, -7};
  std::vector<int64_t> counts(5, 0);
  int64_t bad = 0;
  LoadHistogramRef<int32_t>(ids, 5, absl::MakeSpan(counts), &bad);
  EXPECT_EQ(counts, (std::vector<int64_t>{1, 0, 1, 3, 0}));
  EXPECT_EQ(bad, 1);
}

template <typename Id>
void CheckAgainstTwin(int64_t n, int num_physical) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message()
               << "EPLB_TEST_SEED=" << seed << " n=" << n << " P=" << num_physical);
  std::mt19937_64 rng(seed);
  std::vector<Id> ids = RandomIds<Id>(rng, n, num_physical, 2.0);
  if (n > 10) ids[n / 2] = static_cast<Id>(num_physical + 3);  // one out of range
  std::vector<int64_t> base(num_physical);
  for (auto& c : base) c = std::uniform_int_distribution<int64_t>(0, 1000)(rng);
  std::vector<int64_t> want = base;
  int64_t want_bad = 0;
  LoadHistogramRef<Id>(ids, num_physical, absl::MakeSpan(want), &want_bad);

  testing::DeviceBuffer<Id> d_ids(ids);
  testing::DeviceBuffer<int64_t> d_counts(base);  // accumulates onto existing counts
  testing::DeviceBuffer<int64_t> d_bad(std::vector<int64_t>{0});
  ASSERT_TRUE(
      LaunchLoadHistogram(d_ids.get(), n, num_physical, d_counts.get(), d_bad.get(), nullptr).ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(d_counts.Download(), want);
  EXPECT_EQ(d_bad.Download()[0], want_bad);
}

TEST(LoadHistogramGpuTest, MatchesTwinInt32) {
  EPLB_SKIP_WITHOUT_GPU();
  for (int64_t n : {1, 64 * 8, 4096 * 8, 65536 * 8}) {
    for (int p : {16, 288, 9000}) CheckAgainstTwin<int32_t>(n, p);
  }
}

TEST(LoadHistogramGpuTest, MatchesTwinInt64) {
  EPLB_SKIP_WITHOUT_GPU();
  for (int64_t n : {7, 512 * 8, 65536 * 16}) {
    for (int p : {288, 4096}) CheckAgainstTwin<int64_t>(n, p);
  }
}

TEST(LoadHistogramGpuTest, RejectsBadArguments) {
  EPLB_SKIP_WITHOUT_GPU();
  EXPECT_EQ(
      LaunchLoadHistogram(static_cast<const int32_t*>(nullptr), -1, 8, nullptr, nullptr, nullptr)
          .code(),
      absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace eplb
