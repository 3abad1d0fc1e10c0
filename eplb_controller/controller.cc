#include "eplb_controller/controller.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <map>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/notification.h"
#include "core/balance.h"
#include "core/formats.h"
#include "eplb_controller/placement/placement.h"
#include "nlohmann/json.hpp"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"

namespace eplb {

using Json = nlohmann::json;

namespace {

// Writes the given layers of `map` (all when `layers` is empty) into `out`, with the dead ranks.
// With a `base` map (an update), a layer goes in the sparse form when that is smaller.
void FillPlacement(const PlacementMap& map, const std::vector<int>& layers,
                   const std::set<int>& dead_ranks, uint64_t version, v1::Placement* out,
                   const PlacementMap* base = nullptr) {
  out->set_version(version);
  std::vector<int> all;
  if (layers.empty()) {
    for (int l = 0; l < map.num_layers(); ++l) all.push_back(l);
  }
  for (int l : layers.empty() ? all : layers) {
    v1::LayerMap* lm = out->add_layers();
    lm->set_layer(l);
    const std::vector<int32_t>& row = map.physical_to_logical(l);
    if (base != nullptr) {
      const std::vector<int32_t>& old = base->physical_to_logical(l);
      std::vector<int32_t> changed;
      for (size_t p = 0; p < row.size(); ++p) {
        if (row[p] != old[p]) changed.push_back(static_cast<int32_t>(p));
      }
      if (2 * changed.size() < row.size()) {
        for (int32_t p : changed) {
          lm->add_changed_physical(p);
          lm->add_changed_logical(row[p]);
        }
        continue;
      }
    }
    for (int32_t e : row) lm->add_physical_to_logical(e);
  }
  for (int r : dead_ranks) out->add_dead_ranks(r);
}

}  // namespace

struct Controller::Metrics {
  explicit Metrics(prometheus::Registry& r)
      : balancedness(prometheus::BuildGauge()
                         .Name("eplb_controller_balancedness")
                         .Help("Observed balancedness (mean over layers of mean/max GPU load) "
                               "under the map in force, over the aggregation window.")
                         .Register(r)
                         .Add({})),
        predicted(prometheus::BuildGauge()
                      .Name("eplb_controller_predicted_balancedness")
                      .Help("Balancedness the last plan predicted for its load.")
                      .Register(r)
                      .Add({})),
        rebalances(prometheus::BuildCounter()
                       .Name("eplb_controller_rebalances_total")
                       .Help("Rebalance decisions by result (committed, aborted, skipped).")
                       .Register(r)),
        plan_seconds(prometheus::BuildHistogram()
                         .Name("eplb_controller_plan_compute_seconds")
                         .Help("Time to compute a placement.")
                         .Register(r)
                         .Add({}, prometheus::Histogram::BucketBoundaries{0.001, 0.003, 0.01, 0.03,
                                                                          0.1, 0.3, 1, 3, 10})),
        map_version(prometheus::BuildGauge()
                        .Name("eplb_controller_map_version")
                        .Help("Committed placement version.")
                        .Register(r)
                        .Add({})),
        workers(prometheus::BuildGauge()
                    .Name("eplb_controller_workers")
                    .Help("Registered workers by state (live, dead).")
                    .Register(r)),
        experts_moved(prometheus::BuildCounter()
                          .Name("eplb_controller_experts_moved_total")
                          .Help("Expert replicas moved across GPUs by committed rollouts.")
                          .Register(r)
                          .Add({})),
        reports(prometheus::BuildCounter()
                    .Name("eplb_controller_load_reports_total")
                    .Help("Load reports by result (accepted, rejected).")
                    .Register(r)),
        nacks(prometheus::BuildCounter()
                  .Name("eplb_controller_nacks_total")
                  .Help("NACKs received from workers during rollouts.")
                  .Register(r)
                  .Add({})),
        reports_accepted(reports.Add({{"result", "accepted"}})),
        reports_rejected(reports.Add({{"result", "rejected"}})) {}

