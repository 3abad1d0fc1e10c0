#include "worker/runtime.h"

#include <algorithm>
#include <map>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace eplb {

absl::StatusOr<std::unique_ptr<WorkerRuntime>> WorkerRuntime::Create(WorkerOptions options,
                                                                     CpuFabric* fabric) {
  auto layout = ExpertLayout::Create(options.layout);
  if (!layout.ok()) return layout.status();
  if (options.ranks.empty() || options.num_layers < 1) {
    return absl::InvalidArgumentError("a worker needs >= 1 rank and >= 1 layer");
  }
  for (int r : options.ranks) {
    if (r < 0 || r >= layout->ep_size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("rank ", r, " is out of range [0, ", layout->ep_size(), ")"));
    }
  }
  auto backend = CpuWeightBackend::Create(*layout, options.num_layers, options.ranks,
                                          options.tensors, options.checkpoint, fabric);
  if (!backend.ok()) return backend.status();
  return Create(std::move(options), *std::move(backend));
}

absl::StatusOr<std::unique_ptr<WorkerRuntime>> WorkerRuntime::Create(
    WorkerOptions options, std::unique_ptr<WeightBackend> backend) {
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
  if (backend == nullptr) return absl::InvalidArgumentError("no weight backend");
  return std::unique_ptr<WorkerRuntime>(
      new WorkerRuntime(std::move(options), *layout, std::move(backend)));
}

WorkerRuntime::WorkerRuntime(WorkerOptions options, ExpertLayout layout,
                             std::unique_ptr<WeightBackend> backend)
    : options_(std::move(options)), layout_(layout), backend_(std::move(backend)) {
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

// Overwrites rows[layer] for every layer the placement carries: the full form replaces the
// layer, the sparse form changes the named physical ids of the layer already in `rows` (the
// base version's). Shapes and values are checked later by PlacementMap::Create.
absl::Status ApplyLayers(const v1::Placement& placement, int num_layers,
                         std::vector<std::vector<int32_t>>& rows) {
  for (const v1::LayerMap& lm : placement.layers()) {
    if (lm.layer() < 0 || lm.layer() >= num_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat("placement layer ", lm.layer(), " is out of range [0, ", num_layers, ")"));
    }
    std::vector<int32_t>& row = rows[lm.layer()];
    const bool sparse = lm.changed_physical_size() > 0 || lm.changed_logical_size() > 0;
    if (!sparse) {
      row.assign(lm.physical_to_logical().begin(), lm.physical_to_logical().end());
      continue;
    }
    if (lm.physical_to_logical_size() > 0 ||
        lm.changed_physical_size() != lm.changed_logical_size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "placement layer ", lm.layer(), " mixes the full and sparse forms or has ",
          lm.changed_physical_size(), " changed ids for ", lm.changed_logical_size(), " experts"));
    }
    if (row.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "placement layer ", lm.layer(), " is sparse, but there is no base map to apply it to"));
    }
    for (int i = 0; i < lm.changed_physical_size(); ++i) {
      const int32_t p = lm.changed_physical(i);
      if (p < 0 || p >= static_cast<int32_t>(row.size())) {
        return absl::InvalidArgumentError(absl::StrCat("placement layer ", lm.layer(),
                                                       ": changed physical id ", p,
                                                       " is out of range [0, ", row.size(), ")"));
      }
      row[p] = lm.changed_logical(i);
    }
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
  MutexLock l(&mu_);
  f->set_bytes_per_expert(backend_->row_bytes());
  req.set_applied_version(version_);
  return req;
}

absl::Status WorkerRuntime::Resync(const v1::Placement& placement) {
  std::vector<std::vector<int32_t>> rows(options_.num_layers);
  if (absl::Status s = ApplyLayers(placement, options_.num_layers, rows); !s.ok()) return s;
  auto map = PlacementMap::Create(layout_.num_logical(), layout_.num_physical(), std::move(rows));
  if (!map.ok()) return map.status();
  return Adopt(*map, placement.version());
}

