#include "core/test_util.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

namespace eplb {
namespace testing {

LayoutConfig RandomLayoutConfig(std::mt19937_64& rng) {
  LayoutConfig c;
  c.num_logical = std::uniform_int_distribution<int>(1, 64)(rng);
  c.ep_size = std::uniform_int_distribution<int>(1, 16)(rng);
  const int rem = c.num_logical % c.ep_size;
  const int min_r = rem == 0 ? 0 : c.ep_size - rem;
  // Every rank needs a row: P >= W.
  int r = min_r + c.ep_size * std::uniform_int_distribution<int>(0, 3)(rng);
  while (c.num_logical + r < c.ep_size) r += c.ep_size;
  c.num_redundant = r;
  c.num_shared = std::uniform_int_distribution<int>(0, 2)(rng);
  std::vector<int> divisors;
  for (int n = 1; n <= c.ep_size; ++n) {
    if (c.ep_size % n == 0) divisors.push_back(n);
  }
  c.num_nodes = divisors[std::uniform_int_distribution<size_t>(0, divisors.size() - 1)(rng)];
  return c;
}

PlacementMap RandomPlacement(const ExpertLayout& layout, int num_layers, std::mt19937_64& rng) {
  const int e_count = layout.num_logical();
  const int p_count = layout.num_physical();
  std::vector<std::vector<int32_t>> rows(num_layers);
  for (auto& row : rows) {
    row.resize(p_count);
    for (int p = 0; p < p_count; ++p) {
      row[p] = p < e_count ? p : std::uniform_int_distribution<int>(0, e_count - 1)(rng);
    }
    std::shuffle(row.begin(), row.end(), rng);
  }
  auto map = PlacementMap::Create(e_count, p_count, std::move(rows));
  return *std::move(map);
}

std::string RunfilePath(const std::string& relative) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  if (srcdir == nullptr) return relative;
  return std::string(srcdir) + "/" + (workspace ? workspace : "eplb") + "/" + relative;
}

uint64_t FreshSeed() {
  if (const char* s = std::getenv("EPLB_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  return static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
}

}  // namespace testing
}  // namespace eplb