  prometheus::Gauge& balancedness;
  prometheus::Gauge& predicted;
  prometheus::Family<prometheus::Counter>& rebalances;
  prometheus::Histogram& plan_seconds;
  prometheus::Gauge& map_version;
  prometheus::Family<prometheus::Gauge>& workers;
  prometheus::Counter& experts_moved;
  prometheus::Family<prometheus::Counter>& reports;
  prometheus::Counter& nacks;
  // Per-report counters, looked up once (Family::Add hashes the labels under a lock).
  prometheus::Counter& reports_accepted;
  prometheus::Counter& reports_rejected;
};

absl::Status Controller::ValidateOptions(const Options& options) {
  if (auto layout = ExpertLayout::Create(options.layout); !layout.ok()) return layout.status();
  if (options.num_layers < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_layers=", options.num_layers, " must be >= 1"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Controller>> Controller::Create(
    Options options, std::shared_ptr<prometheus::Registry> registry) {
  if (absl::Status s = ValidateOptions(options); !s.ok()) return s;
  auto layout = ExpertLayout::Create(options.layout);
  std::unique_ptr<Controller> c(new Controller(std::move(options), *layout, std::move(registry)));
  if (absl::Status s = c->LoadState(); !s.ok()) return s;
  return c;
}

Controller::Controller(Options options, ExpertLayout layout,
                       std::shared_ptr<prometheus::Registry> registry)
    : options_(std::move(options)),
      layout_(layout),
      registry_(std::move(registry)),
      metrics_(std::make_unique<Metrics>(*registry_)),
      policy_(options_.policy),
      aggregator_(layout_, options_.num_layers, options_.aggregation) {}

Controller::~Controller() = default;

absl::Status Controller::LoadState() {
  MutexLock lock(&mu_);
  const std::string path = options_.state_dir.empty() ? "" : options_.state_dir + "/state.json";
  std::shared_ptr<const PlacementMap> map;
  if (!path.empty() && access(path.c_str(), F_OK) == 0) {
    auto text = ReadFileToString(path);
    if (!text.ok()) return text.status();
    Json doc = Json::parse(*text, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded() || !doc.is_object() || !doc.contains("version")) {
      return absl::DataLossError(absl::StrCat(path, " is not a controller state file"));
    }
    auto rows = ParsePlacementJson(*text);
    if (!rows.ok()) return absl::DataLossError(absl::StrCat(path, ": ", rows.status().message()));
    auto m = PlacementMap::Create(layout_.num_logical(), layout_.num_physical(), *std::move(rows));
    if (!m.ok() || m->num_layers() != options_.num_layers) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, " holds a placement for another shape than ", layout_.DebugString(),
                       " x ", options_.num_layers, " layers; move it away to start fresh"));
    }
    map = std::make_shared<const PlacementMap>(*std::move(m));
    version_ = doc["version"].get<uint64_t>();
    if (doc.contains("dead_ranks")) {
      for (int r : doc["dead_ranks"].get<std::vector<int>>()) dead_ranks_.insert(r);
    }
  } else {
    map = std::make_shared<const PlacementMap>(
        PlacementMap::Identity(options_.num_layers, layout_.num_logical(), layout_.num_physical()));
    version_ = 1;
  }
  map_ = map;
  aggregator_.SetMap(version_, map_);
  if (!path.empty()) {
    if (absl::Status s = SaveState(); !s.ok()) return s;
  }
  UpdateGauges();
  return absl::OkStatus();
}

