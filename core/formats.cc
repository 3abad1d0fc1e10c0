#include "core/formats.h"

#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace eplb {
namespace {

using Json = nlohmann::json;

absl::StatusOr<Json> ParseObject(absl::string_view text, const char* what) {
  Json doc = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is not valid JSON"));
  }
  if (!doc.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " must be a JSON object"));
  }
  return doc;
}

// Depth of nested arrays along the first element (0 for a scalar).
int Depth(const Json& j) {
  int d = 0;
  const Json* cur = &j;
  while (cur->is_array() && !cur->empty()) {
    ++d;
    cur = &(*cur)[0];
  }
  if (cur->is_array()) ++d;
  return d;
}

absl::StatusOr<LoadMatrix> ParseMatrix(const Json& j, const std::string& where) {
  if (!j.is_array() || j.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("logical_count", where, " must be a non-empty array of layers [Lyr][E]"));
  }
  LoadMatrix out(j.size());
  size_t width = 0;
  for (size_t l = 0; l < j.size(); ++l) {
    const Json& row = j[l];
    if (!row.is_array() || row.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("logical_count", where, "[", l, "] must be a non-empty array of experts"));
    }
    if (l == 0) width = row.size();
    if (row.size() != width) {
      return absl::InvalidArgumentError(absl::StrCat("logical_count", where, "[", l, "] has ",
                                                     row.size(), " experts; expected ", width,
                                                     " like layer 0"));
    }
    out[l].resize(width);
    for (size_t e = 0; e < width; ++e) {
      const Json& v = row[e];
      if (!v.is_number()) {
        return absl::InvalidArgumentError(absl::StrCat("logical_count", where, "[", l, "][", e,
                                                       "] is ", v.type_name(),
                                                       "; expected a number"));
      }
      const double x = v.get<double>();
      if (!std::isfinite(x) || x < 0) {
        return absl::InvalidArgumentError(absl::StrCat("logical_count", where, "[", l, "][", e,
                                                       "] = ", v.dump(),
                                                       "; expected a finite load >= 0"));
      }
      out[l][e] = x;
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<LoadMatrix>> ParseLoadStepsJson(absl::string_view text) {
  auto doc = ParseObject(text, "load file");
  if (!doc.ok()) return doc.status();
  auto it = doc->find("logical_count");
  if (it == doc->end()) {
    return absl::InvalidArgumentError("load file has no \"logical_count\" key");
  }
  const int depth = Depth(*it);
  std::vector<LoadMatrix> steps;
  if (depth == 2) {
    auto m = ParseMatrix(*it, "");
    if (!m.ok()) return m.status();
    steps.push_back(*std::move(m));
  } else if (depth == 3) {
    for (size_t t = 0; t < it->size(); ++t) {
      auto m = ParseMatrix((*it)[t], absl::StrCat("[", t, "]"));
      if (!m.ok()) return m.status();
      if (!steps.empty() &&
          (m->size() != steps[0].size() || (*m)[0].size() != steps[0][0].size())) {
        return absl::InvalidArgumentError(absl::StrCat(
            "logical_count[", t, "] has shape [", m->size(), "][", (*m)[0].size(), "]; expected [",
            steps[0].size(), "][", steps[0][0].size(), "] like step 0"));
      }
      steps.push_back(*std::move(m));
    }
  } else {
    return absl::InvalidArgumentError(absl::StrCat("logical_count has ", depth,
                                                   " array dimensions; expected [Lyr][E] or "
                                                   "[T][Lyr][E]"));
  }
  return steps;
}

absl::StatusOr<LoadMatrix> ParseLoadJson(absl::string_view text) {
  auto steps = ParseLoadStepsJson(text);
  if (!steps.ok()) return steps.status();
  LoadMatrix sum = (*steps)[0];
  for (size_t t = 1; t < steps->size(); ++t) {
    for (size_t l = 0; l < sum.size(); ++l) {
      for (size_t e = 0; e < sum[l].size(); ++e) sum[l][e] += (*steps)[t][l][e];
    }
  }
  return sum;
}

absl::StatusOr<std::vector<std::vector<int32_t>>> ParsePlacementJson(absl::string_view text) {
  auto doc = ParseObject(text, "placement file");
  if (!doc.ok()) return doc.status();
  auto it = doc->find("physical_to_logical_map");
  if (it == doc->end()) {
    return absl::InvalidArgumentError("placement file has no \"physical_to_logical_map\" key");
  }
  if (!it->is_array() || it->empty()) {
    return absl::InvalidArgumentError(
        "physical_to_logical_map must be a non-empty array of layers [Lyr][P]");
  }
  std::vector<std::vector<int32_t>> out(it->size());
  for (size_t l = 0; l < it->size(); ++l) {
    const Json& row = (*it)[l];
    if (!row.is_array()) {
      return absl::InvalidArgumentError(
          absl::StrCat("physical_to_logical_map[", l, "] must be an array of logical ids"));
    }
    out[l].reserve(row.size());
    for (size_t p = 0; p < row.size(); ++p) {
      const Json& v = row[p];
      if (!v.is_number_integer()) {
        return absl::InvalidArgumentError(absl::StrCat("physical_to_logical_map[", l, "][", p,
                                                       "] = ", v.dump(),
                                                       "; expected an integer logical id"));
      }
      const int64_t x = v.get<int64_t>();
      if (x < INT32_MIN || x > INT32_MAX) {
        return absl::InvalidArgumentError(
            absl::StrCat("physical_to_logical_map[", l, "][", p, "] = ", x, " is out of range"));
      }
      out[l].push_back(static_cast<int32_t>(x));
    }
  }
  return out;
}

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("error reading ", path));
  return ss.str();
}

}  // namespace eplb
