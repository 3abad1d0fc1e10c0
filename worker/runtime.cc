#include "worker/runtime.h"

#include <algorithm>
#include <map>
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

absl::StatusOr<std::unique_ptr<WorkerRuntime>> WorkerRuntime::Create(WorkerOptions options,
                                                                     CpuFabric* fabric) {
  auto layout = ExpertLayout::Create(options.layout);
  if (!layout.ok()) return layout.status();
  if (options.worker_id.empty() || options.ranks.empty() || options.num_layers < 1) {
    return absl::InvalidArgumentError("a worker needs an id, >= 1 rank and >= 1 layer");
  }
  for (int r : options.ranks) {
    if (r < 0 || r >= layout->ep_size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("rank ", r, " is out of range [0, ", layout->ep_size(), ")"));
    }
  }
  std::unique_ptr<WorkerRuntime> rt(new WorkerRuntime(std::move(options), *layout, fabric));
  // Stores: in this process, or in shared files when the fabric spans processes.
  const std::string dir = fabric->shared_directory();
  for (int r : rt->options_.ranks) {
    if (dir.empty()) {
      rt->stores_.push_back(std::make_unique<HostExpertStore>(rt->layout_, rt->options_.num_layers,
                                                              r, rt->options_.tensors));
    } else {
      auto shared =
          HostExpertStore::CreateShared(rt->layout_, rt->options_.num_layers, r,
                                        rt->options_.tensors, dir + "/rank-" + std::to_string(r));
      if (!shared.ok()) return shared.status();
      rt->stores_.push_back(*std::move(shared));
    }
    fabric->Attach(r, rt->stores_.back().get());
  }
  return rt;
}

WorkerRuntime::WorkerRuntime(WorkerOptions options, ExpertLayout layout, CpuFabric* fabric)
    : options_(std::move(options)), layout_(layout), fabric_(fabric) {
  if (options_.registry != nullptr) {
    prometheus::Registry& r = *options_.registry;
    const std::map<std::string, std::string> who = {{"worker", options_.worker_id}};
    metrics_.map_version = &prometheus::BuildGauge()
                                .Name("eplb_worker_map_version")
                                .Help("Placement version this worker serves.")
                                .Register(r)
                                .Add(who);
    auto& prepares = prometheus::BuildCounter()
                         .Name("eplb_worker_prepares_total")
                         .Help("PREPARE answers by result (ack, nack).")
                         .Register(r);
    auto with = [&](const char* k, const char* v) {
      auto m = who;
      m[k] = v;
      return m;
    };
    metrics_.prepare_ack = &prepares.Add(with("result", "ack"));
    metrics_.prepare_nack = &prepares.Add(with("result", "nack"));
    metrics_.commits = &prometheus::BuildCounter()
                            .Name("eplb_worker_commits_total")
                            .Help("Committed placement versions.")
                            .Register(r)
                            .Add(who);
    metrics_.rows_moved = &prometheus::BuildCounter()
                               .Name("eplb_worker_rows_moved_total")
                               .Help("Expert rows rewritten by committed moves.")
                               .Register(r)
                               .Add(who);
    metrics_.bytes_received = &prometheus::BuildCounter()
                                   .Name("eplb_worker_bytes_received_total")
                                   .Help("Weight bytes received from peers.")
                                   .Register(r)
                                   .Add(who);
    metrics_.reports = &prometheus::BuildCounter()
                            .Name("eplb_worker_load_reports_total")
                            .Help("Load reports taken for the controller.")
                            .Register(r)
                            .Add(who);
  }
  counts_.assign(
      options_.ranks.size(),
      std::vector<int64_t>(
          static_cast<size_t>(options_.num_layers) * layout_.routed_slots_per_rank(), 0));
}

namespace {

// Overwrites rows[layer] for every layer the placement carries.
absl::Status ApplyLayers(const v1::Placement& placement, int num_layers,
                         std::vector<std::vector<int32_t>>& rows) {
  for (const v1::LayerMap& lm : placement.layers()) {
    if (lm.layer() < 0 || lm.layer() >= num_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat("placement layer ", lm.layer(), " is out of range [0, ", num_layers, ")"));
    }
    rows[lm.layer()].assign(lm.physical_to_logical().begin(), lm.physical_to_logical().end());
  }
  return absl::OkStatus();
}

}  // namespace

v1::RegisterRequest WorkerRuntime::RegisterRequest() const {
  v1::RegisterRequest req;
  req.set_worker_id(options_.worker_id);
  for (int r : options_.ranks) req.add_ranks(r);
  req.set_node(options_.node);
  v1::LayoutFingerprint* f = req.mutable_layout();
  f->set_num_logical(layout_.num_logical());
  f->set_num_redundant(layout_.num_redundant());
  f->set_ep_size(layout_.ep_size());
  f->set_num_shared(layout_.num_shared());
  f->set_num_layers(options_.num_layers);
  f->set_num_nodes(layout_.num_nodes());
  f->set_bytes_per_expert(stores_.front()->row_bytes());
  req.set_applied_version(applied_version());
  return req;
}