absl::Status Controller::SaveState() {
  if (options_.state_dir.empty()) return absl::OkStatus();
  Json doc;
  doc["version"] = version_;
  doc["physical_to_logical_map"] = map_->physical_to_logical();
  doc["dead_ranks"] = std::vector<int>(dead_ranks_.begin(), dead_ranks_.end());
  doc["layout"] = layout_.DebugString();
  const std::string path = options_.state_dir + "/state.json";
  const std::string tmp = path + ".tmp";
  const std::string text = doc.dump();
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("cannot write ", tmp));
  const bool written = write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  const bool synced = fsync(fd) == 0;
  close(fd);
  if (!written || !synced || rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::UnavailableError(absl::StrCat("cannot persist ", path));
  }
  const int dir = open(options_.state_dir.c_str(), O_RDONLY);
  if (dir >= 0) {
    fsync(dir);
    close(dir);
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::RegisterResponse> Controller::Register(const v1::RegisterRequest& req) {
  if (req.worker_id().empty()) return absl::InvalidArgumentError("worker_id is empty");
  const v1::LayoutFingerprint& f = req.layout();
  const LayoutConfig& c = layout_.config();
  if (f.num_logical() != c.num_logical || f.num_redundant() != c.num_redundant ||
      f.ep_size() != c.ep_size || f.num_shared() != c.num_shared ||
      f.num_layers() != options_.num_layers) {
    return absl::FailedPreconditionError(absl::StrCat(
        "worker ", req.worker_id(), " has layout E=", f.num_logical(), " R=", f.num_redundant(),
        " W=", f.ep_size(), " S=", f.num_shared(), " layers=", f.num_layers(),
        "; the cluster runs ", layout_.DebugString(), " layers=", options_.num_layers));
  }
  if (req.ranks_size() == 0) return absl::InvalidArgumentError("a worker must serve >= 1 rank");
  for (int r : req.ranks()) {
    if (r < 0 || r >= layout_.ep_size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("rank ", r, " is out of range [0, ", layout_.ep_size(), ")"));
    }
  }
  MutexLock lock(&mu_);
  for (const auto& [id, w] : workers_) {
    if (id == req.worker_id() || w.dead) continue;
    for (int r : req.ranks()) {
      if (std::find(w.ranks.begin(), w.ranks.end(), r) != w.ranks.end()) {
        return absl::AlreadyExistsError(
            absl::StrCat("rank ", r, " is already served by live worker ", id));
      }
    }
  }
  Worker& w = workers_[req.worker_id()];
  w.ranks.assign(req.ranks().begin(), req.ranks().end());
  w.node = req.node();
  w.session_id = absl::StrCat(req.worker_id(), "/", next_session_++);
  w.dead = false;
  w.applied_version = req.applied_version();
  w.last_report = options_.now();
  for (int r : w.ranks) dead_ranks_.erase(r);
  v1::RegisterResponse resp;
  resp.set_session_id(w.session_id);
  resp.set_current_version(version_);
  resp.set_report_interval_ms(
      static_cast<int32_t>(absl::ToInt64Milliseconds(options_.report_interval)));
  if (req.applied_version() != version_) {
    FillPlacement(*map_, {}, dead_ranks_, version_, resp.mutable_resync());
  }
  UpdateGauges();
  return resp;
}

absl::Status Controller::ReportLoad(const v1::LoadReport& report) {
  MutexLock lock(&mu_);
  auto reject = [&](absl::Status s) {
    metrics_->reports_rejected.Increment();
    return s;
  };
  auto it = workers_.find(report.worker_id());
  if (it == workers_.end()) {
    return reject(absl::NotFoundError(
        absl::StrCat("worker ", report.worker_id(), " is not registered; register first")));
  }
  Worker& w = it->second;
  if (report.session_id() != w.session_id) {
    return reject(absl::FailedPreconditionError(
        absl::StrCat("session ", report.session_id(), " of worker ", report.worker_id(),
                     " is stale; the current one is ", w.session_id, ": register again")));
  }
  if (report.last_step() < report.first_step()) {
    return reject(absl::InvalidArgumentError(
        absl::StrCat("step range [", report.first_step(), ", ", report.last_step(), "] is empty")));
  }
  std::vector<RankCounts> ranks;
  for (const v1::RankLoad& rl : report.ranks()) {
    if (std::find(w.ranks.begin(), w.ranks.end(), rl.rank()) == w.ranks.end()) {
      return reject(
          absl::InvalidArgumentError(absl::StrCat("worker ", report.worker_id(), " reported rank ",
                                                  rl.rank(), " which it does not serve")));
    }
    ranks.push_back({rl.rank(), absl::MakeConstSpan(rl.counts().data(), rl.counts().size())});
  }
  if (absl::Status s = aggregator_.Add(report.map_version(), ranks, options_.now()); !s.ok()) {
    return reject(s);
  }
  const absl::Time now = options_.now();
  w.last_report = now;
  metrics_->reports_accepted.Increment();
  // The gauge sums the whole window (layers x ranks x buckets): at most every 250 ms, not per
  // report (256 workers reporting would otherwise spend most of the controller's CPU on it).
  if (now - balancedness_updated_ >= absl::Milliseconds(250)) {
    metrics_->balancedness.Set(ObservedBalancedness(now));
    balancedness_updated_ = now;
  }
  return absl::OkStatus();
}