absl::Status WorkerRuntime::Adopt(const PlacementMap& map, uint64_t version) {
  if (map.num_layers() != options_.num_layers || map.num_logical() != layout_.num_logical() ||
      map.num_physical() != layout_.num_physical()) {
    return absl::InvalidArgumentError(
        absl::StrCat("map of ", map.num_layers(), " layers, E=", map.num_logical(),
                     ", P=", map.num_physical(), " does not fit this worker: ", options_.num_layers,
                     " layers, E=", layout_.num_logical(), ", P=", layout_.num_physical()));
  }
  auto dispatch = StaticDispatch::Build(layout_, map);
  if (!dispatch.ok()) return dispatch.status();
  MutexLock l(&mu_);
  if (absl::Status s = backend_->Load(map); !s.ok()) return s;
  backend_->Abort();
  staged_version_ = 0;
  staged_map_ = nullptr;
  waiting_prepare_ = nullptr;
  waiting_commit_ = nullptr;
  map_ = std::make_shared<const PlacementMap>(map);
  dispatch_ = std::make_unique<StaticDispatch>(*std::move(dispatch));
  version_ = version;
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

void WorkerRuntime::RecordCounts(int layer, absl::Span<const int64_t> counts_by_physical) {
  const int l = layout_.routed_slots_per_rank();
  MutexLock lock(&mu_);
  if (layer < 0 || layer >= options_.num_layers) return;
  for (size_t i = 0; i < options_.ranks.size(); ++i) {
    const size_t first = static_cast<size_t>(options_.ranks[i]) * l;
    for (int row = 0; row < l && first + row < counts_by_physical.size(); ++row) {
      counts_[i][static_cast<size_t>(layer) * l + row] += counts_by_physical[first + row];
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

absl::StatusOr<WorkerRuntime::Planned> WorkerRuntime::PlanPrepare(
    const v1::PlacementUpdate& u) const {
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
  Planned p;
  p.update = u;
  p.dead.assign(u.placement().dead_ranks().begin(), u.placement().dead_ranks().end());
  auto plan = BuildMovePlan(layout_, *map_, *next, p.dead);
  if (!plan.ok()) return plan.status();
  p.plan = *std::move(plan);
  p.next = std::make_shared<const PlacementMap>(*std::move(next));
  return p;
}

v1::PlacementAnswer WorkerRuntime::RunPrepare(Planned p) {
  backend_->Abort();
  staged_version_ = 0;
  staged_map_ = nullptr;
  absl::Status s = backend_->Stage(p.plan, *p.next, p.dead);
  if (s.ok()) {
    staged_version_ = p.update.version();
    staged_map_ = p.next;
  } else {
    backend_->Abort();
  }
  if (metrics_.prepare_ack != nullptr)
    (s.ok() ? metrics_.prepare_ack : metrics_.prepare_nack)->Increment();
  return Answer(p.update, s);
}

v1::PlacementAnswer WorkerRuntime::RunCommit(const v1::PlacementUpdate& u) {
  if (staged_map_ == nullptr || staged_version_ != u.version()) {
    return Answer(u, absl::FailedPreconditionError(
                         absl::StrCat("commit of version ", u.version(), " was not staged")));
  }
  auto dispatch = StaticDispatch::Build(layout_, *staged_map_);
  if (!dispatch.ok()) return Answer(u, dispatch.status());
  // Weights first, then the maps and dispatch tables, at one step boundary.
  const int64_t bytes = backend_->staged_bytes_received();
  auto rows = backend_->Commit();
  if (!rows.ok()) return Answer(u, rows.status());
  if (metrics_.commits != nullptr) {
    metrics_.commits->Increment();
    metrics_.rows_moved->Increment(static_cast<double>(*rows));
    metrics_.bytes_received->Increment(static_cast<double>(bytes));
  }
  map_ = staged_map_;
  staged_map_ = nullptr;
  staged_version_ = 0;
  dispatch_ = std::make_unique<StaticDispatch>(*std::move(dispatch));
  version_ = u.version();
  if (metrics_.map_version != nullptr) metrics_.map_version->Set(static_cast<double>(version_));
  for (auto& c : counts_) std::fill(c.begin(), c.end(), 0);
  return Answer(u, absl::OkStatus());
}

void WorkerRuntime::RunAbort(const v1::PlacementUpdate& u) {
  if (waiting_prepare_ != nullptr && waiting_prepare_->update.version() == u.version()) {
    waiting_prepare_ = nullptr;  // never staged anywhere: no rank agreed on it yet
  }
  if (staged_map_ != nullptr && staged_version_ == u.version()) {
    backend_->Abort();
    staged_map_ = nullptr;
    staged_version_ = 0;
  }
}

v1::PlacementAnswer WorkerRuntime::OnUpdate(const v1::PlacementUpdate& u) {
  MutexLock l(&mu_);
  switch (u.phase()) {
    case v1::PlacementUpdate::PREPARE: {
      auto p = PlanPrepare(u);
      if (!p.ok()) {
        if (metrics_.prepare_nack != nullptr) metrics_.prepare_nack->Increment();
        return Answer(u, p.status());
      }
      return RunPrepare(*std::move(p));
    }
    case v1::PlacementUpdate::COMMIT:
      return RunCommit(u);
    case v1::PlacementUpdate::ABORT:
      RunAbort(u);
      return Answer(u, absl::OkStatus());
    default:
      return Answer(u, absl::InvalidArgumentError("unknown phase"));
  }
}

void WorkerRuntime::Submit(const v1::PlacementUpdate& u, AnswerFn done) {
  std::optional<v1::PlacementAnswer> now;
  bool run_now = false;
  {
    MutexLock l(&mu_);
    if (!backend_->collective() || u.phase() == v1::PlacementUpdate::ABORT) {
      run_now = true;
    } else if (u.phase() == v1::PlacementUpdate::PREPARE) {
      auto p = PlanPrepare(u);
      if (!p.ok()) {
        if (metrics_.prepare_nack != nullptr) metrics_.prepare_nack->Increment();
        now = Answer(u, p.status());
      } else {
        p->done = std::move(done);
        waiting_prepare_ = std::make_unique<Planned>(*std::move(p));
        return;
      }
    } else if (u.phase() == v1::PlacementUpdate::COMMIT) {
      if (staged_map_ == nullptr || staged_version_ != u.version()) {
        now = Answer(u, absl::FailedPreconditionError(
                            absl::StrCat("commit of version ", u.version(), " was not staged")));
      } else {
        waiting_commit_ =
            std::make_unique<std::pair<v1::PlacementUpdate, AnswerFn>>(u, std::move(done));
        return;
      }
    } else {
      now = Answer(u, absl::InvalidArgumentError("unknown phase"));
    }
  }
  done(run_now ? OnUpdate(u) : *now);
}

absl::StatusOr<std::string> WorkerRuntime::StepBoundary(const AllMin& all_min) {
  int64_t prepare = 0, commit = 0;
  {
    MutexLock l(&mu_);
    if (waiting_prepare_ != nullptr)
      prepare = static_cast<int64_t>(waiting_prepare_->update.version());
    if (waiting_commit_ != nullptr) commit = static_cast<int64_t>(waiting_commit_->first.version());
  }
  // min == max over ranks: every rank holds the same update.
  auto m = all_min({prepare, -prepare, commit, -commit});
  if (!m.ok()) return m.status();
  if (m->size() != 4) return absl::InternalError("all_min returned the wrong size");
  const bool do_prepare = (*m)[0] > 0 && (*m)[0] == -(*m)[1];
  const bool do_commit = (*m)[2] > 0 && (*m)[2] == -(*m)[3];
  AnswerFn done;
  v1::PlacementAnswer answer;
  std::string ran;
  {
    MutexLock l(&mu_);
    if (do_commit && waiting_commit_ != nullptr &&
        static_cast<int64_t>(waiting_commit_->first.version()) == (*m)[2]) {
      answer = RunCommit(waiting_commit_->first);
      done = std::move(waiting_commit_->second);
      waiting_commit_ = nullptr;
      ran = "commit";
    } else if (do_prepare && waiting_prepare_ != nullptr &&
               static_cast<int64_t>(waiting_prepare_->update.version()) == (*m)[0]) {
      std::unique_ptr<Planned> p = std::move(waiting_prepare_);
      done = std::move(p->done);
      answer = RunPrepare(std::move(*p));
      ran = "prepare";
    }
  }
  if (done) done(answer);
  return ran;
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
  return backend_->Inconsistencies(*map_);
}

}  // namespace eplb
