// Bounded fuzzing of the load parser and the planner, run in CI: mutated load files and random
// shapes must give either a clear error or a valid plan, never a crash or an invalid map.
// Fresh seed each run (printed); EPLB_TEST_SEED replays one. Stops after ~3 s.
#include <chrono>
#include <random>
#include <string>
#include <vector>

#include "core/formats.h"
#include "core/placement_map.h"
#include "core/test_util.h"
#include "eplb_controller/placement/placement.h"
#include "gtest/gtest.h"

namespace eplb {
namespace placement {
namespace {

std::string Mutate(std::string s, std::mt19937_64& rng) {
  static const char* kTokens[] = {"-",  "1e999", "nan", "[",    "]",  ",",  "\"x\"",
                                  "{}", "0.5",   "-3",  "null", "[[", "]]", "9999999999"};
  const int edits = std::uniform_int_distribution<int>(1, 4)(rng);
  for (int i = 0; i < edits && !s.empty(); ++i) {
    const size_t at = std::uniform_int_distribution<size_t>(0, s.size() - 1)(rng);
    switch (std::uniform_int_distribution<int>(0, 3)(rng)) {
      case 0:
        s[at] = static_cast<char>(std::uniform_int_distribution<int>(32, 126)(rng));
        break;
      case 1:
        s.erase(at, std::uniform_int_distribution<size_t>(1, 8)(rng));
        break;
      case 2:
        s.insert(at, kTokens[std::uniform_int_distribution<int>(0, 13)(rng)]);
        break;
      default:
        s.resize(at);
    }
  }
  return s;
}

std::string RandomLoadJson(std::mt19937_64& rng, int layers, int experts) {
  std::string s = "{\"logical_count\": [";
  for (int l = 0; l < layers; ++l) {
    s += l ? ",[" : "[";
    for (int e = 0; e < experts; ++e) {
      s += (e ? "," : "") + std::to_string(std::uniform_int_distribution<int>(0, 5000)(rng));
    }
    s += "]";
  }
  return s + "]}";
}

TEST(PlanFuzzTest, ParserAndPlannerNeverCrashAndNeverReturnInvalidMaps) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "EPLB_TEST_SEED=" << seed);
  std::mt19937_64 rng(seed);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  int parsed = 0, planned = 0, iterations = 0;
  while (std::chrono::steady_clock::now() < deadline && iterations < 20000) {
    ++iterations;
    const int layers = std::uniform_int_distribution<int>(1, 3)(rng);
    const int experts = std::uniform_int_distribution<int>(1, 24)(rng);
    std::string text = RandomLoadJson(rng, layers, experts);
    if (iterations % 2 == 0) text = Mutate(text, rng);
    auto load = ParseLoadJson(text);
    if (!load.ok()) {
      EXPECT_EQ(load.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_FALSE(load.status().message().empty());
      continue;
    }
    ++parsed;
    const int e_count = static_cast<int>((*load)[0].size());
    Problem pr;
    pr.load = &*load;
    pr.ep_size = std::uniform_int_distribution<int>(1, 8)(rng);
    pr.num_physical = std::uniform_int_distribution<int>(0, 40)(rng);
    pr.num_nodes = std::uniform_int_distribution<int>(1, 3)(rng);
    pr.num_groups = std::uniform_int_distribution<int>(1, 4)(rng);
    if (std::uniform_int_distribution<int>(0, 3)(rng) == 0) {
      pr.dead_ranks.push_back(std::uniform_int_distribution<int>(-1, 8)(rng));
    }
    Options o;
    o.algorithm = static_cast<Algorithm>(std::uniform_int_distribution<int>(0, 1)(rng));
    o.forbid_duplicate_on_gpu = rng() % 2;
    auto plan = ComputePlan(pr, o);
    if (!plan.ok()) {
      const auto code = plan.status().code();
      EXPECT_TRUE(code == absl::StatusCode::kInvalidArgument ||
                  code == absl::StatusCode::kFailedPrecondition)
          << plan.status();
      continue;
    }
    ++planned;
    auto map = PlacementMap::Create(e_count, pr.num_physical, plan->physical_to_logical);
    ASSERT_TRUE(map.ok()) << map.status();
    for (const auto& counts : plan->replica_count) {
      for (int32_t c : counts) ASSERT_GE(c, 1);
    }
    // Incremental from that plan must also be valid.
    Options inc;
    inc.algorithm = Algorithm::kIncremental;
    inc.current = &*map;
    inc.max_moves = std::uniform_int_distribution<int>(-1, 5)(rng);
    auto next = ComputePlan(pr, inc);
    ASSERT_TRUE(next.ok()) << next.status();
    if (inc.max_moves >= 0) {
      ASSERT_LE(next->stats.experts_moved, inc.max_moves);
    }
    ASSERT_TRUE(PlacementMap::Create(e_count, pr.num_physical, next->physical_to_logical).ok());
  }
  EXPECT_GT(parsed, 0);
  EXPECT_GT(planned, 0);
  std::printf("fuzz: %d iterations, %d parsed, %d planned\n", iterations, parsed, planned);
}

}  // namespace
}  // namespace placement
}  // namespace eplb