absl::Status Controller::Attach(const std::string& worker_id, const std::string& session_id,
                                std::shared_ptr<UpdateSink> sink) {
  MutexLock lock(&mu_);
  auto it = workers_.find(worker_id);
  if (it == workers_.end() || it->second.session_id != session_id) {
    return absl::FailedPreconditionError(
        absl::StrCat("worker ", worker_id, " session ", session_id, " is not registered"));
  }
  it->second.sink = std::move(sink);
  return absl::OkStatus();
}

void Controller::Detach(const std::string& worker_id, const UpdateSink* sink) {
  MutexLock lock(&mu_);
  auto it = workers_.find(worker_id);
  if (it == workers_.end() || it->second.sink.get() != sink) return;
  it->second.sink.reset();
  if (rollout_active_ && rollout_.waiting.count(worker_id)) {
    rollout_.waiting.erase(worker_id);
    if (rollout_.failure.empty()) rollout_.failure = absl::StrCat("worker ", worker_id, " lost");
    it->second.dead = true;
    for (int r : it->second.ranks) dead_ranks_.insert(r);
  }
  UpdateGauges();
}

void Controller::OnAnswer(const v1::PlacementAnswer& a) {
  MutexLock lock(&mu_);
  if (!rollout_active_ || a.version() != rollout_.version || a.nonce() != rollout_.nonce ||
      !rollout_.waiting.count(a.worker_id())) {
    return;  // stale or unexpected: ignored
  }
  rollout_.waiting.erase(a.worker_id());
  if (!a.ack()) {
    metrics_->nacks.Increment();
    if (rollout_.failure.empty()) {
      rollout_.failure = absl::StrCat("NACK from ", a.worker_id(), ": ", a.error_message());
    }
  }
}

