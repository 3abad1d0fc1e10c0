#include "common/mutex.h"

#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace eplb {
namespace {

TEST(MutexTest, AwaitWakesOnConditionAndCountsAreExact) {
  Mutex mu;
  int produced = 0;
  int consumed = 0;
  std::thread consumer([&] {
    for (int i = 0; i < 1000; ++i) {
      MutexLock l(&mu);
      mu.Await([&] { return produced > consumed; });
      ++consumed;
    }
  });
  std::vector<std::thread> producers;
  for (int p = 0; p < 4; ++p) {
    producers.emplace_back([&] {
      for (int i = 0; i < 250; ++i) {
        MutexLock l(&mu);
        ++produced;
      }
    });
  }
  for (auto& t : producers) t.join();
  consumer.join();
  MutexLock l(&mu);
  EXPECT_EQ(produced, 1000);
  EXPECT_EQ(consumed, 1000);
}

TEST(MutexTest, AwaitWithTimeoutReturnsFalseWhenTheConditionNeverHolds) {
  Mutex mu;
  MutexLock l(&mu);
  EXPECT_FALSE(mu.AwaitWithTimeout([] { return false; }, absl::Milliseconds(20)));
  EXPECT_TRUE(mu.AwaitWithTimeout([] { return true; }, absl::Milliseconds(20)));
}

}  // namespace
}  // namespace eplb
