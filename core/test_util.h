// Test helpers: random valid layouts and placement maps (seeded), and the golden vectors.
#ifndef EPLB_CORE_TEST_UTIL_H_
#define EPLB_CORE_TEST_UTIL_H_

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "core/expert_layout.h"
#include "core/placement_map.h"

namespace eplb {
namespace testing {

// A random valid LayoutConfig: E in [1, 64], W in [1, 16], R chosen so (E + R) % W == 0,
// S in {0, 1, 2}, N a divisor of W.
LayoutConfig RandomLayoutConfig(std::mt19937_64& rng);

// A random valid map for the layout: every expert once, then random extra replicas (which may
// land twice on one rank), shuffled over physical ids.
PlacementMap RandomPlacement(const ExpertLayout& layout, int num_layers, std::mt19937_64& rng);

// Path of a runfile under the workspace, e.g. "tests/golden/public_vectors.json".
std::string RunfilePath(const std::string& relative);

// A seed that differs on every run unless EPLB_TEST_SEED is set; printed by the caller so a
// failure can be replayed.
uint64_t FreshSeed();

}  // namespace testing
}  // namespace eplb

#endif  // EPLB_CORE_TEST_UTIL_H_