bool Controller::RunPhase(const v1::PlacementUpdate& update) {
  std::vector<std::pair<std::string, std::shared_ptr<UpdateSink>>> targets;
  v1::PlacementUpdate msg = update;
  {
    MutexLock lock(&mu_);
    rollout_.phase = update.phase();
    rollout_.nonce = absl::StrCat(update.version(), "-", static_cast<int>(update.phase()), "-",
                                  absl::ToUnixNanos(options_.now()));
    rollout_.waiting.clear();
    rollout_.failure.clear();
    msg.set_nonce(rollout_.nonce);
    for (auto& [id, w] : workers_) {
      if (w.dead) continue;
      if (w.sink == nullptr) {
        // Registered but not streaming: it cannot take the new map, so it may not serve.
        w.dead = true;
        for (int r : w.ranks) dead_ranks_.insert(r);
        continue;
      }
      rollout_.waiting.insert(id);
      targets.emplace_back(id, w.sink);
    }
  }
  // Sends run on their own thread, so the phase deadline holds even if a write blocks (a worker
  // that keeps its connection but stops reading): at the deadline such streams are cancelled.
  const absl::Time deadline = absl::Now() + options_.rollout_timeout;
  // Per target: 0 not sent yet, 1 being sent, 2 sent.
  std::unique_ptr<std::atomic<int>[]> sent(new std::atomic<int>[targets.size()]);
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < targets.size(); ++i) {
    sent[i] = 0;
    index[targets[i].first] = i;
  }
  absl::Notification all_sent;
  std::atomic<bool> stop_sending{false};
  std::thread sender([&] {
    for (size_t i = 0; i < targets.size() && !stop_sending; ++i) {
      const auto& [id, sink] = targets[i];
      sent[i] = 1;
      if (!sink->Send(msg)) {
        MutexLock lock(&mu_);
        rollout_.waiting.erase(id);
        if (rollout_.failure.empty()) {
          rollout_.failure = absl::StrCat("worker ", id, " unreachable");
        }
      }
      sent[i] = 2;
    }
    all_sent.Notify();
  });
  bool ok;
  {
    MutexLock lock(&mu_);
    auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return rollout_.waiting.empty() || !rollout_.failure.empty();
    };
    mu_.AwaitWithTimeout(done, deadline - absl::Now());
    if (rollout_.failure.empty() && !rollout_.waiting.empty()) {
      rollout_.failure =
          absl::StrCat("no answer within ", absl::FormatDuration(options_.rollout_timeout),
                       " from ", absl::StrJoin(rollout_.waiting, ","));
      // Dead: those sent the update (or stuck taking it) that did not answer. Those a stuck
      // write kept from being sent to were given no chance: they stay live.
      for (const std::string& id : rollout_.waiting) {
        if (sent[index[id]] == 0) continue;
        Worker& w = workers_[id];
        w.dead = true;
        for (int r : w.ranks) dead_ranks_.insert(r);
      }
    }
    UpdateGauges();
    ok = rollout_.failure.empty();
  }
  // The next phase writes to the same streams: every send of this one must be over first (so
  // every worker sees the phases in order, a NACK elsewhere notwithstanding). Past the deadline,
  // a write still in progress is stuck on a worker that does not read, and is cancelled (again,
  // until the sender has stopped); the workers not sent to by then are skipped.
  if (!all_sent.WaitForNotificationWithDeadline(deadline)) {
    stop_sending = true;
    while (!all_sent.WaitForNotificationWithTimeout(absl::Milliseconds(10))) {
      for (size_t i = 0; i < targets.size(); ++i) {
        if (sent[i] == 1) targets[i].second->Cancel();
      }
    }
  }
  sender.join();
  return ok;
}

double Controller::ObservedBalancedness(absl::Time now) const {
  return MeanBalancedness(aggregator_.GpuLoad(now));
}

std::vector<int> Controller::DeadRanks() const {
  return std::vector<int>(dead_ranks_.begin(), dead_ranks_.end());
}

void Controller::Record(const RebalanceRecord& r) {
  // Skipped evaluations (every policy interval when all is well) would push the rollouts out of
  // an operator's view: only the latest is kept, beside the last 20 rollouts.
  if (r.result == "skipped") {
    last_skip_ = r;
  } else {
    recent_.push_back(r);
    if (recent_.size() > 20) recent_.erase(recent_.begin());
  }
  metrics_->rebalances.Add({{"result", r.result}}).Increment();
}

void Controller::UpdateGauges() {
  int live = 0, dead = 0;
  for (const auto& [id, w] : workers_) (w.dead ? dead : live)++;
  metrics_->workers.Add({{"state", "live"}}).Set(live);
  metrics_->workers.Add({{"state", "dead"}}).Set(dead);
  metrics_->map_version.Set(static_cast<double>(version_));
}

RebalanceRecord Controller::Step() { return Rebalance("policy", false); }

RebalanceRecord Controller::TriggerRebalance(const std::string& reason, bool force) {
  return Rebalance(reason.empty() ? "operator" : reason, force);
}

