#include "eplb_controller/load_aggregator.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"

namespace eplb {

LoadAggregator::LoadAggregator(const ExpertLayout& layout, int num_layers,
                               AggregationOptions options)
    : layout_(layout), num_layers_(num_layers), options_(options) {}

void LoadAggregator::SetMap(uint64_t version, std::shared_ptr<const PlacementMap> map) {
  maps_[version] = std::move(map);
  current_version_ = version;
  while (static_cast<int>(maps_.size()) > options_.versions_kept) maps_.erase(maps_.begin());
  // GPU load is per map: what was observed under the old map says nothing about the new one.
  for (Bucket& b : buckets_) {
    for (auto& layer : b.gpu) std::fill(layer.begin(), layer.end(), 0.0);
  }
}

LoadAggregator::Bucket LoadAggregator::NewBucket(absl::Time start) const {
  Bucket b;
  b.start = start;
  b.logical.assign(num_layers_, std::vector<double>(layout_.num_logical(), 0.0));
  b.gpu.assign(num_layers_, std::vector<double>(layout_.ep_size(), 0.0));
  return b;
}

void LoadAggregator::Advance(absl::Time now) {
  if (options_.window <= absl::ZeroDuration()) {
    if (buckets_.empty()) {
      buckets_.push_back(NewBucket(now));
      decay_time_ = now;
    }
    const double dt = absl::ToDoubleSeconds(now - decay_time_);
    if (dt > 0) {
      const double f = std::pow(0.5, dt / absl::ToDoubleSeconds(options_.half_life));
      for (auto& layer : buckets_.front().logical) {
        for (double& x : layer) x *= f;
      }
      for (auto& layer : buckets_.front().gpu) {
        for (double& x : layer) x *= f;
      }
      decay_time_ = now;
    }
    return;
  }
  const absl::Duration width = options_.window / 10;
  if (buckets_.empty() || now - buckets_.back().start >= width) {
    buckets_.push_back(NewBucket(now));
  }
  while (!buckets_.empty() && now - buckets_.front().start >= options_.window) {
    buckets_.pop_front();
  }
}

absl::Status LoadAggregator::Add(uint64_t map_version, const std::vector<RankCounts>& ranks,
                                 absl::Time now) {
  auto it = maps_.find(map_version);
  if (it == maps_.end()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "load counted under map version ", map_version, " which this controller does not know (",
        "current ", current_version_, ", last ", options_.versions_kept, " kept)"));
  }
  const int l_rows = layout_.routed_slots_per_rank();
  const size_t want = static_cast<size_t>(num_layers_) * l_rows;
  for (const RankCounts& rc : ranks) {
    if (rc.rank < 0 || rc.rank >= layout_.ep_size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("rank ", rc.rank, " is out of range [0, ", layout_.ep_size(), ")"));
    }
    if (rc.counts.size() != want) {
      return absl::InvalidArgumentError(
          absl::StrCat("rank ", rc.rank, " reported ", rc.counts.size(),
                       " counts; expected layers x L = ", num_layers_, " x ", l_rows, " = ", want));
    }
    for (size_t i = 0; i < rc.counts.size(); ++i) {
      if (rc.counts[i] < 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "rank ", rc.rank, " count[", i, "] = ", rc.counts[i], "; counts must be >= 0"));
      }
    }
  }
  Advance(now);
  const PlacementMap& map = *it->second;
  Bucket& b = buckets_.back();
  const bool current = map_version == current_version_;
  for (const RankCounts& rc : ranks) {
    for (int l = 0; l < num_layers_; ++l) {
      for (int j = 0; j < l_rows; ++j) {
        const double c = static_cast<double>(rc.counts[static_cast<size_t>(l) * l_rows + j]);
        if (c == 0) continue;
        const PhysicalId p = layout_.PhysicalAt(rc.rank, j);
        b.logical[l][map.LogicalOf(l, p).value()] += c;
        if (current) b.gpu[l][rc.rank] += c;
      }
    }
  }
  return absl::OkStatus();
}

LoadMatrix LoadAggregator::LogicalLoad(absl::Time now) const {
  LoadMatrix out(num_layers_, std::vector<double>(layout_.num_logical(), 0.0));
  for (const Bucket& b : buckets_) {
    const double w = Weight(b, now);
    for (int l = 0; l < num_layers_; ++l) {
      for (size_t e = 0; e < out[l].size(); ++e) out[l][e] += w * b.logical[l][e];
    }
  }
  return out;
}

std::vector<std::vector<double>> LoadAggregator::GpuLoad(absl::Time now) const {
  std::vector<std::vector<double>> out(num_layers_, std::vector<double>(layout_.ep_size(), 0.0));
  for (const Bucket& b : buckets_) {
    const double w = Weight(b, now);
    for (int l = 0; l < num_layers_; ++l) {
      for (size_t r = 0; r < out[l].size(); ++r) out[l][r] += w * b.gpu[l][r];
    }
  }
  return out;
}

double LoadAggregator::Weight(const Bucket& b, absl::Time now) const {
  if (options_.window <= absl::ZeroDuration()) {
    const double dt = absl::ToDoubleSeconds(now - decay_time_);
    return dt > 0 ? std::pow(0.5, dt / absl::ToDoubleSeconds(options_.half_life)) : 1.0;
  }
  return now - b.start < options_.window ? 1.0 : 0.0;
}

double LoadAggregator::TotalLoad(absl::Time now) const {
  double total = 0;
  for (const auto& layer : LogicalLoad(now)) {
    for (double x : layer) total += x;
  }
  return total;
}

}  // namespace eplb