absl::Status WorkerRuntime::Resync(const v1::Placement& placement) {
  std::vector<std::vector<int32_t>> rows(options_.num_layers);
  if (absl::Status s = ApplyLayers(placement, options_.num_layers, rows); !s.ok()) return s;
  auto map = PlacementMap::Create(layout_.num_logical(), layout_.num_physical(), std::move(rows));
  if (!map.ok()) return map.status();
  auto dispatch = StaticDispatch::Build(layout_, *map);
  if (!dispatch.ok()) return dispatch.status();
  {
    MutexLock data(fabric_->data_mutex());
    for (auto& store : stores_) {
      if (absl::Status s = store->LoadCheckpoint(*map, options_.checkpoint); !s.ok()) return s;
    }
  }
  MutexLock l(&mu_);
  map_ = std::make_shared<const PlacementMap>(*std::move(map));
  dispatch_ = std::make_unique<StaticDispatch>(*std::move(dispatch));
  version_ = placement.version();
  if (metrics_.map_version != nullptr) metrics_.map_version->Set(static_cast<double>(version_));
  for (auto& c : counts_) std::fill(c.begin(), c.end(), 0);
  return absl::OkStatus();
}

void WorkerRuntime::RecordReceived(int layer, absl::Span<const int64_t> physical_ids) {
  const int l = layout_.routed_slots_per_rank();
  MutexLock lock(&mu_);
  for (int64_t p : physical_ids) {
    if (p < 0 || p >= layout_.num_physical()) continue;
    const int owner = layout_.OwnerRank(PhysicalId(p));
    for (size_t i = 0; i < options_.ranks.size(); ++i) {
      if (options_.ranks[i] == owner) {
        ++counts_[i][static_cast<size_t>(layer) * l + layout_.LocalRow(PhysicalId(p))];
        break;
      }
    }
  }
}

v1::LoadReport WorkerRuntime::TakeReport(const std::string& session_id, int64_t first_step,
                                         int64_t last_step) {
  v1::LoadReport r;
  r.set_worker_id(options_.worker_id);
  r.set_session_id(session_id);
  r.set_first_step(first_step);
  r.set_last_step(last_step);
  MutexLock l(&mu_);
  r.set_map_version(version_);
  if (metrics_.reports != nullptr) metrics_.reports->Increment();
  for (size_t i = 0; i < options_.ranks.size(); ++i) {
    v1::RankLoad* rl = r.add_ranks();
    rl->set_rank(options_.ranks[i]);
    for (int64_t c : counts_[i]) rl->add_counts(c);
    std::fill(counts_[i].begin(), counts_[i].end(), 0);
  }
  return r;
}

v1::PlacementAnswer WorkerRuntime::Answer(const v1::PlacementUpdate& u,
                                          const absl::Status& s) const {
  v1::PlacementAnswer a;
  a.set_worker_id(options_.worker_id);
  a.set_version(u.version());
  a.set_nonce(u.nonce());
  a.set_ack(s.ok());
  if (!s.ok()) {
    a.set_error_code(static_cast<int32_t>(s.code()));
    a.set_error_message(std::string(s.message()));
  }
  return a;
}