RebalanceRecord Controller::Rebalance(const std::string& reason, bool force) {
  MutexLock one_at_a_time(&rollout_mu_);
  RebalanceRecord rec;
  std::shared_ptr<const PlacementMap> next;
  std::vector<int> changed;
  uint64_t base = 0;
  std::shared_ptr<const PlacementMap> current;
  int per_rollout = 0;
  std::vector<int> dead;
  {
    MutexLock lock(&mu_);
    const absl::Time now = options_.now();
    rec.time = now;
    rec.reason = reason;
    rec.version = version_;
    auto skip = [&](const std::string& why) {
      rec.result = "skipped";
      rec.reason = absl::StrCat(reason, ": ", why);
      Record(rec);
      return rec;
    };
    if (!force && policy_.paused) return skip("paused");
    if (!force && now - last_rebalance_ < policy_.min_interval) return skip("min interval");
    const LoadMatrix load = aggregator_.LogicalLoad(now);
    double total = 0;
    for (const auto& l : load) {
      for (double x : l) total += x;
    }
    if (total <= 0) return skip("no load reported");
    placement::Problem pr{&load,
                          layout_.num_physical(),
                          layout_.ep_size(),
                          layout_.num_nodes(),
                          options_.num_groups,
                          DeadRanks()};
    const placement::PlanStats before =
        placement::EvaluatePlacement(pr, map_->physical_to_logical(), nullptr, 0);
    rec.balancedness_before = before.balancedness;
    const double trigger = policy_.trigger_balancedness -
                           (last_rebalance_ == absl::InfinitePast() ? 0 : policy_.hysteresis);
    if (!force && before.balancedness >= trigger) return skip("balanced enough");
    placement::Options o;
    auto algorithm = placement::ParseAlgorithm(policy_.algorithm);
    o.algorithm = algorithm.ok() ? *algorithm : placement::Algorithm::kIncremental;
    o.current = map_.get();
    o.max_moves = policy_.max_moves;
    o.bytes_per_expert = static_cast<double>(options_.bytes_per_expert);
    const absl::Time t0 = absl::Now();
    auto plan = placement::ComputePlan(pr, o);
    rec.plan_seconds = absl::ToDoubleSeconds(absl::Now() - t0);
    metrics_->plan_seconds.Observe(rec.plan_seconds);
    if (!plan.ok()) return skip(absl::StrCat("plan failed: ", plan.status().message()));
    rec.predicted_balancedness = plan->stats.balancedness;
    rec.experts_moved = plan->stats.experts_moved;
    rec.bytes_moved = plan->stats.bytes_moved;
    predicted_ = plan->stats.balancedness;
    metrics_->predicted.Set(predicted_);
    if (plan->physical_to_logical == map_->physical_to_logical()) return skip("no change");
    if (!force && plan->stats.balancedness - before.balancedness < policy_.min_balancedness_gain) {
      return skip("gain below threshold");
    }
    auto m = PlacementMap::Create(layout_.num_logical(), layout_.num_physical(),
                                  plan->physical_to_logical);
    if (!m.ok()) return skip(absl::StrCat("invalid plan: ", m.status().message()));
    next = std::make_shared<const PlacementMap>(*std::move(m));
    changed = map_->ChangedLayers(*next);
    base = version_;
    current = map_;
    per_rollout = policy_.layers_per_rollout;
    rollout_active_ = true;
    dead = DeadRanks();
  }
  // Layer pacing: at most `per_rollout` changed layers per version, one two-phase rollout each,
  // so a worker stages (and stalls for) a bounded number of layers at a time. Every
  // intermediate map is complete and consistent; an abort stops the sequence there.
  std::vector<std::vector<int>> chunks;
  for (size_t i = 0; i < changed.size();) {
    const size_t n = per_rollout > 0 ? static_cast<size_t>(per_rollout) : changed.size();
    chunks.emplace_back(changed.begin() + i, changed.begin() + std::min(changed.size(), i + n));
    i += n;
  }
  bool ok = true;
  int committed_chunks = 0;
  for (size_t c = 0; c < chunks.size() && ok; ++c) {
    std::vector<std::vector<int32_t>> rows = current->physical_to_logical();
    for (int layer : chunks[c]) rows[layer] = next->physical_to_logical(layer);
    auto step_map =
        PlacementMap::Create(layout_.num_logical(), layout_.num_physical(), std::move(rows));
    if (!step_map.ok()) {
      ok = false;
      MutexLock lock(&mu_);
      rollout_.failure = std::string(step_map.status().message());
      break;
    }
    auto step = std::make_shared<const PlacementMap>(*std::move(step_map));
    const uint64_t version = base + 1 + c;
    {
      MutexLock lock(&mu_);
      rollout_.version = version;
      rollout_.failure.clear();
    }
    rec.version = version;
    ok = RolloutVersion(current.get(), *step, chunks[c], base + c, version, dead);
    if (!ok) break;
    MutexLock lock(&mu_);
    version_ = version;
    map_ = step;
    aggregator_.SetMap(version_, map_);
    for (auto& [id, w] : workers_) {
      if (!w.dead) w.applied_version = version_;
    }
    if (absl::Status st = SaveState(); !st.ok()) {
      rec.reason = absl::StrCat(rec.reason, "; ", st.message());
    }
    current = step;
    ++committed_chunks;
  }
  MutexLock lock(&mu_);
  rollout_active_ = false;
  if (committed_chunks > 0) last_rebalance_ = options_.now();
  if (chunks.size() > 1) {
    rec.reason = absl::StrCat(rec.reason, "; ", committed_chunks, " of ", chunks.size(),
                              " rollouts of <= ", per_rollout, " layers committed");
  }
  if (ok) {
    rec.result = "committed";
    metrics_->experts_moved.Increment(static_cast<double>(rec.experts_moved));
  } else {
    rec.result = "aborted";
    rec.reason = absl::StrCat(rec.reason, ": ", rollout_.failure);
  }
  Record(rec);
  UpdateGauges();
  return rec;
}

