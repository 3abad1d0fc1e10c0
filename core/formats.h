// JSON exchange formats, compatible with SGLang's --init-expert-location (spec/DOMAIN.md §2):
//
//   load file       {"logical_count": [Lyr][E] or [T][Lyr][E]}  (T steps are summed)
//   placement file  {"physical_to_logical_map": [Lyr][P]}
//
// Extra keys are ignored on read. Every parse error names what was wrong and what was expected.
#ifndef EPLB_CORE_FORMATS_H_
#define EPLB_CORE_FORMATS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace eplb {

// [layer][expert] load; non-negative and finite.
using LoadMatrix = std::vector<std::vector<double>>;

// Parses a load file (integers or floats). Steps of a [T][Lyr][E] file are summed.
absl::StatusOr<LoadMatrix> ParseLoadJson(absl::string_view text);
// Every step of a load file, as [T][Lyr][E] (a [Lyr][E] file is one step).
absl::StatusOr<std::vector<LoadMatrix>> ParseLoadStepsJson(absl::string_view text);

// Parses a placement file into [Lyr][P] logical ids (shape and range are checked by
// PlacementMap::Create, not here; this checks rectangularity and integrality).
absl::StatusOr<std::vector<std::vector<int32_t>>> ParsePlacementJson(absl::string_view text);

absl::StatusOr<std::string> ReadFileToString(const std::string& path);

}  // namespace eplb

#endif  // EPLB_CORE_FORMATS_H_