absl::Status WorkerRuntime::Prepare(const v1::PlacementUpdate& u) {
  if (map_ == nullptr) return absl::FailedPreconditionError("no placement yet; register first");
  if (u.base_version() != version_) {
    return absl::FailedPreconditionError(absl::StrCat("update ", u.version(),
                                                      " is based on version ", u.base_version(),
                                                      "; this worker serves ", version_));
  }
  std::vector<std::vector<int32_t>> rows = map_->physical_to_logical();
  if (absl::Status s = ApplyLayers(u.placement(), options_.num_layers, rows); !s.ok()) return s;
  auto next = PlacementMap::Create(layout_.num_logical(), layout_.num_physical(), std::move(rows));
  if (!next.ok()) return next.status();
  const std::vector<int> dead(u.placement().dead_ranks().begin(), u.placement().dead_ranks().end());
  auto plan = BuildMovePlan(layout_, *map_, *next, dead);
  if (!plan.ok()) return plan.status();
  // Only the rows this worker receives.
  MovePlan mine;
  for (const Transfer& t : plan->transfers) {
    if (std::find(options_.ranks.begin(), options_.ranks.end(), t.dst_rank) !=
        options_.ranks.end()) {
      mine.transfers.push_back(t);
    }
  }
  auto mover = std::make_unique<CpuMover>(fabric_->stores(stores_.front().get()));
  const std::vector<bool> alive = fabric_->alive(stores_.front().get());
  {
    MutexLock data(fabric_->data_mutex());
    for (int layer = 0; layer < options_.num_layers; ++layer) {
      if (absl::Status s = mover->Stage(mine, layer, alive); !s.ok()) return s;
    }
  }
  // Integrity: every staged row must be the checkpoint's bytes of the expert the map puts there.
  std::vector<std::string> bad;
  std::vector<uint8_t> want(stores_.front()->row_bytes());
  for (const CpuMover::StagedRow& s : mover->staged()) {
    const int32_t e = next->LogicalOf(s.layer, layout_.PhysicalAt(s.rank, s.row)).value();
    options_.checkpoint(s.layer, e, want.data(), static_cast<int64_t>(want.size()));
    if (RowFingerprint(want.data(), want.size()) !=
        RowFingerprint(s.data->data(), s.data->size())) {
      bad.push_back(absl::StrCat("rank ", s.rank, " layer ", s.layer, " row ", s.row));
    }
  }
  if (!bad.empty()) {
    return absl::DataLossError(
        absl::StrCat("staged rows do not match their experts: ", absl::StrJoin(bad, ", ")));
  }
  staged_version_ = u.version();
  staged_map_ = std::make_shared<const PlacementMap>(*std::move(next));
  mover_ = std::move(mover);
  return absl::OkStatus();
}

v1::PlacementAnswer WorkerRuntime::OnUpdate(const v1::PlacementUpdate& u) {
  MutexLock l(&mu_);
  switch (u.phase()) {
    case v1::PlacementUpdate::PREPARE: {
      absl::Status s = Prepare(u);
      if (!s.ok()) mover_.reset();
      if (metrics_.prepare_ack != nullptr)
        (s.ok() ? metrics_.prepare_ack : metrics_.prepare_nack)->Increment();
      return Answer(u, s);
    }
    case v1::PlacementUpdate::COMMIT: {
      if (mover_ == nullptr || staged_version_ != u.version()) {
        return Answer(u, absl::FailedPreconditionError(
                             absl::StrCat("commit of version ", u.version(), " was not staged")));
      }
      auto dispatch = StaticDispatch::Build(layout_, *staged_map_);
      if (!dispatch.ok()) return Answer(u, dispatch.status());
      // Weights first, then the maps and dispatch tables, at one step boundary.
      const size_t rows = mover_->staged().size();
      const int64_t bytes = mover_->bytes_received();
      {
        MutexLock data(fabric_->data_mutex());
        mover_->Commit();
      }
      if (metrics_.commits != nullptr) {
        metrics_.commits->Increment();
        metrics_.rows_moved->Increment(static_cast<double>(rows));
        metrics_.bytes_received->Increment(static_cast<double>(bytes));
      }
      mover_.reset();
      map_ = staged_map_;
      dispatch_ = std::make_unique<StaticDispatch>(*std::move(dispatch));
      version_ = u.version();
      if (metrics_.map_version != nullptr) metrics_.map_version->Set(static_cast<double>(version_));
      for (auto& c : counts_) std::fill(c.begin(), c.end(), 0);
      return Answer(u, absl::OkStatus());
    }
    case v1::PlacementUpdate::ABORT:
      if (mover_ != nullptr && staged_version_ == u.version()) {
        mover_->Abort();
        mover_.reset();
      }
      return Answer(u, absl::OkStatus());
    default:
      return Answer(u, absl::InvalidArgumentError("unknown phase"));
  }
}

uint64_t WorkerRuntime::applied_version() const {
  MutexLock l(&mu_);
  return version_;
}

std::shared_ptr<const PlacementMap> WorkerRuntime::map() const {
  MutexLock l(&mu_);
  return map_;
}

std::vector<int32_t> WorkerRuntime::DispatchRow(int rank, int layer) const {
  MutexLock l(&mu_);
  const int32_t* row = dispatch_->Row(rank, layer);
  return std::vector<int32_t>(row, row + layout_.num_logical());
}

std::vector<std::vector<int64_t>> WorkerRuntime::PendingCounts() const {
  MutexLock l(&mu_);
  return counts_;
}

std::vector<std::string> WorkerRuntime::Inconsistencies() const {
  MutexLock l(&mu_);
  MutexLock data(fabric_->data_mutex());
  std::vector<std::string> out;
  for (const auto& store : stores_) {
    for (int layer = 0; layer < options_.num_layers; ++layer) {
      for (int row : store->MismatchedRows(layer, *map_, options_.checkpoint)) {
        out.push_back(absl::StrCat("rank ", store->rank(), " layer ", layer, " row ", row));
      }
    }
  }
  return out;
}

}  // namespace eplb