bool Controller::RolloutVersion(const PlacementMap* base_map, const PlacementMap& next,
                                const std::vector<int>& layers, uint64_t base, uint64_t version,
                                const std::vector<int>& dead) {
  v1::PlacementUpdate prepare;
  prepare.set_phase(v1::PlacementUpdate::PREPARE);
  prepare.set_version(version);
  prepare.set_base_version(base);
  FillPlacement(next, layers, std::set<int>(dead.begin(), dead.end()), version,
                prepare.mutable_placement(), base_map);
  const bool ok = RunPhase(prepare);
  if (ok) {
    v1::PlacementUpdate commit;
    commit.set_phase(v1::PlacementUpdate::COMMIT);
    commit.set_version(version);
    // The step boundary: workers switch at their first step >= this (0: the next one).
    commit.set_switch_step(0);
    // Workers that fail to confirm the commit are marked dead by RunPhase and resync later.
    RunPhase(commit);
  } else {
    v1::PlacementUpdate abort;
    abort.set_phase(v1::PlacementUpdate::ABORT);
    abort.set_version(version);
    std::vector<std::shared_ptr<UpdateSink>> sinks;
    {
      MutexLock lock(&mu_);
      for (auto& [id, w] : workers_) {
        if (w.sink != nullptr) sinks.push_back(w.sink);
      }
    }
    for (auto& s : sinks) s->Send(abort);
  }
  return ok;
}

void Controller::SetPolicy(const ControllerPolicy& policy) {
  MutexLock lock(&mu_);
  policy_ = policy;
}

ControllerPolicy Controller::policy() const {
  MutexLock lock(&mu_);
  return policy_;
}

absl::Status Controller::SetRankDead(int rank, bool dead) {
  if (rank < 0 || rank >= layout_.ep_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", rank, " is out of range [0, ", layout_.ep_size(), ")"));
  }
  MutexLock lock(&mu_);
  if (dead) {
    dead_ranks_.insert(rank);
  } else {
    dead_ranks_.erase(rank);
  }
  return SaveState();
}

