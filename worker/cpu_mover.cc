#include "worker/cpu_mover.h"

#include <map>
#include <utility>

#include "absl/strings/str_cat.h"

namespace eplb {

absl::Status CpuMover::Stage(const MovePlan& plan, int layer, const std::vector<bool>& alive) {
  const size_t first = staged_.size();          // layers accumulate until Commit or Abort
  std::map<std::pair<int, int>, size_t> index;  // (rank, row) -> staged entry of this layer
  // Sources first (live rows of the old map), then copies from earlier destinations.
  for (int pass = 0; pass < 2; ++pass) {
    for (const Transfer& t : plan.transfers) {
      if (t.layer != layer) continue;
      const bool after = t.kind == TransferKind::kAfterPeer;
      if ((pass == 0) == after) continue;
      if (t.kind == TransferKind::kPeer &&
          (t.src_rank >= static_cast<int>(alive.size()) || !alive[t.src_rank])) {
        staged_.resize(first);
        return absl::UnavailableError(absl::StrCat("layer ", layer, ": peer rank ", t.src_rank,
                                                   " is gone; rank ", t.dst_rank, " row ",
                                                   t.dst_row, " cannot receive expert ", t.expert));
      }
      HostExpertStore* dst = stores_[t.dst_rank];
      const int64_t n = dst->row_bytes();
      const uint8_t* src = nullptr;
      if (after) {
        src = staged_[index.at({t.dst_rank, t.src_row})].data.data();
      } else {
        src = stores_[t.src_rank]->Row(layer, t.src_row);
        if (t.kind == TransferKind::kPeer) bytes_received_ += n;
      }
      staged_.push_back({t.dst_rank, layer, t.dst_row, std::vector<uint8_t>(src, src + n)});
      index[{t.dst_rank, t.dst_row}] = staged_.size() - 1;
    }
  }
  return absl::OkStatus();
}

std::vector<CpuMover::StagedRow> CpuMover::staged() const {
  std::vector<StagedRow> out;
  for (const Staged& s : staged_) out.push_back({s.rank, s.layer, s.row, &s.data});
  return out;
}

void CpuMover::Commit() {
  for (const Staged& s : staged_) stores_[s.rank]->WriteRow(s.layer, s.row, s.data.data());
  staged_.clear();
}

}  // namespace eplb
