#include "worker/cpu_backend.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace eplb {

std::vector<HostExpertStore*> CpuFabric::stores(const HostExpertStore* like) {
  MutexLock l(&mu_);
  if (!dir_.empty() && like != nullptr) {
    for (size_t r = 0; r < stores_.size(); ++r) {
      if (stores_[r] != nullptr) continue;
      auto peer = HostExpertStore::OpenPeer(like->layout(), like->num_layers(), static_cast<int>(r),
                                            like->tensors(), dir_ + "/rank-" + std::to_string(r));
      if (!peer.ok()) continue;
      stores_[r] = peer->get();
      peers_.push_back(*std::move(peer));
    }
  }
  return stores_;
}

std::vector<bool> CpuFabric::alive(const HostExpertStore* like) {
  const std::vector<HostExpertStore*> s = stores(like);
  MutexLock l(&mu_);
  std::vector<bool> out = alive_;
  for (size_t r = 0; r < out.size(); ++r) out[r] = out[r] && s[r] != nullptr;
  return out;
}

absl::StatusOr<std::unique_ptr<CpuWeightBackend>> CpuWeightBackend::Create(
    const ExpertLayout& layout, int num_layers, std::vector<int> ranks,
    std::vector<TensorSpec> tensors, CheckpointReader checkpoint, CpuFabric* fabric) {
  if (ranks.empty()) return absl::InvalidArgumentError("a CPU backend needs >= 1 rank");
  std::unique_ptr<CpuWeightBackend> b(
      new CpuWeightBackend(layout, num_layers, std::move(ranks), std::move(checkpoint), fabric));
  const std::string dir = fabric->shared_directory();
  for (int r : b->ranks_) {
    if (dir.empty()) {
      b->stores_.push_back(std::make_unique<HostExpertStore>(layout, num_layers, r, tensors));
    } else {
      auto shared = HostExpertStore::CreateShared(layout, num_layers, r, tensors,
                                                  dir + "/rank-" + std::to_string(r));
      if (!shared.ok()) return shared.status();
      b->stores_.push_back(*std::move(shared));
    }
    fabric->Attach(r, b->stores_.back().get());
  }
  return b;
}

absl::Status CpuWeightBackend::Load(const PlacementMap& map) {
  MutexLock data(fabric_->data_mutex());
  for (auto& store : stores_) {
    if (absl::Status s = store->LoadCheckpoint(map, checkpoint_); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status CpuWeightBackend::Stage(const MovePlan& plan, const PlacementMap& next,
                                     const std::vector<int>& dead) {
  (void)dead;  // the fabric knows which peers are gone
  mover_.reset();
  // Only the rows this worker receives.
  MovePlan mine;
  for (const Transfer& t : plan.transfers) {
    if (std::find(ranks_.begin(), ranks_.end(), t.dst_rank) != ranks_.end()) {
      mine.transfers.push_back(t);
    }
  }
  auto mover = std::make_unique<CpuMover>(fabric_->stores(stores_.front().get()));
  const std::vector<bool> alive = fabric_->alive(stores_.front().get());
  {
    MutexLock data(fabric_->data_mutex());
    for (int layer = 0; layer < num_layers_; ++layer) {
      if (absl::Status s = mover->Stage(mine, layer, alive); !s.ok()) return s;
    }
  }
  // Integrity: every staged row must be the checkpoint's bytes of the expert the map puts there.
  std::vector<std::string> bad;
  std::vector<uint8_t> want(row_bytes());
  for (const CpuMover::StagedRow& s : mover->staged()) {
    const int32_t e = next.LogicalOf(s.layer, layout_.PhysicalAt(s.rank, s.row)).value();
    checkpoint_(s.layer, e, want.data(), static_cast<int64_t>(want.size()));
    if (RowFingerprint(want.data(), want.size()) !=
        RowFingerprint(s.data->data(), s.data->size())) {
      bad.push_back(absl::StrCat("rank ", s.rank, " layer ", s.layer, " row ", s.row));
    }
  }
  if (!bad.empty()) {
    return absl::DataLossError(
        absl::StrCat("staged rows do not match their experts: ", absl::StrJoin(bad, ", ")));
  }
  mover_ = std::move(mover);
  return absl::OkStatus();
}

absl::StatusOr<int64_t> CpuWeightBackend::Commit() {
  if (mover_ == nullptr) return absl::FailedPreconditionError("nothing staged");
  const int64_t rows = static_cast<int64_t>(mover_->staged().size());
  {
    MutexLock data(fabric_->data_mutex());
    mover_->Commit();
  }
  mover_.reset();
  return rows;
}

std::vector<std::string> CpuWeightBackend::Inconsistencies(const PlacementMap& map) {
  MutexLock data(fabric_->data_mutex());
  std::vector<std::string> out;
  for (const auto& store : stores_) {
    for (int layer = 0; layer < num_layers_; ++layer) {
      for (int row : store->MismatchedRows(layer, map, checkpoint_)) {
        out.push_back(absl::StrCat("rank ", store->rank(), " layer ", layer, " row ", row));
      }
    }
  }
  return out;
}

}  // namespace eplb