uint64_t Controller::version() const {
  MutexLock lock(&mu_);
  return version_;
}

std::shared_ptr<const PlacementMap> Controller::map() const {
  MutexLock lock(&mu_);
  return map_;
}

v1::Placement Controller::CurrentPlacement() const {
  MutexLock lock(&mu_);
  v1::Placement p;
  FillPlacement(*map_, {}, dead_ranks_, version_, &p);
  return p;
}

v1::GetStatusResponse Controller::Status() const {
  MutexLock lock(&mu_);
  v1::GetStatusResponse s;
  s.set_version(version_);
  v1::LayoutFingerprint* f = s.mutable_layout();
  f->set_num_logical(layout_.num_logical());
  f->set_num_redundant(layout_.num_redundant());
  f->set_ep_size(layout_.ep_size());
  f->set_num_shared(layout_.num_shared());
  f->set_num_layers(options_.num_layers);
  f->set_num_nodes(layout_.num_nodes());
  f->set_bytes_per_expert(options_.bytes_per_expert);
  for (const auto& [id, w] : workers_) {
    v1::WorkerStatus* ws = s.add_workers();
    ws->set_worker_id(id);
    for (int r : w.ranks) ws->add_ranks(r);
    ws->set_node(w.node);
    ws->set_state(w.dead ? "dead" : "live");
    ws->set_applied_version(w.applied_version);
    ws->set_last_report_unix_ms(absl::ToUnixMillis(w.last_report));
  }
  const auto gpu = aggregator_.GpuLoad(options_.now());
  double sum = 0;
  for (const auto& layer : gpu) {
    const double b = MeasureLayer(layer).balancedness;
    s.add_balancedness_per_layer(b);
    sum += b;
    for (double x : layer) s.add_gpu_load(x);
  }
  for (const auto& layer : map_->ReplicaCounts()) {
    for (int32_t c : layer) s.add_replica_count(c);
  }
  s.set_balancedness(gpu.empty() ? 1.0 : sum / gpu.size());
  s.set_predicted_balancedness(predicted_);
  std::vector<RebalanceRecord> shown = recent_;
  if (last_skip_.has_value()) {
    auto at = std::upper_bound(
        shown.begin(), shown.end(), *last_skip_,
        [](const RebalanceRecord& a, const RebalanceRecord& b) { return a.time < b.time; });
    shown.insert(at, *last_skip_);
  }
  for (const RebalanceRecord& r : shown) {
    v1::RebalanceRecord* pr = s.add_recent();
    pr->set_version(r.version);
    pr->set_result(r.result);
    pr->set_reason(r.reason);
    pr->set_unix_ms(absl::ToUnixMillis(r.time));
    pr->set_predicted_balancedness(r.predicted_balancedness);
    pr->set_balancedness_before(r.balancedness_before);
    pr->set_experts_moved(r.experts_moved);
    pr->set_bytes_moved(static_cast<int64_t>(r.bytes_moved));
    pr->set_plan_seconds(r.plan_seconds);
  }
  v1::Policy* p = s.mutable_policy();
  p->set_trigger_balancedness(policy_.trigger_balancedness);
  p->set_min_balancedness_gain(policy_.min_balancedness_gain);
  p->set_hysteresis(policy_.hysteresis);
  p->set_min_interval_ms(static_cast<int32_t>(absl::ToInt64Milliseconds(policy_.min_interval)));
  p->set_max_moves_per_rebalance(static_cast<int32_t>(policy_.max_moves));
  p->set_layers_per_rollout_step(policy_.layers_per_rollout);
  p->set_algorithm(policy_.algorithm);
  p->set_paused(policy_.paused);
  for (int r : dead_ranks_) s.add_dead_ranks(r);
  s.set_rollout_in_progress(rollout_active_);
  return s;
}

}  // namespace eplb
